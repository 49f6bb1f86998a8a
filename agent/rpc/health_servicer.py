"""grpc.Health: Check (always SERVING, the shim's liveness probe) and Version."""

from __future__ import annotations

from agent import API_VERSION, __version__
from agent.rpc.pb import health_pb2

_SERVING = health_pb2.HealthCheckResponse(status=health_pb2.HealthCheckResponse.SERVING)


class HealthServicer:
    async def Check(self, req: health_pb2.CheckRequest) -> health_pb2.HealthCheckResponse:
        return _SERVING

    async def Version(self, req: health_pb2.CheckRequest) -> health_pb2.VersionCheckResponse:
        return health_pb2.VersionCheckResponse(grpc_version=API_VERSION, agent_version=__version__)
