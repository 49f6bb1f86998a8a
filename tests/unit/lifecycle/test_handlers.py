"""The lifecycle RPC handlers are thin: requests map to service calls, results to responses."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any, cast

from agent.ctl.container_spec import container_spec, exec_process
from agent.rpc.handlers.containers import ContainerHandlers, cgroup_stats_to_pb
from agent.rpc.pb import agent_pb2, oci_pb2
from agent.services import Services
from agent.services.containers import CreateContainer
from agent.services.sandbox import CreateSandbox, KernelModule
from agent.storage import Storage
from oci.cgroups.stats import (
    BlkioStats,
    BlkioStatsEntry,
    CgroupStats,
    CpuStats,
    CpuUsage,
    HugetlbStats,
    MemoryData,
    MemoryStats,
    PidsStats,
    ThrottlingData,
)


class Recorder:
    def __init__(self, result: Any = None) -> None:
        self.calls: list[tuple[str, tuple[Any, ...], dict[str, Any]]] = []
        self.result = result

    def __getattr__(self, name: str) -> Any:
        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, args, kwargs))
            return self.result

        return call


def handlers(**services: Recorder) -> ContainerHandlers:
    h = ContainerHandlers()
    h.services = cast(Services, SimpleNamespace(**services))
    return h


async def test_create_sandbox_maps_every_field() -> None:
    rec = Recorder()
    await handlers(sandbox=rec).CreateSandbox(
        agent_pb2.CreateSandboxRequest(
            hostname="h",
            dns=["nameserver 1.1.1.1"],
            storages=[agent_pb2.Storage(driver="virtio-fs", source="kataShared", mount_point="/m")],
            sandbox_pidns=True,
            sandbox_id="sb",
            guest_hook_path="/hooks",
            kernel_modules=[agent_pb2.KernelModule(name="m", parameters=["a=1"])],
        )
    )
    ((name, (args,), _),) = rec.calls
    assert name == "create"
    assert args == CreateSandbox(
        hostname="h",
        dns=("nameserver 1.1.1.1",),
        storages=(Storage(driver="virtio-fs", source="kataShared", mount_point="/m"),),
        sandbox_pidns=True,
        sandbox_id="sb",
        guest_hook_path="/hooks",
        kernel_modules=(KernelModule("m", ("a=1",)),),
    )


async def test_create_container_converts_spec_and_absent_spec() -> None:
    rec = Recorder()
    h = handlers(containers=rec)
    await h.CreateContainer(
        agent_pb2.CreateContainerRequest(
            container_id="c1", OCI=container_spec("/r", ["sh"]), sandbox_pidns=True
        )
    )
    await h.CreateContainer(agent_pb2.CreateContainerRequest(container_id="c2"))
    first: CreateContainer = rec.calls[0][1][0]
    second: CreateContainer = rec.calls[1][1][0]
    assert first.spec is not None
    assert first.spec.process is not None
    assert first.spec.process.args == ("sh",)
    assert first.sandbox_pidns
    assert second.spec is None


async def test_process_and_stdio_handlers() -> None:
    procs, stdio = Recorder(result=137), Recorder(result=[b"o", b"ut"])
    h = handlers(processes=procs, stdio=stdio)
    await h.ExecProcess(
        agent_pb2.ExecProcessRequest(container_id="c", exec_id="e", process=exec_process(["ls"]))
    )
    assert procs.calls[0][1][2].args == ("ls",)
    await h.SignalProcess(agent_pb2.SignalProcessRequest(container_id="c", exec_id="", signal=9))
    assert procs.calls[1][1] == ("c", "", 9)
    resp = await h.WaitProcess(agent_pb2.WaitProcessRequest(container_id="c", exec_id="e"))
    assert resp.status == 137
    out = await h.ReadStdout(agent_pb2.ReadStreamRequest(container_id="c", exec_id="e", len=5))
    assert out.decode().data == b"out"
    assert stdio.calls[0][1] == ("c", "e", 5)
    stdio.result = 3
    n = await h.WriteStdin(agent_pb2.WriteStreamRequest(container_id="c", exec_id="e", data=b"abc"))
    assert n.len == 3


async def test_update_without_resources_passes_none() -> None:
    rec = Recorder()
    h = handlers(containers=rec)
    await h.UpdateContainer(agent_pb2.UpdateContainerRequest(container_id="c"))
    await h.UpdateContainer(
        agent_pb2.UpdateContainerRequest(
            container_id="c",
            resources=oci_pb2.LinuxResources(Memory=oci_pb2.LinuxMemory(Limit=1 << 20)),
        )
    )
    assert rec.calls[0][1] == ("c", None)
    assert rec.calls[1][1][1].memory.limit == 1 << 20


def test_cgroup_stats_to_pb() -> None:
    stats = CgroupStats(
        cpu_stats=CpuStats(
            cpu_usage=CpuUsage(
                total_usage=10, percpu_usage=(4, 6), usage_in_kernelmode=3, usage_in_usermode=7
            ),
            throttling_data=ThrottlingData(periods=5, throttled_periods=2, throttled_time=99),
        ),
        memory_stats=MemoryStats(
            cache=11,
            usage=MemoryData(usage=100, max_usage=200, failcnt=1, limit=300),
            swap_usage=MemoryData(usage=1),
            kernel_usage=MemoryData(usage=2),
            use_hierarchy=True,
            stats={"rss": 42},
        ),
        pids_stats=PidsStats(current=3, limit=10),
        blkio_stats=BlkioStats(
            io_service_bytes_recursive=(BlkioStatsEntry(major=8, minor=0, op="Read", value=512),)
        ),
        hugetlb_stats={"2MB": HugetlbStats(usage=1, max_usage=2, failcnt=3)},
    )
    pb = cgroup_stats_to_pb(stats)
    assert list(pb.cpu_stats.cpu_usage.percpu_usage) == [4, 6]
    assert pb.cpu_stats.throttling_data.throttled_time == 99
    assert pb.memory_stats.usage.limit == 300
    assert pb.memory_stats.swap_usage.usage == 1
    assert pb.memory_stats.use_hierarchy
    assert dict(pb.memory_stats.stats) == {"rss": 42}
    assert pb.pids_stats.limit == 10
    assert pb.blkio_stats.io_service_bytes_recursive[0].op == "Read"
    assert pb.hugetlb_stats["2MB"].failcnt == 3
