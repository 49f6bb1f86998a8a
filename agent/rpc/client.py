"""An asyncio ttrpc client (for kata-agent-ctl, tests and benchmarks).

::

    client = await TtrpcClient.connect("unix:///run/x.sock", timeout=5)
    resp = await client.call("grpc.Health", "Check", health_pb2.CheckRequest(), timeout=30)
    resp = await client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest())  # stub style
    await client.close()

Addresses: ``unix:///path``, ``unix://@name``, ``vsock://CID:PORT``, ``hvsock://PATH:PORT`` (a unix
socket plus the ``CONNECT PORT\\n`` / ``OK ...`` handshake of Cloud Hypervisor and Firecracker),
and the Go runtime's ``mock://PATH`` / ``remote://PATH`` (plain unix). A failed call raises
``RpcError`` with the server's code and message. Stream ids are odd and increase (1, 3, 5, ...).
``call_raw`` and ``send_raw`` exist for protocol tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Any

from google.protobuf import message as pb_message

from agent.rpc import framing
from agent.rpc.dispatch import (
    AGENT_SERVICE,
    HEALTH_SERVICE,
    OTHER_SERVICE_MODULES,
    Method,
    contract_methods,
    service_methods,
)
from agent.rpc.pb import request_pb2
from agent.rpc.status import Code, RpcError
from agent.rpc.transport import FdTransport

DEFAULT_GRACE = 2.0  # how long after the deadline we still wait for the server's own answer


class _ClientProtocol(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = framing.FrameParser(max_message=framing.MAX_MESSAGE)
        self.pending: dict[int, asyncio.Future[request_pb2.Response]] = {}
        self.transport: asyncio.Transport | None = None
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.stray_frames: list[framing.Frame] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses

    def data_received(self, data: bytes) -> None:
        for event in self.parser.feed(data):
            if isinstance(event, framing.Oversized):
                fut = self.pending.pop(event.stream_id, None)
                if fut is not None and not fut.done():
                    fut.set_exception(
                        RpcError(Code.RESOURCE_EXHAUSTED, f"response of {event.length} bytes")
                    )
                continue
            fut = self.pending.pop(event.stream_id, None)
            if fut is None or event.type != framing.TYPE_RESPONSE:
                self.stray_frames.append(event)
                continue
            if fut.done():
                continue
            try:
                fut.set_result(request_pb2.Response.FromString(event.data))
            except Exception as err:
                fut.set_exception(RpcError(Code.INTERNAL, f"undecodable response: {err}"))

    def connection_lost(self, exc: Exception | None) -> None:
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(RpcError(Code.UNAVAILABLE, "ttrpc: closed"))
        self.pending.clear()
        if not self.lost.done():
            self.lost.set_result(None)


class _Stub:
    def __init__(self, client: TtrpcClient, service: str) -> None:
        self._client = client
        self._service = service

    def __getattr__(self, name: str) -> Any:
        if name not in self._client.methods.get(self._service, {}):
            raise AttributeError(f"{self._service} has no method {name}")

        async def call(
            req: pb_message.Message,
            *,
            timeout: float | None = None,  # noqa: ASYNC109 - the deadline sent to the server
        ) -> Any:
            return await self._client.call(self._service, name, req, timeout=timeout)

        return call


class TtrpcClient:
    def __init__(self, transport: asyncio.Transport, protocol: _ClientProtocol) -> None:
        self._transport = transport
        self._protocol = protocol
        self._next_id = 1
        self.methods: dict[str, dict[str, Method]] = contract_methods()
        self.agent = _Stub(self, AGENT_SERVICE)
        self.health = _Stub(self, HEALTH_SERVICE)

    @classmethod
    async def connect(
        cls,
        address: str,
        *,
        timeout: float = 10.0,  # noqa: ASYNC109 - bounds the dial, not a call
    ) -> TtrpcClient:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(timeout):
            sock = await _dial(address)
        if sock.family == socket.AF_UNIX:
            transport, protocol = await loop.create_unix_connection(_ClientProtocol, sock=sock)
        else:
            protocol = _ClientProtocol()
            transport = FdTransport(sock.detach(), protocol, is_socket=True)
        return cls(transport, protocol)

    @classmethod
    def from_fd(cls, fd: int, *, is_socket: bool) -> TtrpcClient:
        """A client over an already connected fd (a socket, a pty master, a serial line); the
        client owns the fd from now on."""
        protocol = _ClientProtocol()
        return cls(FdTransport(fd, protocol, is_socket=is_socket), protocol)

    @property
    def closed(self) -> bool:
        return self._protocol.lost.done()

    async def close(self) -> None:
        self._transport.close()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(2):
                await self._protocol.lost

    async def __aenter__(self) -> TtrpcClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def method(self, service: str, name: str) -> Method:
        if service not in self.methods and service in OTHER_SERVICE_MODULES:
            self.methods[service] = service_methods(service)  # e.g. hypervisor.Hypervisor
        try:
            return self.methods[service][name]
        except KeyError:
            raise RpcError(
                Code.UNIMPLEMENTED, f"/{service}/{name} is not in the contract"
            ) from None

    async def call(
        self,
        service: str,
        name: str,
        request: pb_message.Message,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline sent to the server (timeout_nano)
        metadata: dict[str, str] | None = None,
    ) -> Any:
        """Call a contract method; returns the decoded response message."""
        method = self.method(service, name)
        code, message, payload = await self.call_raw(
            service, name, request.SerializeToString(), timeout=timeout, metadata=metadata
        )
        if code != Code.OK:
            raise RpcError(code, message)
        return method.response_type.FromString(payload)

    async def call_raw(
        self,
        service: str,
        name: str,
        payload: bytes,
        *,
        timeout: float | None = None,  # noqa: ASYNC109 - the deadline sent to the server (timeout_nano)
        metadata: dict[str, str] | None = None,
        stream_id: int | None = None,
    ) -> tuple[int, str, bytes]:
        """Send one Request with an arbitrary payload; returns (code, message, payload)."""
        envelope = request_pb2.Request(service=service, method=name, payload=payload)
        if timeout:
            envelope.timeout_nano = int(timeout * 1e9)
        for key, value in (metadata or {}).items():
            envelope.metadata.add(key=key, value=value)
        data = envelope.SerializeToString()
        if len(data) > framing.MAX_MESSAGE:
            raise RpcError(
                Code.RESOURCE_EXHAUSTED,
                f"message length {len(data)} exceeds maximum message size of {framing.MAX_MESSAGE}",
            )
        resp = await self.request_frame(
            data,
            stream_id=stream_id,
            wait=None if timeout is None else timeout + DEFAULT_GRACE,
        )
        if resp.HasField("status") and resp.status.code != 0:
            return resp.status.code, resp.status.message, resp.payload
        return Code.OK, "", resp.payload

    async def request_frame(
        self,
        data: bytes,
        *,
        stream_id: int | None = None,
        flags: int = 0,
        frame_type: int = framing.TYPE_REQUEST,
        wait: float | None = None,
    ) -> request_pb2.Response:
        """Send one frame (any size: for protocol tests) and wait for the Response on its
        stream id."""
        if self.closed:
            raise RpcError(Code.UNAVAILABLE, "ttrpc: closed")
        if stream_id is None:
            stream_id = self._next_id
            self._next_id += 2
        fut: asyncio.Future[request_pb2.Response] = asyncio.get_running_loop().create_future()
        self._protocol.pending[stream_id] = fut
        self._transport.write(framing.encode(stream_id, frame_type, data, flags))
        try:
            if wait is None:
                return await fut
            async with asyncio.timeout(wait):
                return await fut
        except TimeoutError:
            raise RpcError(Code.DEADLINE_EXCEEDED, "context deadline exceeded") from None
        finally:
            self._protocol.pending.pop(stream_id, None)

    def send_raw(self, data: bytes) -> None:
        """Write bytes as they are (malformed-input tests)."""
        self._transport.write(data)

    async def wait_closed(self) -> None:
        await self._protocol.lost


async def _dial(address: str) -> socket.socket:
    loop = asyncio.get_running_loop()
    scheme, sep, rest = address.partition("://")
    if not sep:
        raise ValueError(f"invalid address {address!r}: expected scheme://...")
    if scheme in ("unix", "mock", "remote"):
        path = "\0" + rest[1:] if rest.startswith("@") else rest
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, path)
        except BaseException:
            sock.close()
            raise
        return sock
    if scheme == "vsock":
        cid_s, _, port_s = rest.partition(":")
        sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, (int(cid_s), int(port_s)))
        except BaseException:
            sock.close()
            raise
        return sock
    if scheme == "hvsock":
        path, colon, port_s = rest.rpartition(":")
        if not colon or not port_s.isdigit():
            raise ValueError(f"invalid address {address!r}: expected hvsock://PATH:PORT")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, path)
            await loop.sock_sendall(sock, f"CONNECT {port_s}\n".encode())
            line = b""
            while not line.endswith(b"\n"):
                chunk = await loop.sock_recv(sock, 1)  # byte by byte: no ttrpc data swallowed
                if not chunk:
                    raise ConnectionError(f"{path}: hybrid vsock handshake: connection closed")
                line += chunk
                if len(line) > 512:
                    raise ConnectionError(f"{path}: hybrid vsock handshake: reply too long")
            if b"OK" not in line:
                reply = line.decode(errors="replace").strip()
                raise ConnectionError(f"{path}: hybrid vsock CONNECT {port_s} refused: {reply}")
        except BaseException:
            sock.close()
            raise
        return sock
    raise ValueError(f"invalid address {address!r}: unknown scheme {scheme!r}")
