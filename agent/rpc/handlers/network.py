"""grpc.AgentService networking methods: convert, call `services.network`, convert back."""

from __future__ import annotations

from google.protobuf import empty_pb2

from agent.errors import InvalidArgument
from agent.rpc import convert_network as conv
from agent.rpc.handlers import HandlerBase
from agent.rpc.pb import agent_pb2, types_pb2


class NetworkHandlers(HandlerBase):
    async def UpdateInterface(self, req: agent_pb2.UpdateInterfaceRequest) -> types_pb2.Interface:
        if not req.HasField("interface"):
            raise InvalidArgument("UpdateInterface: missing interface")
        wanted = conv.interface_from_pb(req.interface)
        return conv.interface_to_pb(await self.services.network.update_interface(wanted))

    async def UpdateRoutes(self, req: agent_pb2.UpdateRoutesRequest) -> agent_pb2.Routes:
        if not req.HasField("routes"):
            raise InvalidArgument("UpdateRoutes: missing routes")
        wanted = [conv.route_from_pb(r, i) for i, r in enumerate(req.routes.Routes)]
        done = await self.services.network.update_routes(wanted)
        return agent_pb2.Routes(Routes=[conv.route_to_pb(r) for r in done])

    async def ListInterfaces(self, req: agent_pb2.ListInterfacesRequest) -> agent_pb2.Interfaces:
        found = await self.services.network.list_interfaces()
        return agent_pb2.Interfaces(Interfaces=[conv.interface_to_pb(i) for i in found])

    async def ListRoutes(self, req: agent_pb2.ListRoutesRequest) -> agent_pb2.Routes:
        found = await self.services.network.list_routes()
        return agent_pb2.Routes(Routes=[conv.route_to_pb(r) for r in found])

    async def AddARPNeighbors(self, req: agent_pb2.AddARPNeighborsRequest) -> empty_pb2.Empty:
        if not req.HasField("neighbors"):
            raise InvalidArgument("AddARPNeighbors: missing neighbors")
        wanted = [conv.neighbor_from_pb(n, i) for i, n in enumerate(req.neighbors.ARPNeighbors)]
        await self.services.network.add_arp_neighbors(wanted)
        return empty_pb2.Empty()

    async def GetIPTables(self, req: agent_pb2.GetIPTablesRequest) -> agent_pb2.GetIPTablesResponse:
        data = await self.services.network.get_iptables(req.is_ipv6)
        return agent_pb2.GetIPTablesResponse(data=data)

    async def SetIPTables(self, req: agent_pb2.SetIPTablesRequest) -> agent_pb2.SetIPTablesResponse:
        out = await self.services.network.set_iptables(req.is_ipv6, req.data)
        return agent_pb2.SetIPTablesResponse(data=out)
