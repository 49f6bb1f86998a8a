"""grpc.AgentService sandbox, container, process and stdio methods: convert, call, convert.

The services (`agent.services.{sandbox,containers,processes,stdio}`) do the work; OCI messages are
converted by `agent.rpc.convert_oci`, storages and devices by `agent.rpc.handlers.storage`.
UpdateEphemeralMounts and RemoveStaleVirtiofsShareMounts live with the storage handlers.
"""

from __future__ import annotations

from google.protobuf import empty_pb2

from agent.rpc.convert_oci import process_from_pb, resources_from_pb, spec_from_pb
from agent.rpc.encoded import PreEncoded, bytes_field
from agent.rpc.handlers import HandlerBase
from agent.rpc.handlers.storage import device_from_pb, storage_from_pb
from agent.rpc.pb import agent_pb2
from agent.services.containers import CreateContainer
from agent.services.sandbox import CreateSandbox, KernelModule
from oci.cgroups.stats import BlkioStatsEntry, CgroupStats, MemoryData

_EMPTY = empty_pb2.Empty
_READ_RESPONSE = agent_pb2.ReadStreamResponse
_DATA_FIELD = _READ_RESPONSE.DESCRIPTOR.fields_by_name["data"].number


class ContainerHandlers(HandlerBase):
    # -- sandbox ---------------------------------------------------------------------------------

    async def CreateSandbox(self, req: agent_pb2.CreateSandboxRequest) -> empty_pb2.Empty:
        await self.services.sandbox.create(
            CreateSandbox(
                hostname=req.hostname,
                dns=tuple(req.dns),
                storages=tuple(storage_from_pb(s) for s in req.storages),
                sandbox_pidns=req.sandbox_pidns,
                sandbox_id=req.sandbox_id,
                guest_hook_path=req.guest_hook_path,
                kernel_modules=tuple(
                    KernelModule(m.name, tuple(m.parameters)) for m in req.kernel_modules
                ),
            )
        )
        return _EMPTY()

    async def DestroySandbox(self, req: agent_pb2.DestroySandboxRequest) -> empty_pb2.Empty:
        await self.services.sandbox.destroy()
        return _EMPTY()

    async def GetOOMEvent(self, req: agent_pb2.GetOOMEventRequest) -> agent_pb2.OOMEvent:
        return agent_pb2.OOMEvent(container_id=await self.services.sandbox.get_oom_event())

    # -- containers ------------------------------------------------------------------------------

    async def CreateContainer(self, req: agent_pb2.CreateContainerRequest) -> empty_pb2.Empty:
        await self.services.containers.create(
            CreateContainer(
                container_id=req.container_id,
                spec=spec_from_pb(req.OCI) if req.HasField("OCI") else None,
                storages=tuple(storage_from_pb(s) for s in req.storages),
                devices=tuple(device_from_pb(d) for d in req.devices),
                sandbox_pidns=req.sandbox_pidns,
            )
        )
        return _EMPTY()

    async def StartContainer(self, req: agent_pb2.StartContainerRequest) -> empty_pb2.Empty:
        await self.services.containers.start(req.container_id)
        return _EMPTY()

    async def RemoveContainer(self, req: agent_pb2.RemoveContainerRequest) -> empty_pb2.Empty:
        await self.services.containers.remove(req.container_id, timeout=req.timeout)
        return _EMPTY()

    async def UpdateContainer(self, req: agent_pb2.UpdateContainerRequest) -> empty_pb2.Empty:
        resources = resources_from_pb(req.resources) if req.HasField("resources") else None
        await self.services.containers.update(req.container_id, resources)
        return _EMPTY()

    async def StatsContainer(
        self, req: agent_pb2.StatsContainerRequest
    ) -> agent_pb2.StatsContainerResponse:
        stats, interfaces = await self.services.containers.stats(req.container_id)
        return agent_pb2.StatsContainerResponse(
            cgroup_stats=cgroup_stats_to_pb(stats),
            network_stats=[
                agent_pb2.NetworkStats(
                    name=i.name,
                    rx_bytes=i.rx_bytes,
                    rx_packets=i.rx_packets,
                    rx_errors=i.rx_errors,
                    rx_dropped=i.rx_dropped,
                    tx_bytes=i.tx_bytes,
                    tx_packets=i.tx_packets,
                    tx_errors=i.tx_errors,
                    tx_dropped=i.tx_dropped,
                )
                for i in interfaces
            ],
        )

    async def PauseContainer(self, req: agent_pb2.PauseContainerRequest) -> empty_pb2.Empty:
        await self.services.containers.pause(req.container_id)
        return _EMPTY()

    async def ResumeContainer(self, req: agent_pb2.ResumeContainerRequest) -> empty_pb2.Empty:
        await self.services.containers.resume(req.container_id)
        return _EMPTY()

    # -- processes -------------------------------------------------------------------------------

    async def ExecProcess(self, req: agent_pb2.ExecProcessRequest) -> empty_pb2.Empty:
        process = process_from_pb(req.process) if req.HasField("process") else None
        await self.services.processes.exec(req.container_id, req.exec_id, process)
        return _EMPTY()

    async def SignalProcess(self, req: agent_pb2.SignalProcessRequest) -> empty_pb2.Empty:
        await self.services.processes.signal(req.container_id, req.exec_id, req.signal)
        return _EMPTY()

    async def WaitProcess(self, req: agent_pb2.WaitProcessRequest) -> agent_pb2.WaitProcessResponse:
        status = await self.services.processes.wait(req.container_id, req.exec_id)
        return agent_pb2.WaitProcessResponse(status=status)

    # -- stdio -----------------------------------------------------------------------------------

    async def WriteStdin(self, req: agent_pb2.WriteStreamRequest) -> agent_pb2.WriteStreamResponse:
        n = await self.services.stdio.write_stdin(req.container_id, req.exec_id, req.data)
        return agent_pb2.WriteStreamResponse(len=n)

    # Output is returned pre-encoded (agent.rpc.encoded): up to 2 MiB per reply, never copied.
    async def ReadStdout(
        self, req: agent_pb2.ReadStreamRequest
    ) -> PreEncoded[agent_pb2.ReadStreamResponse]:
        parts = await self.services.stdio.read_stdout_parts(req.container_id, req.exec_id, req.len)
        return bytes_field(agent_pb2.ReadStreamResponse, _DATA_FIELD, *parts)

    async def ReadStderr(
        self, req: agent_pb2.ReadStreamRequest
    ) -> PreEncoded[agent_pb2.ReadStreamResponse]:
        parts = await self.services.stdio.read_stderr_parts(req.container_id, req.exec_id, req.len)
        return bytes_field(agent_pb2.ReadStreamResponse, _DATA_FIELD, *parts)

    # Synchronous variants (agent.rpc.dispatch.NowHandler): output already there is answered
    # without a task; None (nothing read) when the call has to wait.
    def try_ReadStdout(
        self, req: agent_pb2.ReadStreamRequest
    ) -> PreEncoded[agent_pb2.ReadStreamResponse] | None:
        stdio = self.services.stdio
        parts = stdio.try_read_stdout_parts(req.container_id, req.exec_id, req.len)
        return None if parts is None else bytes_field(_READ_RESPONSE, _DATA_FIELD, *parts)

    def try_ReadStderr(
        self, req: agent_pb2.ReadStreamRequest
    ) -> PreEncoded[agent_pb2.ReadStreamResponse] | None:
        stdio = self.services.stdio
        parts = stdio.try_read_stderr_parts(req.container_id, req.exec_id, req.len)
        return None if parts is None else bytes_field(_READ_RESPONSE, _DATA_FIELD, *parts)

    async def CloseStdin(self, req: agent_pb2.CloseStdinRequest) -> empty_pb2.Empty:
        self.services.stdio.close_stdin(req.container_id, req.exec_id)
        return _EMPTY()

    async def TtyWinResize(self, req: agent_pb2.TtyWinResizeRequest) -> empty_pb2.Empty:
        self.services.stdio.tty_resize(req.container_id, req.exec_id, req.row, req.column)
        return _EMPTY()


def _blkio(entries: tuple[BlkioStatsEntry, ...]) -> list[agent_pb2.BlkioStatsEntry]:
    return [
        agent_pb2.BlkioStatsEntry(major=e.major, minor=e.minor, op=e.op, value=e.value)
        for e in entries
    ]


def cgroup_stats_to_pb(stats: CgroupStats) -> agent_pb2.CgroupStats:
    cpu = stats.cpu_stats
    mem = stats.memory_stats
    blk = stats.blkio_stats

    def memory_data(d: MemoryData) -> agent_pb2.MemoryData:
        return agent_pb2.MemoryData(
            usage=d.usage, max_usage=d.max_usage, failcnt=d.failcnt, limit=d.limit
        )

    return agent_pb2.CgroupStats(
        cpu_stats=agent_pb2.CpuStats(
            cpu_usage=agent_pb2.CpuUsage(
                total_usage=cpu.cpu_usage.total_usage,
                percpu_usage=list(cpu.cpu_usage.percpu_usage),
                usage_in_kernelmode=cpu.cpu_usage.usage_in_kernelmode,
                usage_in_usermode=cpu.cpu_usage.usage_in_usermode,
            ),
            throttling_data=agent_pb2.ThrottlingData(
                periods=cpu.throttling_data.periods,
                throttled_periods=cpu.throttling_data.throttled_periods,
                throttled_time=cpu.throttling_data.throttled_time,
            ),
        ),
        memory_stats=agent_pb2.MemoryStats(
            cache=mem.cache,
            usage=memory_data(mem.usage),
            swap_usage=memory_data(mem.swap_usage),
            kernel_usage=memory_data(mem.kernel_usage),
            use_hierarchy=mem.use_hierarchy,
            stats=dict(mem.stats),
        ),
        pids_stats=agent_pb2.PidsStats(
            current=stats.pids_stats.current, limit=stats.pids_stats.limit
        ),
        blkio_stats=agent_pb2.BlkioStats(
            io_service_bytes_recursive=_blkio(blk.io_service_bytes_recursive),
            io_serviced_recursive=_blkio(blk.io_serviced_recursive),
            io_queued_recursive=_blkio(blk.io_queued_recursive),
            io_service_time_recursive=_blkio(blk.io_service_time_recursive),
            io_wait_time_recursive=_blkio(blk.io_wait_time_recursive),
            io_merged_recursive=_blkio(blk.io_merged_recursive),
            io_time_recursive=_blkio(blk.io_time_recursive),
            sectors_recursive=_blkio(blk.sectors_recursive),
        ),
        hugetlb_stats={
            size: agent_pb2.HugetlbStats(usage=h.usage, max_usage=h.max_usage, failcnt=h.failcnt)
            for size, h in stats.hugetlb_stats.items()
        },
    )
