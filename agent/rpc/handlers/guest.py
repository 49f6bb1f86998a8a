"""grpc.AgentService guest-wide methods: convert, call ``services.guest``, convert."""

from __future__ import annotations

from google.protobuf import empty_pb2

from agent.rpc.handlers import HandlerBase
from agent.rpc.pb import agent_pb2
from agent.services.guest import CopyFileArgs

_EMPTY = empty_pb2.Empty()


class GuestHandlers(HandlerBase):
    async def GetGuestDetails(
        self, req: agent_pb2.GuestDetailsRequest
    ) -> agent_pb2.GuestDetailsResponse:
        details = self.services.guest.guest_details(
            mem_block_size=req.mem_block_size, mem_hotplug_probe=req.mem_hotplug_probe
        )
        a = details.agent
        return agent_pb2.GuestDetailsResponse(
            mem_block_size_bytes=details.mem_block_size_bytes,
            support_mem_hotplug_probe=details.support_mem_hotplug_probe,
            agent_details=agent_pb2.AgentDetails(
                version=a.version,
                init_daemon=a.init_daemon,
                device_handlers=a.device_handlers,
                storage_handlers=a.storage_handlers,
                supports_seccomp=a.supports_seccomp,
                extra_features=a.extra_features,
            ),
        )

    async def SetGuestDateTime(self, req: agent_pb2.SetGuestDateTimeRequest) -> empty_pb2.Empty:
        self.services.guest.set_date_time(req.Sec, req.Usec)
        return _EMPTY

    async def ReseedRandomDev(self, req: agent_pb2.ReseedRandomDevRequest) -> empty_pb2.Empty:
        await self.services.guest.reseed_random(req.data)
        return _EMPTY

    async def CopyFile(self, req: agent_pb2.CopyFileRequest) -> empty_pb2.Empty:
        await self.services.guest.copy_file(
            CopyFileArgs(
                path=req.path,
                file_size=req.file_size,
                file_mode=req.file_mode,
                dir_mode=req.dir_mode,
                uid=req.uid,
                gid=req.gid,
                offset=req.offset,
                data=req.data,
            )
        )
        return _EMPTY

    async def GetMetrics(self, req: agent_pb2.GetMetricsRequest) -> agent_pb2.Metrics:
        return agent_pb2.Metrics(metrics=await self.services.guest.metrics_text())
