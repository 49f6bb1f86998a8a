"""grpc.AgentService storage, device and hardware methods: convert, call `services.hardware`.

Also the pb → model conversions of `grpc.Storage` and `grpc.Device`, which the lifecycle
handlers (CreateSandbox, CreateContainer) use too.
"""

from __future__ import annotations

from google.protobuf import empty_pb2

from agent.devices.model import Device
from agent.rpc.handlers import HandlerBase
from agent.rpc.pb import agent_pb2, csi_pb2, types_pb2
from agent.storage.model import FsGroup, FsGroupPolicy, Storage


def storage_from_pb(pb: agent_pb2.Storage) -> Storage:
    fs_group = None
    if pb.HasField("fs_group"):
        policy = (
            FsGroupPolicy.ON_ROOT_MISMATCH
            if pb.fs_group.group_change_policy == types_pb2.OnRootMismatch
            else FsGroupPolicy.ALWAYS
        )
        fs_group = FsGroup(pb.fs_group.group_id, policy)
    return Storage(
        driver=pb.driver,
        driver_options=tuple(pb.driver_options),
        source=pb.source,
        fstype=pb.fstype,
        options=tuple(pb.options),
        mount_point=pb.mount_point,
        fs_group=fs_group,
        shared=pb.shared,
    )


def device_from_pb(pb: agent_pb2.Device) -> Device:
    return Device(
        id=pb.id,
        type=pb.type,
        vm_path=pb.vm_path,
        container_path=pb.container_path,
        options=tuple(pb.options),
    )


class StorageHandlers(HandlerBase):
    async def OnlineCPUMem(self, req: agent_pb2.OnlineCPUMemRequest) -> empty_pb2.Empty:
        await self.services.hardware.online_cpu_mem(req.nb_cpus, req.cpu_only)
        return empty_pb2.Empty()

    async def MemAgentMemcgSet(self, req: agent_pb2.MemAgentMemcgConfig) -> empty_pb2.Empty:
        await self.services.hardware.mem_agent_configure()
        return empty_pb2.Empty()

    async def MemAgentCompactSet(self, req: agent_pb2.MemAgentCompactConfig) -> empty_pb2.Empty:
        await self.services.hardware.mem_agent_configure()
        return empty_pb2.Empty()

    async def MemHotplugByProbe(self, req: agent_pb2.MemHotplugByProbeRequest) -> empty_pb2.Empty:
        await self.services.hardware.mem_hotplug_by_probe(list(req.memHotplugProbeAddr))
        return empty_pb2.Empty()

    async def AddSwap(self, req: agent_pb2.AddSwapRequest) -> empty_pb2.Empty:
        await self.services.hardware.add_swap(list(req.PCIPath))
        return empty_pb2.Empty()

    async def AddSwapPath(self, req: agent_pb2.AddSwapPathRequest) -> empty_pb2.Empty:
        await self.services.hardware.add_swap_path(req.path)
        return empty_pb2.Empty()

    async def GetVolumeStats(
        self, req: agent_pb2.VolumeStatsRequest
    ) -> csi_pb2.VolumeStatsResponse:
        st = await self.services.hardware.volume_stats(req.volume_guest_path)
        return csi_pb2.VolumeStatsResponse(
            usage=[
                csi_pb2.VolumeUsage(
                    available=st.bytes.available,
                    total=st.bytes.total,
                    used=st.bytes.used,
                    unit=csi_pb2.VolumeUsage.BYTES,
                ),
                csi_pb2.VolumeUsage(
                    available=st.inodes.available,
                    total=st.inodes.total,
                    used=st.inodes.used,
                    unit=csi_pb2.VolumeUsage.INODES,
                ),
            ],
            volume_condition=csi_pb2.VolumeCondition(abnormal=False, message="OK"),
        )

    async def ResizeVolume(self, req: agent_pb2.ResizeVolumeRequest) -> empty_pb2.Empty:
        await self.services.hardware.resize_volume(req.volume_guest_path, req.size)
        return empty_pb2.Empty()

    async def UpdateEphemeralMounts(
        self, req: agent_pb2.UpdateEphemeralMountsRequest
    ) -> empty_pb2.Empty:
        storages = [storage_from_pb(s) for s in req.storages]
        await self.services.hardware.update_ephemeral_mounts(storages)
        return empty_pb2.Empty()

    async def RemoveStaleVirtiofsShareMounts(
        self, req: agent_pb2.RemoveStaleVirtiofsShareMountsRequest
    ) -> empty_pb2.Empty:
        await self.services.hardware.remove_stale_virtiofs_share_mounts()
        return empty_pb2.Empty()
