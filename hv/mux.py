"""The ttrpc multiplexer: any number of client connections onto the guest's one agent channel.

A virtio-serial port carries one byte stream, and the agent serves it as one ttrpc connection. The
Kata runtime (and ``make vm``'s users) open several connections over a sandbox's life, some of them
at the same time. ``AgentMux`` holds the channel (QEMU's unix socket for the port) and listens on a
unix socket of its own; every request a client sends is relayed under a stream id of the mux's
(odd, increasing, never 1 again: the agent reads a second stream 1 as a new host session), and the
reply is sent back to that client under the client's own stream id. The mux makes its own calls on
the channel too (``call``, ``wait_for_agent``).

What a client sees, and the rules:

=========================================  ======================================================
a well-formed Request frame                relayed; the agent's reply (or error status) comes back
its stream id already in flight            INVALID_ARGUMENT "stream id N is already active"
the channel is gone (the guest stopped)    UNAVAILABLE for its calls, then the connection closes
anything else (not a Request frame, an     the client is cut off alone: only well-formed requests
even stream id, a frame over 4 MiB, a      ever reach the shared channel, and nothing of the other
body that is not a ttrpc Request)          clients' calls is touched
a client that disconnects                  its calls finish in the guest; their replies are dropped
a client that does not read its replies    cut off when 64 MiB of replies are waiting for it
the guest reads the channel slowly         clients are not read until the channel drains
=========================================  ======================================================

``shared_storage``: CreateSandbox requests that mount nothing at the guest's shared directory get
that storage added (``hv.shared``): the Go runtime sends none to a remote hypervisor, yet puts the
container root filesystems into the shared directory on the host.

``log_rpc``: one JSON log line per relayed call (logger ``hv.rpc``): connection number, method,
duration in ms, status.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError, Message

from agent.rpc import framing
from agent.rpc.dispatch import AGENT_SERVICE, HEALTH_SERVICE
from agent.rpc.pb import agent_pb2, health_pb2, request_pb2
from agent.rpc.pb.google.rpc import status_pb2
from agent.rpc.server import encode_error
from agent.rpc.status import Code, RpcError
from hv.shared import mounts_shared_dir

log = logging.getLogger(__name__)
rpc_log = logging.getLogger("hv.rpc")

M = TypeVar("M", bound=Message)

CLIENT_WRITE_LIMIT = 64 << 20  # replies waiting for a client that does not read them
_MAX_SID = 0xFFFFFFFF


class _Route:
    """Where the reply for one relayed call goes."""

    __slots__ = ("client", "client_sid", "future", "path", "started")

    def __init__(
        self,
        client: _Client | None,
        client_sid: int,
        path: str,
        future: asyncio.Future[bytes] | None = None,
    ) -> None:
        self.client = client
        self.client_sid = client_sid
        self.path = path
        self.future = future  # the mux's own call
        self.started = time.perf_counter()


class AgentMux:
    """Relays ttrpc calls of many clients over one agent channel; see the module docstring."""

    def __init__(
        self,
        channel: Path,
        listen: Path,
        *,
        log_rpc: bool = False,
        shared_storage: agent_pb2.Storage | None = None,
        name: str = "",
    ) -> None:
        self.channel_path = Path(channel)
        self.listen_path = Path(listen)
        self.log_rpc = log_rpc
        self.name = name
        self._shared_storage = shared_storage
        self._routes: dict[int, _Route] = {}
        self._next_sid = 1
        self._conn_ids = itertools.count(1)
        self._clients: set[_Client] = set()
        self._channel: asyncio.Transport | None = None
        self._server: asyncio.AbstractServer | None = None
        self._clients_paused = False
        self.closed = False
        self.channel_lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    # -- set-up and tear-down ----------------------------------------------------------------

    async def connect(
        self,
        timeout: float = 15.0,  # noqa: ASYNC109 - bounds the dial
        alive: Callable[[str], None] = lambda step: None,
    ) -> None:
        """Connect to the channel's socket (QEMU creates it shortly after it starts);
        ``alive(step)`` raises when the VM is gone, ConnectionError when ``timeout`` passes."""
        await _in_own_context(self._connect(timeout, alive))

    async def listen(self) -> None:
        """Serve clients on ``listen_path`` (a unix socket only its owner may use)."""
        await _in_own_context(self._listen())

    async def _connect(self, timeout: float, alive: Callable[[str], None]) -> None:  # noqa: ASYNC109
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            alive("vm-start")
            try:
                transport, _ = await loop.create_unix_connection(
                    lambda: _Channel(self), str(self.channel_path)
                )
                break
            except (FileNotFoundError, ConnectionRefusedError) as err:
                if loop.time() > deadline:
                    raise ConnectionError(
                        f"agent channel {self.channel_path}: cannot connect: {err}"
                    ) from err
                await asyncio.sleep(0.05)
        self._channel = transport

    async def _listen(self) -> None:
        sock = private_listener(self.listen_path)
        self._server = await asyncio.get_running_loop().create_unix_server(
            lambda: _Client(self, next(self._conn_ids)), sock=sock
        )
        log.info(
            "agent socket listening", extra={"path": str(self.listen_path), "sandbox": self.name}
        )

    async def close(self) -> None:
        """Stop listening, close every client and the channel; idempotent."""
        if self.closed:
            return
        self.closed = True
        self._stop_listening()
        for client in list(self._clients):
            client.cut_off(None)
        if self._channel is not None:
            self._channel.close()
        self._fail_routes("the agent's multiplexer is closing")

    def _stop_listening(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(FileNotFoundError):
                self.listen_path.unlink()

    # -- the mux's own calls -----------------------------------------------------------------

    async def call(
        self,
        service: str,
        method: str,
        request: Message,
        response_type: type[M],
        *,
        timeout: float,  # noqa: ASYNC109 - also the deadline sent to the agent
    ) -> M:
        """Call the agent over the channel; RpcError with the agent's status on failure."""
        if self._channel is None or self._channel.is_closing():
            raise RpcError(Code.UNAVAILABLE, "the agent channel is not connected")
        body = request_pb2.Request(
            service=service,
            method=method,
            payload=request.SerializeToString(),
            timeout_nano=int(timeout * 1e9),
        ).SerializeToString()
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        sid = self._relay(_Route(None, 0, f"/{service}/{method}", future), body)
        try:
            async with asyncio.timeout(timeout + 2):
                reply = await future
        except TimeoutError:
            raise RpcError(
                Code.DEADLINE_EXCEEDED, f"/{service}/{method}: no answer in {timeout:g} s"
            ) from None
        finally:
            self._routes.pop(sid, None)
        resp = request_pb2.Response.FromString(reply)
        if resp.status.code:
            raise RpcError(resp.status.code, resp.status.message)
        return response_type.FromString(resp.payload)

    async def wait_for_agent(
        self,
        timeout: float,  # noqa: ASYNC109 - the boot's own deadline
        alive: Callable[[str], None] = lambda step: None,
    ) -> None:
        """Health.Check until the agent answers SERVING. ``alive(step)`` raises when the VM is
        gone; TimeoutError when ``timeout`` passes first. A Check is re-sent (new stream id) every
        20 s: QEMU holds what the host sends until the guest opens its port, so one normally
        suffices."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            alive("vm-boot")
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError
            attempt = asyncio.ensure_future(
                self.call(
                    HEALTH_SERVICE,
                    "Check",
                    health_pb2.CheckRequest(),
                    health_pb2.HealthCheckResponse,
                    timeout=min(20.0, remaining),
                )
            )
            while not attempt.done():
                # Notice a QEMU that died while the Check is outstanding.
                await asyncio.wait([attempt], timeout=0.25)
                if not attempt.done():
                    try:
                        alive("vm-boot")
                    except BaseException:
                        attempt.cancel()
                        raise
            try:
                resp = attempt.result()
            except RpcError as err:
                if err.code == Code.UNAVAILABLE:
                    for _ in range(40):  # the channel closed: QEMU is exiting, say why
                        alive("vm-boot")
                        await asyncio.sleep(0.05)
                    raise ConnectionError("the agent channel closed during the boot") from err
                if err.code != Code.DEADLINE_EXCEEDED:
                    raise
                continue
            if resp.status == health_pb2.HealthCheckResponse.SERVING:
                return

    # -- relaying ----------------------------------------------------------------------------

    def _allocate_sid(self) -> int:
        while True:
            sid = self._next_sid
            self._next_sid = sid + 2 if sid + 2 <= _MAX_SID else 3
            if sid not in self._routes:
                return sid

    def _relay(self, route: _Route, body: bytes) -> int:
        """Send ``body`` (a serialized ttrpc Request) under a new stream id of the mux's."""
        assert self._channel is not None
        sid = self._allocate_sid()
        self._routes[sid] = route
        self._channel.writelines(
            (framing.HEADER.pack(len(body), sid, framing.TYPE_REQUEST, 0), body)
        )
        return sid

    def on_request(self, client: _Client, sid: int, body: bytes) -> None:
        """A well-framed Request frame from a client: check it, adjust it, relay it."""
        try:
            envelope = request_pb2.Request.FromString(body)
        except DecodeError as err:
            client.cut_off(f"stream {sid}: not a ttrpc request ({err})")
            return
        if sid in client.in_flight:
            client.reply(
                sid, encode_error(Code.INVALID_ARGUMENT, f"stream id {sid} is already active")
            )
            return
        channel = self._channel
        if channel is None or channel.is_closing():
            client.reply(sid, encode_error(Code.UNAVAILABLE, "the agent channel is closed"))
            return
        if (
            self._shared_storage is not None
            and envelope.method == "CreateSandbox"
            and envelope.service == AGENT_SERVICE
        ):
            body = self._add_shared_storage(envelope) or body
        path = f"/{envelope.service}/{envelope.method}"
        client.in_flight[sid] = self._relay(_Route(client, sid, path), body)

    def _add_shared_storage(self, envelope: request_pb2.Request) -> bytes | None:
        """The CreateSandbox envelope with the shared directory's storage added, or None when
        it mounts something there already (or does not decode: the agent answers that)."""
        assert self._shared_storage is not None
        try:
            req = agent_pb2.CreateSandboxRequest.FromString(envelope.payload)
        except DecodeError:
            return None
        if mounts_shared_dir(req.storages):
            return None
        req.storages.insert(0, self._shared_storage)  # first, as the Go runtime orders it
        envelope.payload = req.SerializeToString()
        log.info(
            "CreateSandbox: added the shared directory's storage",
            extra={"sandbox": self.name, "driver": self._shared_storage.driver},
        )
        return envelope.SerializeToString()

    def on_reply(self, sid: int, body: bytes) -> None:
        route = self._routes.pop(sid, None)
        if route is None:
            return  # the call of a client that went away (or an answer after our deadline)
        if route.future is not None:
            if not route.future.done():
                route.future.set_result(body)
            return
        client = route.client
        assert client is not None
        client.in_flight.pop(route.client_sid, None)
        client.reply(route.client_sid, body)
        if self.log_rpc:
            self._log_call(client, route, reply_code(body))

    def on_oversized_reply(self, sid: int, length: int) -> None:
        self.on_reply(
            sid,
            encode_error(
                Code.RESOURCE_EXHAUSTED,
                f"reply of {length} bytes exceeds maximum message size of {framing.MAX_MESSAGE}",
            ),
        )

    def _log_call(self, client: _Client, route: _Route, code: int) -> None:
        try:
            status = Code(code).name
        except ValueError:
            status = str(code)
        rpc_log.info(
            "rpc",
            extra={
                "sandbox": self.name,
                "connection": client.number,
                "method": route.path,
                "duration_ms": round((time.perf_counter() - route.started) * 1e3, 3),
                "status": status,
            },
        )

    def on_channel_lost(self, exc: Exception | None) -> None:
        self._channel = None
        log.info(
            "agent channel closed",
            extra={"sandbox": self.name, "error": str(exc) if exc else None},
        )
        self._fail_routes("the agent channel closed (the guest stopped)")
        for client in list(self._clients):
            client.close()
        self._stop_listening()
        if not self.channel_lost.done():
            self.channel_lost.set_result(None)

    def _fail_routes(self, message: str) -> None:
        routes = list(self._routes.values())
        self._routes.clear()
        for route in routes:
            if route.future is not None:
                if not route.future.done():
                    route.future.set_exception(RpcError(Code.UNAVAILABLE, message))
            elif route.client is not None:
                route.client.in_flight.pop(route.client_sid, None)
                route.client.reply(route.client_sid, encode_error(Code.UNAVAILABLE, message))

    # -- flow control ------------------------------------------------------------------------

    def add_client(self, client: _Client) -> None:
        self._clients.add(client)
        if self._clients_paused:
            client.pause()

    def remove_client(self, client: _Client) -> None:
        self._clients.discard(client)
        for client_sid, sid in client.in_flight.items():
            route = self._routes.get(sid)
            if route is not None and route.client is client:
                del self._routes[sid]  # the reply is dropped when it comes
                if self.log_rpc:
                    rpc_log.info(
                        "rpc abandoned",
                        extra={
                            "sandbox": self.name,
                            "connection": client.number,
                            "method": route.path,
                            "stream": client_sid,
                        },
                    )
        client.in_flight.clear()

    def pause_clients(self) -> None:
        self._clients_paused = True
        for client in self._clients:
            client.pause()

    def resume_clients(self) -> None:
        self._clients_paused = False
        for client in self._clients:
            client.resume()


class _Channel(asyncio.Protocol):
    """The mux's one connection to the agent."""

    def __init__(self, mux: AgentMux) -> None:
        self._mux = mux
        self._parser = framing.FrameParser()

    def data_received(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if isinstance(event, framing.Oversized):
                self._mux.on_oversized_reply(event.stream_id, event.length)
            elif event.type == framing.TYPE_RESPONSE:
                self._mux.on_reply(event.stream_id, event.data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._mux.on_channel_lost(exc)

    def pause_writing(self) -> None:
        self._mux.pause_clients()

    def resume_writing(self) -> None:
        self._mux.resume_clients()


class _Client(asyncio.Protocol):
    """One client connection on the mux's socket."""

    def __init__(self, mux: AgentMux, number: int) -> None:
        self._mux = mux
        self.number = number
        self._parser = framing.FrameParser()
        self._transport: asyncio.Transport | None = None
        self.in_flight: dict[int, int] = {}  # client stream id -> the mux's stream id

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]
        self._mux.add_client(self)
        log.debug("client connected", extra={"sandbox": self._mux.name, "connection": self.number})

    def data_received(self, data: bytes) -> None:
        for event in self._parser.feed(data):
            if self._transport is None:
                return  # cut off by an earlier frame of this chunk
            if isinstance(event, framing.Oversized):
                self.cut_off(
                    f"stream {event.stream_id}: a frame of {event.length} bytes "
                    f"(the limit is {framing.MAX_MESSAGE})"
                )
            elif event.type != framing.TYPE_REQUEST:
                self.cut_off(f"stream {event.stream_id}: frame type {event.type} (not a request)")
            elif event.stream_id % 2 == 0:
                self.cut_off(f"stream id {event.stream_id} is even (must be odd)")
            else:
                self._mux.on_request(self, event.stream_id, event.data)

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        self._mux.remove_client(self)
        log.debug(
            "client disconnected", extra={"sandbox": self._mux.name, "connection": self.number}
        )

    def reply(self, sid: int, body: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.writelines((framing.HEADER.pack(len(body), sid, framing.TYPE_RESPONSE, 0), body))
        if transport.get_write_buffer_size() > CLIENT_WRITE_LIMIT:
            self.cut_off(f"{CLIENT_WRITE_LIMIT >> 20} MiB of replies it does not read")

    def cut_off(self, reason: str | None) -> None:
        """Drop this client alone (``reason`` None: the mux is closing)."""
        transport = self._transport
        if transport is None:
            return
        if reason is not None:
            log.warning(
                "client cut off",
                extra={"sandbox": self._mux.name, "connection": self.number, "reason": reason},
            )
        transport.abort()

    def close(self) -> None:
        """Close after the replies already written (UNAVAILABLE for calls the channel lost)."""
        if self._transport is not None:
            self._transport.close()

    def pause(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.pause_reading()

    def resume(self) -> None:
        if self._transport is not None and not self._transport.is_closing():
            self._transport.resume_reading()


def private_listener(path: Path) -> socket.socket:
    """A listening, non-blocking unix socket at ``path`` that only its owner (root) may use; a
    stale socket file there is replaced."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if path.is_socket():
            path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(path))
        os.chmod(path, 0o600)
        sock.listen(128)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock


async def _in_own_context(coro: Coroutine[Any, Any, None]) -> None:
    """Run ``coro`` in an empty context: the transports it creates call back in the context they
    were made in, and the mux's traffic is no part of the call that started the VM (its log
    context, e.g. the RPC method, must not stick to every relayed call)."""
    await asyncio.get_running_loop().create_task(coro, context=contextvars.Context())


def reply_code(body: bytes) -> int:
    """The status code of a serialized ttrpc Response, without decoding its payload."""
    pos, end = 0, len(body)
    try:
        while pos < end:
            key, pos = _varint(body, pos)
            wire = key & 7
            if wire == 2:
                length, pos = _varint(body, pos)
                if key >> 3 == 1:
                    return int(status_pb2.Status.FromString(body[pos : pos + length]).code)
                pos += length
            elif wire == 0:
                _, pos = _varint(body, pos)
            elif wire in (1, 5):
                pos += 8 if wire == 1 else 4
            else:
                break
    except (IndexError, DecodeError):
        return Code.UNKNOWN
    return Code.OK


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7
