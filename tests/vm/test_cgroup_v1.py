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


def sandbox_with_rootfs(vm: Any, agent: GuestAgent, name: str, rootfs: str) -> None:
    """CreateSandbox with the VM's share, and a busybox rootfs at ``GUEST_SHARED/<rootfs>``."""
    from tests.support.rootfs import make_busybox_rootfs

    agent.call(
        "CreateSandbox",
        agent_pb2.CreateSandboxRequest(
            hostname=name,
            sandbox_id=f"{name}-{uuid.uuid4().hex[:8]}",
            storages=[shared_storage(vm.share_mode)],
        ),
    )
    make_busybox_rootfs(Path(vm.describe()["shared_dir"]) / rootfs / "rootfs")


def test_cgroup_v1_when_asked_for(boot_guest: Callable[..., Any]) -> None:
    from agent.ctl.container_spec import container_spec

    vm = boot_guest("systemd.unified_cgroup_hierarchy=0")
    agent = GuestAgent(vm.agent_sock)
    try:
        out = console_run(
            vm,
            "grep ' /sys/fs/cgroup' /proc/mounts | cut -d' ' -f2,3 | sort;"
            " readlink /sys/fs/cgroup/cpu; touch /sys/fs/cgroup/x 2>/dev/null || echo ro-ok",
        )
        sandbox_with_rootfs(vm, agent, "v1", "v1c")
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


def test_cpus_brought_back_by_total_widen_v1_cpusets(boot_guest: Callable[..., Any]) -> None:
    """Two vCPUs, one offlined in the guest before the containers start: their v1 cpusets hold
    CPU 0 only. OnlineCPUMem with the total brings it back and re-applies every container's
    cpuset, as the Kata agent does: the unpinned container and its process get both CPUs, the
    container pinned by its spec keeps its CPU."""
    from agent.ctl.container_spec import container_spec
    from agent.rpc.status import Code, RpcError

    vm = boot_guest("systemd.unified_cgroup_hierarchy=0", cpus=2)
    agent = GuestAgent(vm.agent_sock)
    cpuset = "/sys/fs/cgroup/cpuset"
    try:
        offline = console_run(
            vm, "echo 0 > /sys/devices/system/cpu/cpu1/online; cat /sys/devices/system/cpu/online"
        )
        sandbox_with_rootfs(vm, agent, "cpus", "cpus")
        for cid, pin in (("wide", ""), ("pinned", "0")):
            spec = container_spec(f"{GUEST_SHARED}/cpus/rootfs", ["sleep", "100000"])
            if pin:
                spec.Linux.Resources.CPU.Cpus = pin
            agent.call(
                "CreateContainer",
                agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec),
                timeout=180,
            )
            agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=cid))
        show = (
            f"cat {cpuset}/wide/cpuset.cpus {cpuset}/pinned/cpuset.cpus;"
            f" grep Cpus_allowed_list /proc/$(head -n1 {cpuset}/wide/cgroup.procs)/status"
        )
        before = console_run(vm, show)
        agent.call("OnlineCPUMem", agent_pb2.OnlineCPUMemRequest(nb_cpus=2, cpu_only=True))
        after = console_run(vm, f"cat /sys/devices/system/cpu/online; {show}")
        with pytest.raises(RpcError) as info:
            agent.call("OnlineCPUMem", agent_pb2.OnlineCPUMemRequest(nb_cpus=3, cpu_only=True))
    finally:
        agent.close()
        vm.stop()
    assert offline.split()[-1] == "0"
    assert before.split()[-4:] == ["0", "0", "Cpus_allowed_list:", "0"]
    assert after.split()[-5:] == ["0-1", "0-1", "0", "Cpus_allowed_list:", "0-1"]
    assert info.value.code == Code.INVALID_ARGUMENT
