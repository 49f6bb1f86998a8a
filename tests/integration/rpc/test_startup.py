"""Start-up's early listener against the full configuration: phase 0 binds the address BootArgs
read early; when the full parse names another one, that listener is given up (socket file
included) and the agent serves where the configuration says."""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.agent import AgentProcess, check_once

Factory = Callable[..., AgentProcess]


@pytest.fixture
def short_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="kags-", dir="/tmp") as d:
        yield Path(d)


def test_the_configured_address_wins_over_the_early_one(
    agent_factory: Factory, short_dir: Path
) -> None:
    early, final = short_dir / "early.sock", short_dir / "final.sock"
    # argparse takes the abbreviated --server; the early read only knows --server-addr, so phase 0
    # binds the environment's address and the configuration then names another.
    agent = agent_factory(
        bare=True,
        address=f"unix://{final}",
        env={"KATA_AGENT_SERVER_ADDR": f"unix://{early}"},
        args=[
            "--server",
            f"unix://{final}",
            "--run-dir",
            str(short_dir / "run"),
            "--sandbox-ns-dir",
            str(short_dir / "ns"),
        ],
    )
    assert check_once(str(final))
    assert not early.exists()
    assert agent.alive()
