"""Responses a handler serializes itself, so large byte payloads are never copied.

``ReadStdout``/``ReadStderr`` replies are up to 2 MiB of process output. Building a
``ReadStreamResponse``, serializing it, wrapping it in the ttrpc ``Response`` and prefixing the
frame header copies the output four times; at hundreds of MiB/s those copies (and the fresh
allocations behind them) are most of the agent's CPU time. A handler may instead return
``PreEncoded``: the response message's wire bytes as a sequence of parts (a small prefix and the
payload object as it came from ``os.read``). The ttrpc server writes the parts after the frame
header and envelope prefix without joining them (``transport.writelines``); gRPC calls
``SerializeToString`` as for any message.

``bytes_field`` encodes one length-delimited field exactly as protobuf does (tag, varint length,
bytes; an empty proto3 ``bytes`` field is omitted), so the result is byte-identical to
``Message(field=data).SerializeToString()`` (tests/unit/rpc/test_encoded.py compares them).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Generic, TypeVar

from google.protobuf.message import Message

M = TypeVar("M", bound=Message)

Part = bytes | bytearray | memoryview


_ONE_BYTE = tuple(bytes((i,)) for i in range(0x80))


def varint(n: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if n < 0x80:
        if n < 0:
            raise ValueError(f"varint of a negative number: {n}")
        return _ONE_BYTE[n]
    if n < 0x4000:
        return bytes((n & 0x7F | 0x80, n >> 7))
    if n < 0x200000:
        return bytes((n & 0x7F | 0x80, n >> 7 & 0x7F | 0x80, n >> 14))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


class PreEncoded(Generic[M]):
    """The serialized form of a ``message_type`` message, as ``parts`` to write in order."""

    __slots__ = ("message_type", "parts", "size")

    def __init__(
        self, message_type: type[M], parts: Sequence[Part], size: int | None = None
    ) -> None:
        self.message_type = message_type
        self.parts = tuple(parts)
        self.size = sum(map(len, self.parts)) if size is None else size

    def SerializeToString(self) -> bytes:  # the protobuf Message spelling (gRPC serializes it)
        return b"".join(self.parts)

    def decode(self) -> M:
        """The message itself (tests, logging); copies."""
        return self.message_type.FromString(self.SerializeToString())


def bytes_field(message_type: type[M], field_number: int, *data: Part) -> PreEncoded[M]:
    """A message whose only set field is the ``bytes`` field ``field_number``, holding the
    concatenation of ``data`` (the pieces are not joined)."""
    size = sum(map(len, data))
    if not size:
        return PreEncoded(message_type, (), 0)
    head = varint(field_number << 3 | 2) + varint(size)
    if not all(data):  # leave out empty pieces
        data = tuple(d for d in data if len(d))
    return PreEncoded(message_type, (head, *data), len(head) + size)
