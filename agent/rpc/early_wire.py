"""The ttrpc wire bits both phase-0 servers need (``agent.rpc.early`` for stream listeners,
``agent.rpc.early_serial`` for a virtio-serial port): frame constants, the constant Health.Check
reply, a recogniser for a plain Check request and `take_check`, which answers one.

Imports only ``struct``: the serial phase 0 runs on PID 1's critical path in a guest under TCG,
where every import is slow.
"""

from __future__ import annotations

import struct

HEADER = struct.Struct(">IIBB")
MAX_MESSAGE = 4 << 20
# A plain Check (service, method, maybe a deadline and a little metadata) is far smaller: a larger
# frame ends phase 0 for its connection at once, so phase 0 never buffers a big partial frame.
CHECK_MAX = 4096
TYPE_REQUEST = 1
TYPE_RESPONSE = 2
# ttrpc.Response{status: {}, payload: HealthCheckResponse{status: SERVING}}
CHECK_REPLY_BODY = b"\x0a\x00\x12\x02\x08\x01"


def _varint(data: bytes | bytearray, pos: int, end: int) -> tuple[int, int]:
    value = shift = 0
    while pos < end and shift <= 63:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if not b & 0x80:
            return value, pos
        shift += 7
    raise ValueError("bad varint")


def is_plain_check(body: bytes | bytearray) -> bool:
    """True for a ttrpc.Request whose service is grpc.Health and method Check (any payload,
    deadline or metadata: Check ignores them)."""
    service = method = None
    pos, end = 0, len(body)
    try:
        while pos < end:
            key, pos = _varint(body, pos, end)
            field_no, wire = key >> 3, key & 7
            if wire == 0:
                _, pos = _varint(body, pos, end)
            elif wire == 2:
                length, pos = _varint(body, pos, end)
                if pos + length > end:
                    return False
                if field_no == 1:
                    service = bytes(body[pos : pos + length])
                elif field_no == 2:
                    method = bytes(body[pos : pos + length])
                pos += length
            else:
                return False
    except ValueError:
        return False
    return service == b"grpc.Health" and method == b"Check"


def take_check(buf: bytearray) -> bytes | None:
    """Answer the next frame of ``buf`` if it is a plain Health.Check request: the frame is
    removed from ``buf`` and the reply frame returned. ``b""``: ``buf`` holds no whole frame yet
    (nothing removed). None: the next frame is anything else, or too large (nothing removed):
    phase 0 is over for this connection and the full server takes its bytes as they are."""
    if len(buf) < HEADER.size:
        return b""
    length, sid, typ, flags = HEADER.unpack_from(buf)
    if length > CHECK_MAX:
        return None
    if len(buf) < HEADER.size + length:
        return b""
    body = buf[HEADER.size : HEADER.size + length]
    if typ != TYPE_REQUEST or flags or sid % 2 == 0 or not is_plain_check(body):
        return None
    del buf[: HEADER.size + length]
    return HEADER.pack(len(CHECK_REPLY_BODY), sid, TYPE_RESPONSE, 0) + CHECK_REPLY_BODY
