"""pyroute2 (a heavy import: docs/performance.md) must not be imported when the agent starts,
only on the first network call: importing the composition root and everything network must leave
it out."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_agent_start_up_does_not_import_pyroute2() -> None:
    code = (
        "import sys\n"
        "import agent.app, agent.rpc.agent_servicer, agent.services.network\n"
        "import agent.network.netlink, agent.network.interfaces, agent.network.routes\n"
        "from agent.network.netlink import Netlink\n"
        "Netlink()\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'pyroute2'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"
