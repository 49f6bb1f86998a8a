from __future__ import annotations

import pytest

from agent.errors import InvalidArgument
from agent.storage import mountopts as m
from oci.syscalls import consts as c


@pytest.mark.parametrize(
    ("options", "flags", "data", "prop"),
    [
        ([], 0, "", ()),
        (["ro", "nosuid", "nodev"], c.MS_RDONLY | c.MS_NOSUID | c.MS_NODEV, "", ()),
        (["ro", "rw"], 0, "", ()),
        (["rbind", "rprivate"], c.MS_BIND | c.MS_REC, "", (c.MS_PRIVATE | c.MS_REC,)),
        (["size=64m", "mode=1777"], 0, "size=64m,mode=1777", ()),
        (["noexec,nosuid", "mode=0755,uid=0"], c.MS_NOEXEC | c.MS_NOSUID, "mode=0755,uid=0", ()),
        (["dax", "io.katacontainers.fs-opt.overlay-rw", "X-kata.x=1"], 0, "dax", ()),
        (["relatime", "shared"], c.MS_RELATIME, "", (c.MS_SHARED,)),
        (["nosymfollow", "nodev"], c.MS_NOSYMFOLLOW | c.MS_NODEV, "", ()),
    ],
)
def test_parse(options: list[str], flags: int, data: str, prop: tuple[int, ...]) -> None:
    got = m.parse(options)
    assert got.flags == flags
    assert got.data_str == data
    assert got.propagation == prop


def test_value_and_without() -> None:
    opts = ["pagesize=2097152,size=4194304", "fsgid=10"]
    assert m.value(opts, "pagesize") == "2097152"
    assert m.value(opts, "size") == "4194304"
    assert m.value(opts, "mode") is None
    assert m.without(opts, "fsgid", "size") == ["pagesize=2097152"]


@pytest.mark.parametrize(
    ("text", "n"),
    [("4096", 4096), ("2M", 2 << 20), ("2Mi", 2 << 20), ("1g", 1 << 30), ("0x1000", 4096)],
)
def test_parse_size(text: str, n: int) -> None:
    assert m.parse_size(text, what="t") == n


@pytest.mark.parametrize("text", ["", "abc", "-1", "12q"])
def test_parse_size_rejects(text: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid size"):
        m.parse_size(text, what="t")
