"""/proc/self/mountinfo reading (the parser is pure; the reader is one small file read)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class MountEntry:
    mount_id: int
    parent_id: int
    major_minor: str
    root: str
    mount_point: str
    options: str
    fstype: str
    source: str
    super_options: str


def _unescape(field: str) -> str:
    # mountinfo escapes space, tab, newline and backslash as \ooo octal
    out = []
    i = 0
    while i < len(field):
        if field[i] == "\\" and len(field[i + 1 : i + 4]) == 3 and field[i + 1 : i + 4].isdigit():
            out.append(chr(int(field[i + 1 : i + 4], 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def parse(text: str) -> list[MountEntry]:
    entries = []
    for line in text.splitlines():
        if not line:
            continue
        left, _, right = line.partition(" - ")
        lf = left.split(" ")
        rf = right.split(" ")
        if len(lf) < 6 or len(rf) < 3:
            continue
        entries.append(
            MountEntry(
                mount_id=int(lf[0]),
                parent_id=int(lf[1]),
                major_minor=lf[2],
                root=_unescape(lf[3]),
                mount_point=_unescape(lf[4]),
                options=lf[5],
                fstype=rf[0],
                source=_unescape(rf[1]),
                super_options=rf[2],
            )
        )
    return entries


def read(proc: Path = Path("/proc")) -> list[MountEntry]:
    return parse((proc / "self" / "mountinfo").read_text())


def find(mount_point: str | Path, proc: Path = Path("/proc")) -> MountEntry | None:
    """The topmost mount at exactly `mount_point`, or None."""
    target = str(mount_point).rstrip("/") or "/"
    found = None
    for e in read(proc):
        if e.mount_point == target:
            found = e
    return found


def is_mounted(mount_point: str | Path, proc: Path = Path("/proc")) -> bool:
    return find(mount_point, proc) is not None


def mounts_below(prefix: str | Path, proc: Path = Path("/proc")) -> list[MountEntry]:
    p = str(prefix).rstrip("/")
    return [e for e in read(proc) if e.mount_point == p or e.mount_point.startswith(p + "/")]


def has_id(mount_id: int, proc: Path = Path("/proc")) -> bool:
    return any(e.mount_id == mount_id for e in read(proc))
