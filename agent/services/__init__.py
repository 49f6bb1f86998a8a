"""Use-case layer: one service class per area, all built in `agent.app` (the composition root).

RPC handler mixins (`agent.rpc.handlers.*`) reach their service through `Services`; services never
see protobuf types (conversion lives in `agent.rpc.convert*`).

Each area adds its field here when its service exists. Fields are filled by
`agent.app.build_services`, either directly or lazily: `lazy(fields, modules, build)` registers a
builder that runs (on the event loop) the first time one of `fields` is read, so an idle agent
never imports an area nobody called (see `agent.rpc.lazy_servicer`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import asyncio

    from agent.config import AgentConfig
    from agent.devices.lookup import DeviceLookup
    from agent.devices.uevent import UeventListener
    from agent.policy.point import PolicyPoint
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
    # the uevent listener runs from start-up (before any RPC can wait for a device); the
    # lookup answers "which device is at this PCI path / SCSI address" from it
    uevents: UeventListener = field(init=False)
    lookup: DeviceLookup = field(init=False)
    hardware: HardwareService = field(init=False)
    network: NetworkService = field(init=False)
    guest: GuestService = field(init=False)
    lifecycle: Lifecycle = field(init=False)
    sandbox: SandboxService = field(init=False)
    containers: ContainerService = field(init=False)
    processes: ProcessService = field(init=False)
    stdio: StdioService = field(init=False)
    # the agent policy (agent.policy.start): built at start-up with a default policy file, else
    # on the first SetPolicy
    policy: PolicyPoint = field(init=False)
    # set by agent.boot.phase2: the lifecycle's DestroySandbox ends the agent through it
    shutdown_requested: asyncio.Event | None = field(init=False, default=None)
    # field name -> (modules its builder imports, the builder: sets the field and its siblings)
    _lazy: dict[str, tuple[tuple[str, ...], Callable[[], None]]] = field(
        init=False, default_factory=dict, repr=False
    )

    def lazy(
        self, fields: tuple[str, ...], modules: tuple[str, ...], build: Callable[[], None]
    ) -> None:
        """Build ``fields`` with ``build()`` when one of them is first read. ``modules``: what
        ``build`` imports, so a caller can import them off the loop first (``modules_of``)."""
        for name in fields:
            self._lazy[name] = (modules, build)

    def modules_of(self, fields: tuple[str, ...]) -> tuple[str, ...]:
        """The modules the builders of the not-yet-built ``fields`` import."""
        return tuple(
            m
            for name in fields
            if name in self._lazy and name not in self.__dict__
            for m in self._lazy[name][0]
        )

    def built(self, name: str) -> bool:
        return name in self.__dict__

    def __getattr__(self, name: str) -> Any:  # only called for fields not set yet
        lazy = self.__dict__.get("_lazy")
        entry = lazy.get(name) if lazy is not None else None
        if entry is None:
            raise AttributeError(f"Services has no {name!r} (not built)")
        _modules, build = entry
        build()
        for other in [k for k, v in lazy.items() if v[1] is build]:  # type: ignore[union-attr]
            del lazy[other]  # type: ignore[union-attr]
        return self.__dict__[name]
