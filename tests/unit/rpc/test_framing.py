"""agent.rpc.framing: the ttrpc frame parser, fed in every possible chunking."""

from __future__ import annotations

import random

from agent.rpc import framing
from agent.rpc.framing import Frame, FrameParser, Oversized


def _feed_all(parser: FrameParser, data: bytes, cuts: list[int]) -> list[framing.Event]:
    events: list[framing.Event] = []
    prev = 0
    for cut in [*cuts, len(data)]:
        events += parser.feed(data[prev:cut])
        prev = cut
    return events


def test_header_layout() -> None:
    assert framing.encode(3, framing.TYPE_RESPONSE, b"\x0a\x00") == bytes.fromhex(
        "00000002 00000003 02 00 0a00".replace(" ", "")
    )


def test_frames_survive_any_chunking() -> None:
    rng = random.Random(1)
    frames = [
        Frame(2 * i + 1, 1 + i % 3, i % 5, rng.randbytes(rng.randrange(0, 300))) for i in range(40)
    ]
    stream = b"".join(framing.encode(f.stream_id, f.type, f.data, f.flags) for f in frames)
    for _ in range(200):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(0, 30)))
        assert _feed_all(FrameParser(), stream, cuts) == frames
    # byte by byte
    assert _feed_all(FrameParser(), stream, list(range(1, len(stream)))) == frames


def test_oversized_frame_is_skipped_and_parsing_resumes() -> None:
    parser = FrameParser(max_message=100)
    big = framing.encode(5, 1, b"z" * 1000)
    good = framing.encode(7, 1, b"ok")
    for cuts in ([], [3], [10], [500], [1009], [1010, 1011]):
        parser = FrameParser(max_message=100)
        assert _feed_all(parser, big + good, cuts) == [Oversized(5, 1, 1000), Frame(7, 1, 0, b"ok")]
        assert parser.buffered == 0


def test_memory_is_bounded_by_one_frame() -> None:
    parser = FrameParser()
    # A header announcing 4 GiB: nothing is buffered while the body is skipped.
    header = framing.HEADER.pack(0xFFFFFFFF, 1, 1, 0)
    assert parser.feed(header) == [Oversized(1, 1, 0xFFFFFFFF)]
    for _ in range(100):
        assert parser.feed(b"\0" * 65536) == []
        assert parser.buffered == 0


def test_partial_header_is_kept() -> None:
    parser = FrameParser()
    assert parser.feed(b"\x00\x00\x00") == []
    assert parser.buffered == 3
    assert parser.feed(b"\x01\x00\x00\x00\x01\x01\x00X") == [Frame(1, 1, 0, b"X")]
    assert parser.buffered == 0


def test_reset_drops_partial_state() -> None:
    parser = FrameParser()
    parser.feed(framing.HEADER.pack(0xFFFFFFFF, 1, 1, 0))
    parser.reset()
    assert parser.feed(framing.encode(3, 1, b"a")) == [Frame(3, 1, 0, b"a")]


def test_large_frames_survive_any_chunking() -> None:
    """Bodies of COLLECT_MIN and more that span chunks are collected and joined once."""
    rng = random.Random(2)
    sizes = [framing.COLLECT_MIN - 1, framing.COLLECT_MIN, 5, 300_000, 0, 1 << 20, 7]
    frames = [
        Frame(2 * i + 1, framing.TYPE_RESPONSE, 0, rng.randbytes(n)) for i, n in enumerate(sizes)
    ]
    stream = b"".join(framing.encode(f.stream_id, f.type, f.data) for f in frames)
    for _ in range(30):
        cuts = sorted(rng.sample(range(1, len(stream)), rng.randrange(0, 60)))
        parser = FrameParser()
        assert _feed_all(parser, stream, cuts) == frames
        assert parser.buffered == 0
    # a big body delivered in 1-byte and 3-byte pieces around the header
    for step in (1, 3, 65536, 262144):
        cuts = list(range(step, len(stream), step)) if step > 3 else list(range(step, 20, step))
        assert _feed_all(FrameParser(), stream, cuts) == frames


def test_reset_drops_a_collected_body() -> None:
    parser = FrameParser()
    parser.feed(framing.HEADER.pack(framing.COLLECT_MIN * 2, 1, 2, 0) + b"x" * 1000)
    assert parser.buffered == 1000
    parser.reset()
    assert parser.buffered == 0
    assert parser.feed(framing.encode(3, 1, b"a")) == [Frame(3, 1, 0, b"a")]
