"""cgroup v1 on request (systemd.unified_cgroup_hierarchy=0, as Kata): one hierarchy per
controller under a read-only tmpfs, cpu,cpuacct co-mounted with links."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from tests.vm.guest import console_run

pytestmark = pytest.mark.vm


def test_cgroup_v1_when_asked_for(boot_guest: Callable[..., Any]) -> None:
    vm = boot_guest("systemd.unified_cgroup_hierarchy=0")
    try:
        out = console_run(
            vm,
            "grep ' /sys/fs/cgroup' /proc/mounts | cut -d' ' -f2,3 | sort;"
            " readlink /sys/fs/cgroup/cpu; touch /sys/fs/cgroup/x 2>/dev/null || echo ro-ok",
        )
    finally:
        vm.stop()
    assert "/sys/fs/cgroup tmpfs" in out
    assert "/sys/fs/cgroup/memory cgroup" in out
    assert "/sys/fs/cgroup/cpu,cpuacct cgroup" in out
    assert "/sys/fs/cgroup/devices cgroup" in out
    assert "cpu,cpuacct" in out.split("/sys/fs/cgroup/cpu,cpuacct cgroup")[1]
    assert "ro-ok" in out
    assert "cgroup2" not in out
