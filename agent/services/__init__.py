"""Use-case layer: one service class per area, all built in `agent.app` (the composition root).

RPC handler mixins (`agent.rpc.handlers.*`) reach their service through `Services`; services never
see protobuf types (conversion lives in `agent.rpc.convert*`).

Each area adds its field here when its service exists. Fields are filled by
`agent.app.build_services`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.services.containers import ContainerService
    from agent.services.guest import GuestService
    from agent.services.hardware import HardwareService
    from agent.services.network import NetworkService
    from agent.services.processes import ProcessService
    from agent.services.sandbox import Lifecycle, SandboxService
    from agent.services.stdio import StdioService


@dataclass(eq=False, kw_only=True)
class Services:
    config: AgentConfig
    hardware: HardwareService = field(init=False)
    network: NetworkService = field(init=False)
    guest: GuestService = field(init=False)
    lifecycle: Lifecycle = field(init=False)
    sandbox: SandboxService = field(init=False)
    containers: ContainerService = field(init=False)
    processes: ProcessService = field(init=False)
    stdio: StdioService = field(init=False)
