"""gRPC serving of the same servicers with grpc.aio (only when ``--grpc-addr`` is set).

The generic handlers are built from the same ``Dispatcher`` table as ttrpc, so both transports
serve exactly the contract's methods with the same status mapping (``agent.rpc.status``). The
server also offers the standard ``grpc.health.v1.Health`` service and server reflection.

Addresses: ``unix:///path`` and ``unix://@name`` (or ``unix-abstract:name``) are bound by grpcio
directly. grpcio cannot bind vsock, so for ``vsock://CID:PORT`` the gRPC server listens on a
private abstract unix socket and ``VsockBridge`` accepts AF_VSOCK connections and splices their
bytes to it.

grpcio is imported here only; ``agent.boot.phase2`` imports this module only when a gRPC address
is set.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections.abc import Callable
from typing import Any

import grpc
from grpc import aio
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from agent.rpc.dispatch import Dispatcher, Method
from agent.rpc.framing import MAX_MESSAGE
from agent.rpc.status import to_status
from agent.rpc.transport import parse_address
from agent.rpc.validate import check_request

log = logging.getLogger(__name__)


def grpc_target(address: str) -> str:
    """Our address syntax -> grpcio's bind target."""
    if address.startswith("unix-abstract:"):
        return address
    if address.startswith("unix://@"):
        return "unix-abstract:" + address[len("unix://@") :]
    if address.startswith("unix:///"):
        return "unix:" + address[len("unix://") :]
    raise ValueError(f"grpc address {address!r}: expected unix:///path or unix://@name")


def _method_handler(dispatcher: Dispatcher, method: Method) -> Any:
    codes = {sc.value[0]: sc for sc in grpc.StatusCode}

    async def call(request: Any, context: Any) -> Any:
        bound = dispatcher.lookup(method.service, method.name)  # as bound now (agent policy)
        if bound.handler is None:
            await context.abort(
                grpc.StatusCode.UNIMPLEMENTED, Dispatcher.unimplemented(method).message
            )
        assert bound.handler is not None
        try:
            check_request(request)
            remaining = context.time_remaining()
            if remaining is not None:
                async with asyncio.timeout(max(remaining, 0)):
                    return await bound.handler(request)
            return await bound.handler(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            code, message = to_status(exc, method.path)
            await context.abort(codes.get(int(code), grpc.StatusCode.UNKNOWN), message)

    return grpc.unary_unary_rpc_method_handler(
        call,
        request_deserializer=method.request_type.FromString,
        response_serializer=lambda m: m.SerializeToString(),
    )


async def start_grpc(address: str, dispatcher: Dispatcher) -> Callable[[], Any]:
    """Start grpc.aio on ``address``; returns an async closer."""
    bridge: VsockBridge | None = None
    if address.startswith("vsock://"):
        _, (cid, port) = parse_address(address)
        inner = f"kata-agent-grpc-{os.getpid()}"
        target = "unix-abstract:" + inner
        bridge = VsockBridge((cid, port), "\0" + inner)
    else:
        target = grpc_target(address)
        if target.startswith("unix:"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(target[len("unix:") :])

    server = aio.server(
        options=[
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
        ]
    )
    by_service: dict[str, dict[str, Any]] = {}
    for bound in dispatcher.bound_methods():
        handler = _method_handler(dispatcher, bound.method)
        by_service.setdefault(bound.method.service, {})[bound.method.name] = handler
    server.add_generic_rpc_handlers(
        tuple(grpc.method_handlers_generic_handler(s, h) for s, h in by_service.items())
    )
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [*by_service, health.SERVICE_NAME, reflection.SERVICE_NAME]
    reflection.enable_server_reflection(names, server)
    if server.add_insecure_port(target) == 0:
        raise OSError(f"gRPC: cannot listen on {address}")
    await server.start()
    for name in (*by_service, ""):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    if bridge is not None:
        await bridge.start()
    log.info("gRPC server listening", extra={"address": address, "target": target})

    async def close() -> None:
        if bridge is not None:
            await bridge.close()
        await server.stop(grace=1)

    return close


class VsockBridge:
    """Accepts stream connections on a listening address and splices each to a unix address.

    Used for AF_VSOCK -> the gRPC server's abstract unix socket; ``family`` is a parameter so the
    byte pump can be tested over unix sockets on machines without vsock.
    """

    def __init__(self, listen_addr: Any, target: str, *, family: int = socket.AF_VSOCK) -> None:
        self._listen_addr = listen_addr
        self._target = target
        self._family = family
        self._sock: socket.socket | None = None
        self._task: asyncio.Task[None] | None = None
        self._pumps: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        sock = socket.socket(self._family, socket.SOCK_STREAM)
        try:
            sock.bind(self._listen_addr)
            sock.listen(128)
            sock.setblocking(False)
        except OSError:
            sock.close()
            raise
        self._sock = sock
        self._task = asyncio.get_running_loop().create_task(self._accept())

    async def _accept(self) -> None:
        assert self._sock is not None
        loop = asyncio.get_running_loop()
        while True:
            conn, _ = await loop.sock_accept(self._sock)
            task = loop.create_task(self._splice(conn))
            self._pumps.add(task)
            task.add_done_callback(self._pumps.discard)

    async def _splice(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        upstream = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        upstream.setblocking(False)
        try:
            await loop.sock_connect(upstream, self._target)
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_pump(conn, upstream))
                tg.create_task(_pump(upstream, conn))
        except (OSError, ExceptionGroup) as err:
            log.debug("bridge connection ended", extra={"error": str(err)})
        finally:
            conn.close()
            upstream.close()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for task in list(self._pumps):
            task.cancel()
        if self._sock is not None:
            self._sock.close()


async def _pump(src: socket.socket, dst: socket.socket) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.sock_recv(src, 256 * 1024)
        if not data:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)
            return
        await loop.sock_sendall(dst, data)
