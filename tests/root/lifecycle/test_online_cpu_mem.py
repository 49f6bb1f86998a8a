"""OnlineCPUMem through a real agent on this host's real CPUs (the VM tier hot-plugs one).

Only requests that leave the host as it is are sent: ``nb_cpus`` up to the CPUs already online
(nothing to online: the call returns at once) and more than the host can ever have (refused at
once), always ``cpu_only`` (the agent would otherwise online the host's offline memory blocks).
The containers' cpusets are re-applied either way: to every online CPU, or to their own list.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.rpc.pb import agent_pb2
from agent.rpc.status import Code, RpcError
from agent.services.hardware import cpu_count
from tests.root.lifecycle.conftest import CGROUP_ROOT, Pod

CPU = Path("/sys/devices/system/cpu")


def host_cpus() -> tuple[int, int]:
    """(online, possible) CPU counts; skips unless every possible CPU is online."""
    online = cpu_count((CPU / "online").read_text())
    possible = cpu_count((CPU / "possible").read_text())
    if online != possible:
        pytest.skip("this host has offline CPUs: OnlineCPUMem would online them")
    return online, possible


async def test_all_cpus_online_returns_at_once_and_reapplies_cpusets(pod: Pod) -> None:
    online, possible = host_cpus()
    await pod.create("c1", ["sleep", "1000"])
    spec = pod.spec("c2", ["sleep", "1000"])
    spec.Linux.Resources.CPU.Cpus = "0"
    await pod.a.CreateContainer(
        agent_pb2.CreateContainerRequest(container_id="c2", exec_id="c2", OCI=spec), timeout=60
    )
    pod.created.append("c2")
    for nb in range(1, online + 1):
        await pod.a.OnlineCPUMem(agent_pb2.OnlineCPUMemRequest(nb_cpus=nb, cpu_only=True))
    assert not [r for r in pod.agent.logs() if r.get("msg") == "CPUs onlined"]
    cpuset = CGROUP_ROOT / "cpuset"
    if (cpuset / "cpuset.cpus").is_file():  # v1: the re-applied lists are visible
        everything = (cpuset / "cpuset.cpus").read_text().strip()
        assert (cpuset / pod.cgroup_parent / "c1" / "cpuset.cpus").read_text().strip() == everything
        assert (cpuset / pod.cgroup_parent / "c2" / "cpuset.cpus").read_text().strip() == "0"
    with pytest.raises(RpcError) as info:
        await pod.a.OnlineCPUMem(agent_pb2.OnlineCPUMemRequest(nb_cpus=possible + 1, cpu_only=True))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert f"online {possible + 1} CPUs: the guest can have at most {possible}" in str(info.value)
