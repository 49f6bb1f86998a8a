"""The asyncio ttrpc server (shared/kata-protocol/ttrpc.md).

One ``Connection`` protocol instance per byte stream (unix socket, vsock connection or serial
port). Each Request frame becomes its own task, so any number of calls can be in flight on one
connection (the shim parks ReadStdout/WaitProcess/GetOOMEvent for minutes). Each response is
written with one ``transport.write``/``writelines`` call, so frames never interleave. When the
peer goes away all of the connection's in-flight handlers are cancelled.

Synchronous path: a method whose handler has a ``try_<Method>`` variant (``Bound.now``,
agent.rpc.dispatch; ReadStdout/ReadStderr) is first offered to it right in ``data_received``. If
it can answer at once (output is there, or EOF is known) the reply is written there and then: no
task, no done callback, no in-flight bookkeeping -- a task and its steps cost about as much as
the rest of a 32 KiB ReadStdout (bench/lifecycle.py). If it cannot, it has consumed nothing and
the call takes the task path with the request already decoded. Nothing changes for the peer:
the same statuses (errors of the variant go through ``to_status`` as the handler's would), one
stats count and one debug log line per call; there is nothing to cancel or time out in a call
that completed before the next frame is looked at. While the transport has paused writing (the
peer does not read its replies) the synchronous path is not taken, so answers cannot pile up
faster than through tasks, which wait for the peer after writing.

Protocol errors and their answers:

=====================================  ==================================================
even stream id                         INVALID_ARGUMENT "stream id N must be odd ..."
frame longer than 4 MiB                body discarded, RESOURCE_EXHAUSTED on that stream
Data frame / streaming Request         INVALID_ARGUMENT / UNIMPLEMENTED
stream id already in flight            INVALID_ARGUMENT
undecodable ttrpc.Request              INVALID_ARGUMENT "unmarshal request error: ..."
unknown service / method               INVALID_ARGUMENT / UNIMPLEMENTED (ttrpc-rust's codes)
contract method without a handler      UNIMPLEMENTED "/grpc.AgentService/X is not implemented"
undecodable request payload            INVALID_ARGUMENT naming the message type
NUL byte in a string field             INVALID_ARGUMENT naming the field (``rpc.validate``;
                                       before the agent policy's guard and the handler)
``timeout_nano`` passed                DEADLINE_EXCEEDED (the handler is cancelled)
response longer than 4 MiB             RESOURCE_EXHAUSTED instead of the response
too many calls in flight (4096)        RESOURCE_EXHAUSTED
> 64 MiB of requests in flight         the connection is not read until calls finish
unknown frame type, stray Response     ignored (as the Go and Rust servers do)
no byte inside a frame for 30 s        the connection is closed (``idle_frame_timeout``)
partial frames over the memory bound   the connection waits; the oldest stalled frame's
                                       connection is closed (``FrameMemory``)
more than ``max_connections``          a new connection is closed at once
=====================================  ==================================================

Connection limits (``ConnectionLimits``, from ``agent.config.ServerConfig``): a peer that stops
inside a frame, or many peers that each hold most of a 4 MiB frame, must not hold the agent's
memory. Each connection may buffer ``FRAME_ALLOWANCE`` bytes of a partial frame freely (every
ordinary request fits); beyond that the bytes are charged to one budget shared by all connections
(``frame_memory``). A connection that needs more than is left stops being read (its bytes stay in
the kernel's socket buffer) until memory is given back; and while anyone waits, the connection
whose partial frame started longest ago (at least ``EVICT_AFTER`` seconds) is closed. So the agent
holds at most ``frame_memory`` plus, per connection, the allowance and one read, and a live shim
that sends a large frame is served within seconds even while other connections stall. A serial
port (one host stream, which closing could not resynchronise) is exempt from the idle timeout and
the connection cap, not from the memory budget.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import logging
import select
import socket
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, NamedTuple

from google.protobuf.message import DecodeError, Message

from agent import log as agent_log
from agent.rpc import framing
from agent.rpc.dispatch import Bound, Dispatcher, Method
from agent.rpc.early import EarlyConnection
from agent.rpc.early_serial import SerialHandover
from agent.rpc.encoded import Part, PreEncoded, varint
from agent.rpc.pb import request_pb2
from agent.rpc.pb.google.rpc import status_pb2
from agent.rpc.status import Code, RpcError, to_status
from agent.rpc.transport import FdTransport, listen
from agent.rpc.validate import check_request

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 4096
# Request bytes held by the calls in flight on one connection: above the high mark the connection
# is not read any further until handlers finish (back-pressure instead of unbounded memory).
IN_FLIGHT_HIGH = 64 << 20
IN_FLIGHT_LOW = 32 << 20
_JOIN_MAX = 64 << 10  # a larger payload is written after its prefix without a joining copy
FRAME_ALLOWANCE = 64 << 10  # partial-frame bytes a connection holds outside the shared budget
EVICT_AFTER = 2.0  # seconds a partial frame may take before it can be evicted under pressure
_REFUSED_LOG_INTERVAL = 5.0
_OK_STATUS = (
    b"\x0a\x00"  # Response.status = an explicit empty google.rpc.Status (as the Rust agent)
)


class PeerCredentials(NamedTuple):
    """SO_PEERCRED of a unix socket connection: the process that connected."""

    pid: int
    uid: int
    gid: int


# The credentials of the connection a call arrived on, for handlers that need to know who called
# (kata-agent-hv finds the Kata shim's mount namespace this way). Set only by servers created with
# ``peer_credentials=True``.
peer_credentials: contextvars.ContextVar[PeerCredentials | None] = contextvars.ContextVar(
    "peer_credentials", default=None
)
_UCRED = struct.Struct("3i")


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Per-server limits on what connections may hold (see the module docstring)."""

    idle_frame_timeout: float = 30.0
    frame_memory: int = 16 << 20
    max_connections: int = 128


class FrameMemory:
    """The memory partial frames hold, across all connections of one server."""

    def __init__(
        self,
        limit: int,
        *,
        allowance: int = FRAME_ALLOWANCE,
        evict_after: float = EVICT_AFTER,
    ) -> None:
        self.limit = limit
        self.allowance = allowance
        self.evict_after = evict_after
        self.used = 0
        self.evicted = 0
        self._held: dict[Connection, int] = {}
        self._waiting: dict[Connection, None] = {}  # insertion-ordered: woken first come first
        self._timer: asyncio.TimerHandle | None = None

    def charge(self, conn: Connection, buffered: int) -> bool:
        """``conn`` now holds ``buffered`` bytes of a partial frame; False: over the budget,
        the connection must stop reading until ``Connection.memory_available``."""
        need = max(0, buffered - self.allowance)
        old = self._held.get(conn, 0)
        self.used += need - old
        if need:
            self._held[conn] = need
        else:
            self._held.pop(conn, None)
            self._waiting.pop(conn, None)
        if need < old:
            self._wake()
        if need and self.used > self.limit:
            self._waiting[conn] = None
            self._relieve()
            return False
        return True

    def release(self, conn: Connection) -> None:
        self._waiting.pop(conn, None)
        self.charge(conn, 0)

    def _wake(self) -> None:
        while self._waiting and self.used <= self.limit:
            conn = next(iter(self._waiting))
            del self._waiting[conn]
            conn.memory_available()

    def _relieve(self) -> None:
        """Someone waits: close the connections whose partial frames started longest ago, as
        long as that was at least ``evict_after`` ago; else look again when it will be."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        loop = asyncio.get_running_loop()
        while self._waiting and self.used > self.limit and self._held:
            oldest = min(self._held, key=lambda c: c.frame_started)
            due = oldest.frame_started + self.evict_after
            if due > loop.time():
                self._timer = loop.call_at(due, self._relieve)
                return
            self.evicted += 1
            oldest.evict(self.evict_after)  # releases its charge (connection_lost)
            self._held.pop(oldest, None)


def encode_ok(payload: bytes) -> bytes:
    """Serialized ttrpc.Response{status: {}, payload} without building message objects."""
    if not payload:
        return _OK_STATUS
    return _OK_STATUS + b"\x12" + varint(len(payload)) + payload


def encode_error(code: int, message: str) -> bytes:
    return request_pb2.Response(
        status=status_pb2.Status(code=code, message=message)
    ).SerializeToString()


class Connection(asyncio.Protocol):
    """Serves one ttrpc byte stream."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        *,
        peer: str = "",
        stats: ServerStats,
        shared_stream: bool = False,
        with_credentials: bool = False,
        limits: ConnectionLimits | None = None,
        memory: FrameMemory | None = None,
    ) -> None:
        self._dispatcher = dispatcher
        self._limits = limits or ConnectionLimits()
        self._memory = memory or FrameMemory(self._limits.frame_memory)
        self._peer = peer
        self._stats = stats
        self._with_credentials = with_credentials
        self._credentials: PeerCredentials | None = None
        # A serial port carries successive host connections on one byte stream, and the guest
        # may not see a quick reconnect: stream id 1 again means a new host session.
        self._shared_stream = shared_stream
        self._requests_seen = 0
        self._parser = framing.FrameParser()
        self._transport: asyncio.Transport | None = None
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._sizes: dict[int, int] = {}
        self._in_flight_bytes = 0
        self._reading_paused = False  # back-pressure: requests in flight
        self._memory_paused = False  # waiting for partial-frame memory
        self._refused = False
        self._charged = False
        self.frame_started = 0.0  # loop time the partial frame began (0: not inside a frame)
        self._frame_progress = 0.0
        self._idle_timer: asyncio.TimerHandle | None = None
        self._hangup_timer: asyncio.TimerHandle | None = None
        self._can_write: asyncio.Event | None = None
        self._loop = asyncio.get_running_loop()
        self.closed: asyncio.Future[None] = self._loop.create_future()

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # uvloop's are not subclasses
        if not self._shared_stream and self._stats.connections >= self._limits.max_connections:
            self._refused = True
            self._stats.refused += 1
            now = time.monotonic()
            if now - self._stats.refused_logged >= _REFUSED_LOG_INTERVAL:
                self._stats.refused_logged = now
                log.warning(
                    "connection refused: too many connections",
                    extra={
                        "peer": self._peer,
                        "limit": self._limits.max_connections,
                        "refused_so_far": self._stats.refused,
                    },
                )
            transport.abort()  # type: ignore[attr-defined]
            return
        self._stats.connections += 1
        if self._with_credentials:
            sock = transport.get_extra_info("socket")
            if sock is not None and sock.family == socket.AF_UNIX:
                raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, _UCRED.size)
                self._credentials = PeerCredentials(*_UCRED.unpack(raw))
        log.debug("connection opened", extra={"peer": self._peer})

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        events = self._parser.feed(data)
        for event in events:
            if self._transport is None:
                return  # a reply written here failed and closed the connection: drop the rest
            if isinstance(event, framing.Frame):
                self._on_frame(event)
            else:
                self._on_oversized(event)
        if self._parser.pending:
            self._in_frame(bool(events))
        elif self.frame_started:
            self.frame_started = 0.0
            if self._charged:
                self._charge(0)

    # -- partial frames: idle timeout and memory ---------------------------------------------

    def _in_frame(self, new_frame: bool) -> None:
        now = self._loop.time()
        if new_frame or not self.frame_started:
            self.frame_started = now
        self._frame_progress = now
        if self._idle_timer is None and not self._shared_stream and self._transport is not None:
            self._idle_timer = self._loop.call_at(
                now + self._limits.idle_frame_timeout, self._check_idle
            )
        buffered = self._parser.buffered
        if buffered > self._memory.allowance or self._charged:
            self._charge(buffered)

    def _charge(self, buffered: int) -> None:
        ok = self._memory.charge(self, buffered)
        self._charged = buffered > self._memory.allowance
        if not ok and not self._memory_paused and self._transport is not None:
            self._memory_paused = True
            self._transport.pause_reading()
            log.debug("connection waits for frame memory", extra={"peer": self._peer})

    def memory_available(self) -> None:
        """``FrameMemory``: the budget has room again; read on."""
        if not self._memory_paused:
            return
        self._memory_paused = False
        transport = self._transport
        if transport is not None and not self._reading_paused and not transport.is_closing():
            transport.resume_reading()

    def _check_idle(self) -> None:
        self._idle_timer = None
        transport = self._transport
        if transport is None or not self._parser.pending:
            return
        timeout = self._limits.idle_frame_timeout
        if self._loop.time() - self._frame_progress >= timeout:
            self._stats.stalled_closed += 1
            log.warning(
                "closing connection: no progress inside a frame",
                extra={"peer": self._peer, "seconds": timeout, "buffered": self._parser.buffered},
            )
            transport.abort()
            return
        self._idle_timer = self._loop.call_at(self._frame_progress + timeout, self._check_idle)

    def evict(self, after: float) -> None:
        """``FrameMemory``: close this connection to free the memory of its partial frame."""
        self._stats.evicted += 1
        log.warning(
            "closing connection: partial frame memory is exhausted and its frame is the oldest",
            extra={"peer": self._peer, "frame_seconds": after, "buffered": self._parser.buffered},
        )
        if self._transport is not None:
            self._transport.abort()
        self._memory.release(self)
        self._charged = False

    def eof_received(self) -> bool | None:
        return False  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self._transport = None
        if self._refused:
            return
        if self._idle_timer is not None:
            self._idle_timer.cancel()
            self._idle_timer = None
        if self._charged or self._memory_paused:
            self._memory.release(self)
            self._charged = self._memory_paused = False
        if self._hangup_timer is not None:
            self._hangup_timer.cancel()
            self._hangup_timer = None
        self._stats.connections -= 1
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        if self._can_write is not None:
            self._can_write.set()
        log.debug("connection closed", extra={"peer": self._peer, "cancelled_calls": len(tasks)})
        if not self.closed.done():
            self.closed.set_result(None)

    def pause_writing(self) -> None:
        if self._can_write is None:
            self._can_write = asyncio.Event()
        self._can_write.clear()

    def resume_writing(self) -> None:
        if self._can_write is not None:
            self._can_write.set()

    # -- frames ------------------------------------------------------------------------------

    def _on_frame(self, frame: framing.Frame) -> None:
        sid = frame.stream_id
        if sid % 2 == 0:
            self._stats.protocol_errors += 1
            self._reply_error(
                sid,
                Code.INVALID_ARGUMENT,
                f"stream id {sid} must be odd for client initiated streams",
            )
            return
        if frame.type == framing.TYPE_REQUEST:
            if frame.flags & framing.FLAG_REMOTE_OPEN:
                self._reply_error(sid, Code.UNIMPLEMENTED, "streaming calls are not supported")
                return
            if sid == 1 and self._shared_stream and self._requests_seen:
                self._new_session()
            self._requests_seen += 1
            if sid in self._tasks:
                self._reply_error(sid, Code.INVALID_ARGUMENT, f"stream id {sid} is already active")
                return
            started = time.perf_counter()
            try:
                envelope = request_pb2.Request.FromString(frame.data)
            except DecodeError as err:
                self._done(sid, "?", Code.INVALID_ARGUMENT, started)
                self._reply_error(sid, Code.INVALID_ARGUMENT, f"unmarshal request error: {err}")
                return
            # Keep only what the call needs: a parked call must not hold the frame or metadata.
            service, name, payload = envelope.service, envelope.method, envelope.payload
            timeout_nano = envelope.timeout_nano
            del envelope
            req: Message | None = None
            bound = self._dispatcher.now_bound(service, name)
            if bound is not None and (self._can_write is None or self._can_write.is_set()):
                req = self._serve_now(sid, bound, payload, started)
                if req is None:
                    return  # answered
            if len(self._tasks) >= MAX_IN_FLIGHT:
                self._reply_error(
                    sid,
                    Code.RESOURCE_EXHAUSTED,
                    f"too many calls in flight on this connection (limit {MAX_IN_FLIGHT})",
                )
                return
            task = self._loop.create_task(
                self._serve(sid, service, name, payload, timeout_nano, req, started)
            )
            self._tasks[sid] = task
            self._sizes[sid] = len(frame.data)
            self._in_flight_bytes += len(frame.data)
            over = self._in_flight_bytes > IN_FLIGHT_HIGH
            if over and not self._reading_paused and self._transport is not None:
                self._transport.pause_reading()
                self._reading_paused = True
                self._hangup_timer = self._loop.call_later(0.2, self._check_hangup)
                log.debug("connection paused", extra={"in_flight_bytes": self._in_flight_bytes})
            task.add_done_callback(functools.partial(self._forget, sid))
        elif frame.type == framing.TYPE_DATA:
            self._stats.protocol_errors += 1
            self._reply_error(
                sid, Code.INVALID_ARGUMENT, f"stream {sid}: data frames are not supported"
            )
        else:
            # Responses from a client and unknown types are ignored, as ttrpc-go/rust do.
            self._stats.protocol_errors += 1
            log.debug("ignored frame", extra={"stream": sid, "frame_type": frame.type})

    def _new_session(self) -> None:
        """A new host reuses the byte stream: the previous host's calls are cancelled, and their
        answers (which would carry stream ids of the new host's calls) are never sent."""
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        self._tasks.clear()
        self._sizes.clear()
        self._in_flight_bytes = 0
        self._requests_seen = 0
        log.info(
            "new host session on the stream",
            extra={"peer": self._peer, "cancelled_calls": len(tasks)},
        )

    def _forget(self, sid: int, task: object) -> None:
        if self._tasks.get(sid) is not task:
            return  # a task of a previous session, forgotten by _new_session
        self._tasks.pop(sid, None)
        self._in_flight_bytes -= self._sizes.pop(sid, 0)
        if self._reading_paused and self._in_flight_bytes <= IN_FLIGHT_LOW:
            self._reading_paused = False
            if self._hangup_timer is not None:
                self._hangup_timer.cancel()
                self._hangup_timer = None
            if (
                self._transport is not None
                and not self._transport.is_closing()
                and not self._memory_paused
            ):
                self._transport.resume_reading()

    def _check_hangup(self) -> None:
        """While reading is paused the loop does not see the peer go away: poll for it, so the
        calls of a vanished client are still cancelled."""
        self._hangup_timer = None
        transport = self._transport
        if transport is None or not self._reading_paused:
            return
        sock = transport.get_extra_info("socket")
        fd = sock.fileno() if sock is not None else transport.get_extra_info("fd")
        if fd is None or fd < 0:
            return
        poller = select.poll()
        poller.register(fd, select.POLLRDHUP)
        events = poller.poll(0)
        if events and events[0][1] & (select.POLLRDHUP | select.POLLHUP | select.POLLERR):
            log.debug("paused connection hung up", extra={"peer": self._peer})
            transport.abort()
            return
        self._hangup_timer = self._loop.call_later(0.2, self._check_hangup)

    def _on_oversized(self, event: framing.Oversized) -> None:
        self._stats.protocol_errors += 1
        if event.stream_id % 2 == 1 and event.type == framing.TYPE_REQUEST:
            self._reply_error(
                event.stream_id,
                Code.RESOURCE_EXHAUSTED,
                f"message length {event.length} exceeds maximum message size of "
                f"{framing.MAX_MESSAGE}",
            )

    async def _call(
        self, service: str, name: str, payload: bytes, req: Message | None
    ) -> tuple[Message | PreEncoded[Any], Method]:
        dispatcher = self._dispatcher
        if self._credentials is not None:
            peer_credentials.set(self._credentials)  # this call's task context only
        if dispatcher.is_deferred(service):
            await dispatcher.wait_ready()  # the AgentService stack is still loading
        bound = dispatcher.lookup(service, name)
        method = bound.method
        agent_log.rpc_method.set(method.name)
        if bound.handler is None:
            raise Dispatcher.unimplemented(method)
        if req is None:
            req = _decode_request(method, payload)
        del payload
        return await bound.handler(req), method

    def _serve_now(self, sid: int, bound: Bound, payload: bytes, started: float) -> Message | None:
        """Answer a call at once, without a task, if its handler's synchronous variant can
        (``Bound.now``: e.g. a ReadStdout with output already there). Returns None when answered,
        else the decoded request for the task that takes the call (nothing was consumed)."""
        method = bound.method
        path = method.path
        token = agent_log.rpc_method.set(method.name)
        try:
            req = _decode_request(method, payload)
            assert bound.now is not None
            resp = bound.now(req)
            if resp is None:
                return req
            body, parts, size = _encode_reply(path, method, resp)
            code = Code.OK
        except Exception as exc:
            code, message = to_status(exc, path)
            body, parts, size = encode_error(code, message), (), 0
        finally:
            agent_log.rpc_method.reset(token)
        self._done(sid, path, code, started)
        if parts:
            self._write_parts(sid, body, parts, size)
        else:
            self._write(sid, body)
        return None

    def _done(self, sid: int, path: str, code: int, started: float) -> None:
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rpc",
                extra={
                    "path": path,
                    "stream": sid,
                    "code": Code(code).name,
                    "duration_us": int((time.perf_counter() - started) * 1e6),
                },
            )
        self._stats.calls += 1

    def _write(self, stream_id: int, body: bytes) -> None:
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        transport.write(framing.encode(stream_id, framing.TYPE_RESPONSE, body))

    def _write_parts(
        self,
        stream_id: int,
        prefix: bytes,
        parts: Iterable[bytes | bytearray | memoryview],
        size: int,
    ) -> None:
        """One response frame from the envelope prefix and the payload parts, without joining
        them: one ``writelines`` call, so frames still never interleave."""
        transport = self._transport
        if transport is None or transport.is_closing():
            return
        header = framing.HEADER.pack(len(prefix) + size, stream_id, framing.TYPE_RESPONSE, 0)
        transport.writelines((header + prefix, *parts))

    def _reply_error(self, stream_id: int, code: int, message: str) -> None:
        self._write(stream_id, encode_error(code, message))

    # -- one call ------------------------------------------------------------------------------

    async def _serve(
        self,
        sid: int,
        service: str,
        name: str,
        payload: bytes,
        timeout_nano: int,
        req: Message | None,
        started: float,
    ) -> None:
        path = f"/{service}/{name}"
        code: int = Code.OK
        parts: tuple[Part, ...] = ()
        size = 0
        try:
            if timeout_nano > 0:
                timeout = timeout_nano / 1e9
                try:
                    async with asyncio.timeout(timeout):
                        resp, method = await self._call(service, name, payload, req)
                except TimeoutError:
                    raise RpcError(
                        Code.DEADLINE_EXCEEDED, f"{path}: timeout after {timeout:g}s"
                    ) from None
            else:
                resp, method = await self._call(service, name, payload, req)
            del payload, req
            body, parts, size = _encode_reply(path, method, resp)
        except asyncio.CancelledError:
            code = Code.CANCELLED
            raise
        except Exception as exc:
            code, message = to_status(exc, path)
            body, parts = encode_error(code, message), ()
        finally:
            self._done(sid, path, code, started)
        if parts:
            self._write_parts(sid, body, parts, size)
        else:
            self._write(sid, body)
        if self._can_write is not None and not self._can_write.is_set():
            await self._can_write.wait()  # back-pressure: the peer is not reading


def _decode_request(method: Method, payload: bytes) -> Message:
    try:
        req = method.request_type.FromString(payload)
    except DecodeError as err:
        raise RpcError(
            Code.INVALID_ARGUMENT,
            f"{method.path}: cannot decode {method.request_type.DESCRIPTOR.full_name}: {err}",
        ) from None
    check_request(req, payload)
    return req


def _encode_reply(
    path: str, method: Method, resp: Message | PreEncoded[Any]
) -> tuple[bytes, tuple[Part, ...], int]:
    """(envelope prefix or whole body, payload parts written after it, their size) of an OK
    Response; RpcError when the handler returned the wrong type or too much."""
    pre = resp if isinstance(resp, PreEncoded) else None  # serialized by the handler
    resp_type: type[Any] = type(resp) if pre is None else pre.message_type
    if not issubclass(resp_type, method.response_type):
        raise RpcError(
            Code.INTERNAL,
            f"{path}: handler returned {resp_type.__name__}, "
            f"expected {method.response_type.DESCRIPTOR.full_name}",
        )
    if pre is not None:
        parts, size = pre.parts, pre.size
    else:
        serialized = resp.SerializeToString()
        parts, size = (serialized,), len(serialized)
    if size + 16 > framing.MAX_MESSAGE:
        raise RpcError(
            Code.RESOURCE_EXHAUSTED,
            f"{path}: response of {size} bytes exceeds maximum message size "
            f"of {framing.MAX_MESSAGE}",
        )
    if len(parts) > 1 or size > _JOIN_MAX:
        return _OK_STATUS + b"\x12" + varint(size), parts, size
    return encode_ok(b"".join(parts)), (), size


class ServerStats:
    """Counters for metrics and tests."""

    __slots__ = (
        "calls",
        "connections",
        "evicted",
        "protocol_errors",
        "refused",
        "refused_logged",
        "stalled_closed",
    )

    def __init__(self) -> None:
        self.calls = 0
        self.connections = 0
        self.protocol_errors = 0
        self.refused = 0  # connections closed at once: over max_connections
        self.refused_logged = -_REFUSED_LOG_INTERVAL  # time.monotonic() of the last such log
        self.stalled_closed = 0  # closed: no progress inside a frame (idle_frame_timeout)
        self.evicted = 0  # closed: the oldest partial frame while frame memory was exhausted


class TtrpcServer:
    """Serves a ``Dispatcher`` on any number of listeners (``agent.rpc.transport``)."""

    def __init__(
        self,
        dispatcher: Dispatcher,
        limits: ConnectionLimits | None = None,
        *,
        peer_credentials: bool = False,
    ) -> None:
        self.dispatcher = dispatcher
        self.stats = ServerStats()
        self.limits = limits or ConnectionLimits()
        self.memory = FrameMemory(self.limits.frame_memory)
        self._listeners: list[Any] = []
        self._peer_credentials = peer_credentials

    def protocol_factory(
        self, peer: str = "", *, shared_stream: bool = False
    ) -> Callable[[], Connection]:
        def make() -> Connection:
            return Connection(
                self.dispatcher,
                peer=peer,
                stats=self.stats,
                shared_stream=shared_stream,
                with_credentials=self._peer_credentials,
                limits=self.limits,
                memory=self.memory,
            )

        return make

    async def listen(
        self,
        address: str,
        *,
        sock: socket.socket | None = None,
        serial: SerialHandover | None = None,
    ) -> None:
        listener = await listen(address, self.protocol_factory, sock=sock, serial=serial)
        self._listeners.append(listener)
        log.info("ttrpc server listening", extra={"address": address})

    async def adopt(self, connections: Iterable[EarlyConnection]) -> None:
        """Take over connections accepted in start-up phase 0 (``agent.rpc.early``): the replies
        not written yet go out first, then the input not parsed there is fed to the protocol."""
        loop = asyncio.get_running_loop()
        for conn in connections:
            factory = self.protocol_factory("early")
            if conn.sock.family == socket.AF_UNIX:
                transport, protocol = await loop.connect_accepted_socket(factory, conn.sock)
            else:
                protocol = factory()
                transport = FdTransport(conn.sock.detach(), protocol, is_socket=True)
            if conn.outbuf:
                transport.write(bytes(conn.outbuf))
            if conn.inbuf:
                protocol.data_received(bytes(conn.inbuf))

    async def close(self) -> None:
        for listener in self._listeners:
            await listener.close()
        self._listeners.clear()
