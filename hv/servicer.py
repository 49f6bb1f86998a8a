"""hypervisor.Hypervisor on the wire: one short method per RPC over ``hv.service``."""

from __future__ import annotations

from agent import __version__
from agent.rpc.pb import hypervisor_pb2 as pb
from agent.rpc.server import peer_credentials
from hv.service import HypervisorService


class HypervisorServicer:
    def __init__(self, service: HypervisorService) -> None:
        self._service = service

    async def CreateVM(self, req: pb.CreateVMRequest) -> pb.CreateVMResponse:
        caller = peer_credentials.get()
        path = self._service.create_vm(
            req.id,
            dict(req.annotations),
            req.networkNamespacePath,
            caller.pid if caller is not None else None,
        )
        return pb.CreateVMResponse(agentSocketPath=str(path))

    async def StartVM(self, req: pb.StartVMRequest) -> pb.StartVMResponse:
        await self._service.start_vm(req.id)
        return pb.StartVMResponse()

    async def StopVM(self, req: pb.StopVMRequest) -> pb.StopVMResponse:
        await self._service.stop_vm(req.id)
        return pb.StopVMResponse()

    async def Version(self, req: pb.VersionRequest) -> pb.VersionResponse:
        return pb.VersionResponse(version=__version__)
