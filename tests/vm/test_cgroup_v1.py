"""cgroup v1 on request (systemd.unified_cgroup_hierarchy=0, as Kata): one hierarchy per
controller under a read-only tmpfs, cpu,cpuacct co-mounted with links; containers run there."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2
from tests.vm.guest import GUEST_SHARED, GuestAgent, console_run, shared_storage

pytestmark = pytest.mark.vm


def test_cgroup_v1_when_asked_for(boot_guest: Callable[..., Any]) -> None:
    from agent.ctl.container_spec import container_spec
    from tests.support.rootfs import make_busybox_rootfs

    vm = boot_guest("systemd.unified_cgroup_hierarchy=0")
    agent = GuestAgent(vm.agent_sock)
    try:
        out = console_run(
            vm,
            "grep ' /sys/fs/cgroup' /proc/mounts | cut -d' ' -f2,3 | sort;"
            " readlink /sys/fs/cgroup/cpu; touch /sys/fs/cgroup/x 2>/dev/null || echo ro-ok",
        )
        share = Path(vm.describe()["shared_dir"])
        agent.call(
            "CreateSandbox",
            agent_pb2.CreateSandboxRequest(
                hostname="v1",
                sandbox_id=f"v1-{uuid.uuid4().hex[:8]}",
                storages=[shared_storage(vm.share_mode)],
            ),
        )
        make_busybox_rootfs(share / "v1c" / "rootfs")
        spec = container_spec(
            f"{GUEST_SHARED}/v1c/rootfs",
            ["sh", "-c", "cat /proc/self/cgroup | grep -c memory; exit 4"],
            memory_limit=64 << 20,
        )
        agent.call(
            "CreateContainer",
            agent_pb2.CreateContainerRequest(container_id="v1c", exec_id="v1c", OCI=spec),
            timeout=180,
        )
        limit = console_run(vm, "cat /sys/fs/cgroup/memory/v1c/memory.limit_in_bytes")
        agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id="v1c"))
        status = agent.call(
            "WaitProcess", agent_pb2.WaitProcessRequest(container_id="v1c", exec_id="v1c")
        )
    finally:
        agent.close()
        vm.stop()
    assert "/sys/fs/cgroup tmpfs" in out
    assert "/sys/fs/cgroup/memory cgroup" in out
    assert "/sys/fs/cgroup/cpu,cpuacct cgroup" in out
    assert "/sys/fs/cgroup/devices cgroup" in out
    assert "cpu,cpuacct" in out.split("/sys/fs/cgroup/cpu,cpuacct cgroup")[1]
    assert "ro-ok" in out
    assert "cgroup2" not in out
    assert str(64 << 20) in limit
    assert status.status == 4
