"""Phase 1: the asyncio ttrpc server takes over what phase 0 bound or opened, grpc.Health answers.

``run`` sets up the JSON logs, starts the event loop (uvloop when installed; asyncio's own loop
with ``--grpc-addr``: grpc.aio is only documented for that one) and ``serve``:

1. the reaper (every child's exit status; PID 1 or a subreaper reaps orphans too) and the signal
   handlers (SIGTERM and SIGINT only set the stop event);
2. the log port (``agent.log_vport``), then the listener: the one phase 0 hands over with the
   connections it accepted (nothing lost or answered twice), else a new one. grpc.Health answers
   from now on; grpc.AgentService is deferred: its calls wait for phase 2;
3. phase 2 (``agent.boot.phase2``), imported in a worker thread while the loop keeps answering,
   builds the AgentService stack;
4. then the agent serves until the stop event; shutdown closes the listeners (in-flight calls are
   cancelled), what phase 2 started in reverse order, and the reaper last.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable
from types import ModuleType
from typing import Any

from agent import imports, spawn
from agent import log as agent_log
from agent.config import AgentConfig
from agent.reaper import Reaper, install
from agent.rpc.dispatch import AGENT_SERVICE, HEALTH_SERVICE, Dispatcher
from agent.rpc.early import Handover
from agent.rpc.early_serial import SerialHandover
from agent.rpc.health_servicer import HealthServicer
from agent.rpc.server import ConnectionLimits, TtrpcServer

log = logging.getLogger(__name__)


def run(config: AgentConfig, handover: Handover | SerialHandover | None = None) -> int:
    """Run the agent until SIGTERM/SIGINT (or DestroySandbox); returns the exit status.
    ``handover``: what phase 0 bound or opened (dropped when the configuration names another
    address)."""
    sink = agent_log.setup(config.log.level, stream=None if config.log.vport else sys.stdout)
    if handover is not None and handover.address != config.server.server_addr:
        handover.close()
        handover = None
    with asyncio.Runner(loop_factory=_loop_factory(config)) as runner:
        try:
            return runner.run(serve(config, log_sink=sink, handover=handover))
        except KeyboardInterrupt:
            return 130
        except Exception as err:
            log.critical("agent failed", exc_info=True, extra={"error": str(err)})
            print(f"kata-agent: {err}", file=sys.stderr)
            return 1


def _loop_factory(config: AgentConfig) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if config.server.grpc_addr:
        return None
    uvloop = imports.import_uvloop()
    return None if uvloop is None else uvloop.new_event_loop


async def serve(
    config: AgentConfig,
    *,
    log_sink: agent_log.LogSink | None = None,
    handover: Handover | SerialHandover | None = None,
) -> int:
    """Phases 1 and 2, then serve until the stop event (module docstring)."""
    loop = asyncio.get_running_loop()
    spawn.close_inherited_fds_on_exec()
    reaper = Reaper(reap_all=True)
    reaper.start(loop, subreaper=os.getpid() != 1)
    install(reaper, loop)

    stop = asyncio.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)

    dispatcher = Dispatcher({HEALTH_SERVICE: HealthServicer()}, deferred=[AGENT_SERVICE])
    server = TtrpcServer(
        dispatcher,
        ConnectionLimits(
            idle_frame_timeout=config.server.idle_frame_timeout,
            frame_memory=config.server.frame_memory,
            max_connections=config.server.max_connections,
        ),
    )
    closers: list[Callable[[], Any]] = []
    try:
        if config.log.vport and log_sink is not None:
            closers.append(await _serve_log_port(config.log.vport, log_sink))
        address = config.server.server_addr
        try:
            if isinstance(handover, SerialHandover):  # PID 1 opened the port (agent.boot.init)
                await server.listen(address, serial=handover)
            elif handover is not None:
                await server.listen(address, sock=handover.listener)
                await server.adopt(handover.connections)
            else:
                await server.listen(address)
        except OSError as err:
            log.critical("cannot listen", extra={"address": address, "error": str(err)})
            print(f"kata-agent: listen on {address}: {err}", file=sys.stderr)
            return 1
        if handover is not None:
            held = handover.held_since
            log.debug(  # a request phase 0 could not answer waited for the asyncio server
                "phase 0 done",
                extra={
                    "early_checks": handover.answered,
                    "held_request_ms": None
                    if held is None
                    else round((time.monotonic() - held) * 1e3, 1),
                },
            )

        phase2 = await asyncio.to_thread(_import_phase2)
        await phase2.start(config, dispatcher, stop, closers)
        log.info(
            "announce",
            extra={
                "server_addr": address,
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


def _import_phase2() -> ModuleType:
    """Phase 2's modules, imported in a worker thread while the loop keeps answering Check; as
    PID 1 also the kernel modules left for later are loaded meanwhile."""
    from agent.boot import phase2  # the import-heavy part: off the loop on purpose

    if os.getpid() == 1:
        from agent.boot import pid1  # PID 1's duties: imported by agent.boot.init already

        pid1.wait_for_modules()
    return phase2


async def _serve_log_port(port: int, sink: agent_log.LogSink) -> Callable[[], Any]:
    """agent.log_vport: logs go to the connection accepted on this vsock port (the latest one)."""
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
