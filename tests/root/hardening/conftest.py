"""Helpers of the hardening tests: the renameat2 swapper as a separate process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.root.lifecycle.conftest import (  # noqa: F401 - shared fixtures
    agent_mnt,
    cgroup_parent,
    pod,
    rootfs,
)

REPO = Path(__file__).resolve().parents[3]


@pytest.fixture
def swapper() -> Iterator[Callable[[Path, str, str, float], subprocess.Popen[str]]]:
    """``swapper(dir, a, b, seconds)`` starts a process swapping dir/a and dir/b."""
    started: list[subprocess.Popen[str]] = []

    def start(directory: Path, a: str, b: str, seconds: float) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.swapper", str(directory), a, b, str(seconds)],
            cwd=REPO,
            stdout=subprocess.PIPE,
            text=True,
        )
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.kill()
        proc.wait()


def swaps_done(proc: subprocess.Popen[str]) -> int:
    out, _ = proc.communicate(timeout=60)
    return int(out.strip() or 0)
