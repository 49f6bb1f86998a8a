"""Composition root: one object per area, built from the AgentConfig; the only module that knows
which implementations are real.

``agent.boot.phase2`` calls ``build_services`` and ``build_servicers`` once phase 1 answers Check
(start-up, in order: ``agent.boot``). Each area adds its line to ``build_services``.
"""

from __future__ import annotations

from agent import spawn
from agent.config import AgentConfig
from agent.devices.lookup import DeviceLookup
from agent.devices.uevent import UeventListener
from agent.reaper import default_reaper
from agent.rpc.health_servicer import HealthServicer
from agent.rpc.lazy_servicer import LazyAgentServicer
from agent.services import Services


def build_services(config: AgentConfig) -> Services:
    """One service object per area; each area adds its line here.

    Only the uevent listener and the device lookup are built now (the listener must run from
    start-up). Every area's service is built when its first RPC reads it (``Services.lazy``; the
    RPC first imports the listed modules in a worker thread, see ``agent.rpc.lazy_servicer``), so
    an idle agent does not hold the modules of areas nobody called (idle RSS, ``bench/rpc.py``):
    the imports inside the builders below are those areas'."""
    services = Services(config=config)
    services.uevents = UeventListener(hotplug_timeout=config.timeouts.hotplug)
    services.lookup = DeviceLookup(services.uevents)

    def hardware() -> None:  # storages, devices, hot-plug, volumes
        from agent.services.hardware import HardwareService
        from oci.syscalls.linux import LinuxSyscalls

        services.hardware = HardwareService.build(
            run_dir=config.paths.run_dir,
            hotplug_timeout=config.timeouts.hotplug,
            syscalls=LinuxSyscalls(),
            run=spawn.run,
            uevents=services.uevents,
            lookup=services.lookup,
        )

    hardware_modules = ("agent.services.hardware",)
    services.lazy(("hardware",), hardware_modules, hardware)

    def lifecycle() -> None:  # starts the engine's spawner child: runs on the loop
        from agent.services.sandbox import build_lifecycle

        services.lifecycle = lc = build_lifecycle(
            config,
            storage=services.hardware.storage,
            devices=services.hardware.devices,
            spawner=spawn.Spawner(default_reaper()),
        )
        services.sandbox, services.containers = lc.sandbox, lc.containers
        services.hardware.set_cpuset_updater(lc.containers.refresh_cpusets)
        services.processes, services.stdio = lc.processes, lc.stdio
        if services.shutdown_requested is not None:  # DestroySandbox ends the agent
            lc.sandbox.shutdown_requested = services.shutdown_requested

    services.lazy(
        ("lifecycle", "sandbox", "containers", "processes", "stdio"),
        (*hardware_modules, "agent.services.sandbox"),
        lifecycle,
    )

    def network() -> None:
        from agent.services.network import NetworkPaths, NetworkService

        services.network = NetworkService(
            hotplug_timeout=config.timeouts.hotplug,
            paths=NetworkPaths(run_dir=str(config.paths.run_dir)),
            nic_by_pci_path=services.lookup.net_by_pci_path,
        )

    services.lazy(("network",), ("agent.services.network",), network)

    def guest() -> None:
        from agent.services.guest import GuestService

        services.guest = GuestService(
            config,
            storage_handlers=services.hardware.storage.driver_names,
            device_handlers=services.hardware.devices.types,
        )

    services.lazy(("guest",), (*hardware_modules, "agent.services.guest"), guest)
    return services


def build_servicers(services: Services) -> dict[str, object]:
    return {"grpc.AgentService": LazyAgentServicer(services), "grpc.Health": HealthServicer()}
