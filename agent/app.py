"""Composition root: builds every object from the AgentConfig, runs the loop, shuts down in order.

Start-up comes in three phases, so the host's first Health.Check is answered long before the
whole agent is imported (the shim dials and probes Check first):

0. ``run``: logging; bind the listener (unix/vsock) and answer Health.Check with a small
   ``selectors`` loop (``agent.rpc.early``) while a thread imports asyncio, uvloop and the RPC
   server;
1. ``serve``: the asyncio server takes over the listener and the connections accepted so far
   (nothing lost or answered twice), with grpc.Health bound and grpc.AgentService deferred;
2. ``serve``: the AgentService shell is imported in a worker thread (``_preload``), the uevent
   listener started, and AgentService bound; calls that arrived meanwhile proceed. Then the gRPC
   listener and the debug console, when configured. Each AgentService area (lifecycle with the
   OCI engine's spawner, storage/devices, network, guest/metrics) is imported and built on its
   first call (``agent.rpc.lazy_servicer``, ``Services.lazy``), so an idle agent holds only what
   it uses: idle RSS (``bench/rpc.py``) 33.5 -> 24.8 MiB with uvloop here. For the same reason
   asyncio and uvloop are imported without ssl (``agent.aio``) and freed heap pages are given
   back once start-up is done (``_release_free_memory``).

SIGTERM/SIGINT (or DestroySandbox) only set an event; shutdown then closes the listeners
(in-flight calls are cancelled), the services, and the reaper last.

Event loop: uvloop when installed (every transport we use works on it, see agent.rpc.transport);
the default loop when ``--grpc-addr`` is set: grpc.aio ran on both in our measurement (Check over
gRPC p50 ~0.4-0.5 ms either way) but is only documented for asyncio's default loop.

This is the only module below ``agent.cli`` that reads the environment, ``/proc/cmdline`` or a
config file (``load_config``).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import sys
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent import config as agent_config
from agent import log as agent_log
from agent.config import AgentConfig
from agent.services import Services

if TYPE_CHECKING:
    import asyncio

    from agent.rpc.early import Handover
    from agent.rpc.early_serial import SerialHandover

log = logging.getLogger(__name__)


def load_config(
    *,
    config_file: Path | None,
    cmdline_file: Path | None,
    overrides: Mapping[tuple[str, ...], Any],
    env: Mapping[str, str] | None = None,
) -> tuple[AgentConfig, tuple[str, ...]]:
    """Read the sources (kernel command line, environment, TOML file) and merge them."""
    cmdline = None
    if config_file is None and cmdline_file is not None:
        try:
            cmdline = cmdline_file.read_text()
        except OSError:
            cmdline = None
    return agent_config.load(
        cmdline=cmdline,
        env=os.environ if env is None else env,
        read_file=lambda p: p.read_text(),
        config_file=config_file,
        overrides=overrides,
    )


def build_services(config: AgentConfig) -> Services:
    """One service object per area; each area adds its line here.

    Only the uevent listener and the device lookup are built now (the listener must run from
    start-up). Every area's service is built when its first RPC reads it (``Services.lazy``; the
    RPC first imports the listed modules in a worker thread, see ``agent.rpc.lazy_servicer``), so
    an idle agent does not hold the modules of areas nobody called (idle RSS, ``bench/rpc.py``)."""
    from agent import spawn
    from agent.devices.lookup import DeviceLookup
    from agent.devices.uevent import UeventListener

    services = Services(config=config)
    services.uevents = UeventListener(hotplug_timeout=config.timeouts.hotplug)
    services.lookup = DeviceLookup(services.uevents)

    def hardware() -> None:  # storages, devices, hot-plug, volumes
        from agent.services.hardware import HardwareService
        from oci.syscalls import LinuxSyscalls

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
        from agent.reaper import default_reaper
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
    from agent.rpc.health_servicer import HealthServicer
    from agent.rpc.lazy_servicer import LazyAgentServicer

    return {"grpc.AgentService": LazyAgentServicer(services), "grpc.Health": HealthServicer()}


async def serve(
    config: AgentConfig,
    *,
    log_sink: agent_log.LogSink | None = None,
    handover: Handover | SerialHandover | None = None,
) -> int:
    """Run until SIGTERM/SIGINT (or DestroySandbox). Start-up is two-phase: the listener and
    grpc.Health come up first (Check answers within milliseconds), then the AgentService stack is
    imported off the loop and built; AgentService calls arriving meanwhile wait for it."""
    import asyncio

    from agent import spawn
    from agent.reaper import Reaper, install
    from agent.rpc.dispatch import AGENT_SERVICE, HEALTH_SERVICE, Dispatcher
    from agent.rpc.health_servicer import HealthServicer
    from agent.rpc.server import TtrpcServer

    loop = asyncio.get_running_loop()
    spawn.close_inherited_fds_on_exec()
    reaper = Reaper(reap_all=True)
    reaper.start(loop, subreaper=os.getpid() != 1)
    install(reaper, loop)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    dispatcher = Dispatcher({HEALTH_SERVICE: HealthServicer()}, deferred=[AGENT_SERVICE])
    server = TtrpcServer(dispatcher)
    closers: list[Callable[[], Any]] = []
    try:
        if config.log.vport and log_sink is not None:
            closers.append(await _serve_log_port(config.log.vport, log_sink))
        from agent.rpc.early_serial import SerialHandover

        if isinstance(handover, SerialHandover):  # PID 1 opened the serial port (pid1_early)
            await server.listen(config.server.server_addr, serial=handover)
        elif handover is not None:
            await server.listen(config.server.server_addr, sock=handover.listener)
            await server.adopt(handover.connections)
        else:
            await server.listen(config.server.server_addr)
        await asyncio.to_thread(_preload)  # the import-heavy part, while Check already answers

        services = build_services(config)
        await services.uevents.start()  # before any RPC can wait for a device
        closers.append(services.uevents.stop)
        closers.append(partial(_close_lifecycle, services))  # stop the engine's spawner
        services.shutdown_requested = stop  # lifecycle: DestroySandbox ends the agent
        dispatcher.add(AGENT_SERVICE, build_servicers(services)[AGENT_SERVICE])
        # Everything imported and built so far lives as long as the agent: keep it out of the
        # cyclic GC's generations, so collections stay short (tail latency of every call).
        gc.collect()
        gc.freeze()
        _release_free_memory()

        if config.server.grpc_addr:
            from agent.rpc.grpc_server import start_grpc

            closers.append(await start_grpc(config.server.grpc_addr, dispatcher))
        if config.debug_console.enabled:  # image engineer: agent.debug_console
            from agent.console import start_debug_console

            closers.append(await start_debug_console(config.debug_console))
        log.info(
            "announce",
            extra={
                "server_addr": config.server.server_addr,
                "grpc_addr": config.server.grpc_addr,
                "init_daemon": os.getpid() == 1,
                "loop": type(loop).__module__,
            },
        )
        await stop.wait()
        log.info("shutting down")
    finally:
        await server.close()
        for close in reversed(closers):
            result = close()
            if asyncio.iscoroutine(result):
                await result
        reaper.close()
    return 0


def _preload() -> None:
    """Import the AgentService shell (the lazy servicer: each area is imported on its first call)
    and the uevent listener in a worker thread, so the loop keeps answering Health.Check
    meanwhile; as PID 1 also wait for the kernel modules that agent.pid1 loads in the
    background."""
    import agent.devices.lookup
    import agent.rpc.lazy_servicer  # noqa: F401

    pid1 = sys.modules.get("agent.pid1")  # imported by the PID 1 entry point only
    if pid1 is not None:
        pid1.wait_for_modules()  # the kernel modules loading in the background (no-op otherwise)


def _release_free_memory() -> None:
    """Give the memory start-up allocated and freed back to the kernel (glibc ``malloc_trim(0)``:
    free pages of every arena, not only the top of the heap; see malloc_trim(3)). Start-up
    imports in worker threads, whose arenas keep such pages otherwise: ~0.9 MiB of idle RSS
    (bench/rpc.py). Not glibc (musl): nothing to do."""
    import ctypes

    try:
        trim = ctypes.CDLL(None).malloc_trim
    except AttributeError:
        return
    trim.argtypes = [ctypes.c_size_t]
    trim(0)


async def _close_lifecycle(services: Services) -> None:
    if services.built("lifecycle"):
        await services.lifecycle.close()


async def _serve_log_port(port: int, sink: agent_log.LogSink) -> Callable[[], Any]:
    """agent.log_vport: logs go to the connection accepted on this vsock port (the latest one)."""
    import asyncio
    import socket

    loop = asyncio.get_running_loop()
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    sock.bind((socket.VMADDR_CID_ANY, port))
    sock.listen(1)
    sock.setblocking(False)

    async def accept() -> None:
        while True:
            conn, _ = await loop.sock_accept(sock)
            conn.setblocking(True)
            sink.attach(conn.makefile("w", encoding="utf-8", errors="replace", buffering=1))

    task = loop.create_task(accept())

    def close() -> None:
        task.cancel()
        sock.close()

    return close


def _loop_factory(config: AgentConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if config.server.grpc_addr:
        return None
    from agent.aio import import_uvloop

    uvloop = import_uvloop()
    return None if uvloop is None else uvloop.new_event_loop


def run(config: AgentConfig, *, handover: Handover | SerialHandover | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT; returns the exit status.

    ``handover``: phase 0 already done by ``agent.cli``; otherwise it is done here (bind the
    listener, answer Check while ``import_phase1`` runs in a thread)."""
    sink = agent_log.setup(config.log.level, stream=None if config.log.vport else sys.stdout)
    if handover is None:
        try:
            handover = _phase0(config)
        except OSError as err:
            log.critical(
                "cannot listen", extra={"address": config.server.server_addr, "error": str(err)}
            )
            print(f"kata-agent: listen on {config.server.server_addr}: {err}", file=sys.stderr)
            return 1
    import_asyncio()
    import asyncio

    with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
        try:
            return runner.run(serve(config, log_sink=sink, handover=handover))
        except KeyboardInterrupt:
            return 130
        except Exception as err:
            log.critical("agent failed", exc_info=True, extra={"error": str(err)})
            print(f"kata-agent: {err}", file=sys.stderr)
            return 1


def import_asyncio() -> None:
    """Import asyncio without ssl (``agent.aio``: the agent never speaks TLS through asyncio)."""
    from agent.aio import import_asyncio

    import_asyncio()


def import_phase1() -> None:
    """Import what phase 1 needs (asyncio, uvloop, the RPC server); run in a thread in phase 0.
    Errors are left for the main thread, which imports the same modules and reports them."""
    try:
        from agent.aio import import_uvloop

        import_uvloop()  # and asyncio; both without ssl (agent.aio)

        import agent.reaper
        import agent.rpc.health_servicer
        import agent.rpc.server
        import agent.rpc.transport
        import agent.spawn  # noqa: F401
    except Exception:
        pass


def _phase0(config: AgentConfig) -> Handover | None:
    import threading

    from agent.rpc import early

    listener = early.bind(config.server.server_addr)
    if listener is None:
        return None
    imported = threading.Event()

    def work() -> None:
        try:
            import_phase1()
        finally:
            imported.set()

    threading.Thread(target=work, name="phase1-imports", daemon=True).start()
    handover = early.EarlyServer(listener).serve(imported)
    log.debug("phase 0 done", extra={"early_checks": handover.answered})
    return handover
