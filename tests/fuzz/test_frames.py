"""The ttrpc frame decoder (agent.rpc.framing.FrameParser) against a reference: however the
byte stream is cut into reads, the same frames come out, an oversized frame is reported and
skipped, nothing is buffered beyond the frame in progress, and nothing ever raises."""

from __future__ import annotations

from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agent.rpc import framing

MAX = 4096  # a small maximum, so oversized frames are cheap to generate


@st.composite
def streams(draw: st.DrawFn) -> tuple[bytes, list[Any]]:
    """A byte stream of frames (some oversized, some bodies crossing COLLECT_MIN) and the
    events a correct decoder reports, optionally followed by a partial frame."""
    data = b""
    expected: list[Any] = []
    for _ in range(draw(st.integers(0, 6))):
        sid = draw(st.integers(0, 2**32 - 1))
        typ = draw(st.integers(0, 255))
        flags = draw(st.integers(0, 255))
        if draw(st.booleans()) and draw(st.booleans()):
            length = draw(st.integers(MAX + 1, MAX + 3000))
            data += framing.HEADER.pack(length, sid, typ, flags) + b"\x01" * length
            expected.append(framing.Oversized(sid, typ, length))
        else:
            body = draw(st.binary(max_size=MAX))
            data += framing.encode(sid, typ, body, flags)
            expected.append(framing.Frame(sid, typ, flags, body))
    tail = draw(st.binary(max_size=20))
    return data + tail, expected


@given(streams(), st.lists(st.integers(1, 5000), max_size=40))
def test_any_cut_gives_the_same_frames(stream: tuple[bytes, list[Any]], cuts: list[int]) -> None:
    data, expected = stream
    parser = framing.FrameParser(max_message=MAX)
    events: list[Any] = []
    pos = 0
    for n in cuts:
        chunk = data[pos : pos + n]
        if not chunk:
            break
        events += parser.feed(chunk)
        assert parser.buffered <= MAX + framing.HEADER_SIZE
        pos += n
    if pos < len(data):
        events += parser.feed(data[pos:])
    got = [e for e in events]
    # the trailing garbage may itself parse as frames: compare the prefix
    assert got[: len(expected)] == expected


@given(st.binary(max_size=3 * MAX), st.lists(st.integers(1, 700), max_size=30))
def test_garbage_never_raises_and_stays_bounded(data: bytes, cuts: list[int]) -> None:
    parser = framing.FrameParser(max_message=MAX)
    pos = 0
    for n in [*cuts, len(data)]:
        chunk = data[pos : pos + n]
        if not chunk:
            break
        for event in parser.feed(chunk):
            assert isinstance(event, framing.Frame | framing.Oversized)
            if isinstance(event, framing.Frame):
                assert len(event.data) <= MAX
        assert parser.buffered <= MAX + framing.HEADER_SIZE
        pos += n
