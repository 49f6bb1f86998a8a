"""Shared pytest configuration: tier markers by directory, capability probes, common fixtures.

* Tests under ``tests/root/`` get the ``root`` marker, tests under ``tests/vm/`` the ``vm`` marker,
  so nobody has to remember them. A root test is skipped (with the reason) when the process cannot
  unshare a mount namespace — a capability probe, not a uid check.
* ``agent_factory`` / ``agent`` (from ``tests.support.agent``) start a real agent process.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.support.agent"]

TESTS = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        parts = Path(str(item.path)).resolve().relative_to(TESTS).parts
        tier = parts[0] if parts else ""
        if tier == "root":
            item.add_marker(pytest.mark.root)
            if not can_unshare_mount_ns():
                item.add_marker(
                    pytest.mark.skip(reason="needs CAP_SYS_ADMIN: cannot unshare a mount namespace")
                )
        elif tier == "vm":
            item.add_marker(pytest.mark.vm)


@functools.cache
def can_unshare_mount_ns() -> bool:
    """Probe in a child process (the test process never changes its own namespaces)."""
    import subprocess

    try:
        done = subprocess.run(
            ["unshare", "--mount", "true"], capture_output=True, timeout=10, check=False
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def pytest_report_header(config: pytest.Config) -> str:
    return f"kata-agent-py tests; uid={os.getuid()}"
