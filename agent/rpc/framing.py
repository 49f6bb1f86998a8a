"""ttrpc framing, without I/O (see shared/kata-protocol/ttrpc.md §2).

A frame is a 10-byte header -- length (u32 BE, bytes after the header), stream id (u32 BE),
type (u8: 1 request, 2 response, 3 data), flags (u8) -- followed by ``length`` bytes.
``FrameParser`` turns a byte stream into ``Frame`` events; a frame whose length exceeds
``MAX_MESSAGE`` becomes an ``Oversized`` event and its body is skipped, so one bad call does not
cost the connection.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from typing import NamedTuple

HEADER = struct.Struct(">IIBB")
HEADER_SIZE = HEADER.size  # 10
MAX_MESSAGE = 4 << 20  # 4 MiB of data per frame, both directions
COLLECT_MIN = 64 << 10  # bodies this large spanning chunks are joined once (FrameParser)

TYPE_REQUEST = 1
TYPE_RESPONSE = 2
TYPE_DATA = 3

FLAG_REMOTE_CLOSED = 0x01
FLAG_REMOTE_OPEN = 0x02
FLAG_NO_DATA = 0x04


class Frame(NamedTuple):  # a named tuple: a third of a frozen dataclass's cost to build
    stream_id: int
    type: int
    flags: int
    data: bytes


@dataclass(frozen=True, slots=True)
class Oversized:
    """A frame announced more than MAX_MESSAGE bytes; its body is being discarded."""

    stream_id: int
    type: int
    length: int


Event = Frame | Oversized


def encode(stream_id: int, type_: int, data: bytes, flags: int = 0) -> bytes:
    return HEADER.pack(len(data), stream_id, type_, flags) + data


class FrameParser:
    """Incremental parser: ``feed(bytes) -> list[Event]``. Memory use is bounded by one frame."""

    __slots__ = ("_buf", "_head", "_length", "_need", "_parts", "_skip", "max_message")

    def __init__(self, max_message: int = MAX_MESSAGE) -> None:
        self._buf = bytearray()
        self._skip = 0
        # A large body (>= COLLECT_MIN) arriving over several chunks is kept as the list of its
        # pieces and joined once when complete: one copy, instead of growing the buffer, slicing
        # it and converting the slice (three copies of every byte, each into fresh memory).
        self._parts: list[bytes | memoryview] = []
        self._need = 0
        self._length = 0
        self._head = (0, 0, 0)
        self.max_message = max_message

    def reset(self) -> None:
        self._buf.clear()
        self._skip = 0
        self._parts = []
        self._need = 0

    @property
    def buffered(self) -> int:
        """Bytes held for the frame in progress."""
        return len(self._buf) + (self._length - self._need if self._need else 0)

    @property
    def pending(self) -> bool:
        """Inside a frame: part of a header or body received (or an oversized body being
        skipped), the rest not yet."""
        return bool(self._buf) or self._need > 0 or self._skip > 0

    def _collect(
        self, sid: int, typ: int, flags: int, length: int, body: bytes | memoryview
    ) -> None:
        self._head = (sid, typ, flags)
        self._parts = [body]
        self._length = length
        self._need = length - len(body)

    def feed(self, chunk: bytes) -> list[Event]:
        events: list[Event] = []
        if self._need:
            take = min(self._need, len(chunk))
            if take == len(chunk):
                self._parts.append(chunk)
            else:
                self._parts.append(
                    memoryview(chunk)[:take] if isinstance(chunk, bytes) else bytes(chunk[:take])
                )
            self._need -= take
            if self._need:
                return events
            events.append(Frame(*self._head, b"".join(self._parts)))
            self._parts = []
            if take == len(chunk):
                return events
            chunk = chunk[take:]
        if self._skip:
            if len(chunk) <= self._skip:
                self._skip -= len(chunk)
                return events
            chunk = chunk[self._skip :]
            self._skip = 0
        buf = self._buf
        if not buf and len(chunk) >= HEADER_SIZE:
            # Fast path: whole frames straight from the chunk, no copy into the buffer.
            view = chunk
            pos = 0
            end = len(view)
            while end - pos >= HEADER_SIZE:
                length, sid, typ, flags = HEADER.unpack_from(view, pos)
                if length > self.max_message:
                    events.append(Oversized(sid, typ, length))
                    pos += HEADER_SIZE
                    available = end - pos
                    if length > available:
                        self._skip = length - available
                        return events
                    pos += length
                    continue
                if end - pos - HEADER_SIZE < length:
                    if length >= COLLECT_MIN and isinstance(chunk, bytes):
                        self._collect(
                            sid, typ, flags, length, memoryview(chunk)[pos + HEADER_SIZE :]
                        )
                        return events
                    break
                start = pos + HEADER_SIZE
                events.append(Frame(sid, typ, flags, bytes(view[start : start + length])))
                pos = start + length
            if pos < end:
                buf += view[pos:]
            return events
        buf += chunk
        pos = 0
        end = len(buf)
        while end - pos >= HEADER_SIZE:
            length, sid, typ, flags = HEADER.unpack_from(buf, pos)
            if length > self.max_message:
                events.append(Oversized(sid, typ, length))
                pos += HEADER_SIZE
                available = end - pos
                if length > available:
                    self._skip = length - available
                    pos = end
                    break
                pos += length
                continue
            if end - pos - HEADER_SIZE < length:
                if length >= COLLECT_MIN:
                    self._collect(sid, typ, flags, length, bytes(buf[pos + HEADER_SIZE :]))
                    pos = end
                break
            start = pos + HEADER_SIZE
            events.append(Frame(sid, typ, flags, bytes(buf[start : start + length])))
            pos = start + length
        del buf[:pos]
        return events
