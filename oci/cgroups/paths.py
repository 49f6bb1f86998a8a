"""cgroupsPath semantics (pure), and probing which cgroup layout a host has.

* empty/absent `linux.cgroupsPath` → `/<container id>`;
* kata's systemd-style `slice:prefix:name` → `slice/prefix/name` (":" replaced by "/"), as kata's
  agent does when it drives cgroupfs directly;
* anything else is a path below the hierarchy root; a relative path is taken from the root too
  (not from the runtime's own cgroup as runc does: the in-guest agent runs in the root cgroup).
"""

from __future__ import annotations

import enum
import re
from pathlib import Path, PurePosixPath

from .errors import CgroupInvalid

DEFAULT_ROOT = Path("/sys/fs/cgroup")

_SYSTEMD_FORM = re.compile(r"^[\w.\-]*:[\w.\-]*:[\w.\-]*$")


class CgroupMode(enum.StrEnum):
    V1 = "v1"
    """Legacy or hybrid: one hierarchy per controller under <root>/<controller>."""
    V2 = "v2"
    """Unified: a single cgroup2 hierarchy at <root>."""


def resolve_cgroups_path(cgroups_path: str | None, container_id: str) -> PurePosixPath:
    """The absolute cgroup path (relative to a hierarchy root) for a container."""
    if not cgroups_path:
        if not container_id or "/" in container_id or container_id in (".", ".."):
            raise CgroupInvalid(f"invalid container id {container_id!r} for a cgroup name")
        return PurePosixPath("/", container_id)
    raw = cgroups_path
    if _SYSTEMD_FORM.match(raw):
        raw = raw.replace(":", "/")
    parts = [p for p in raw.split("/") if p and p != "."]
    if any(p == ".." for p in parts):
        raise CgroupInvalid(f"cgroupsPath {cgroups_path!r} must not contain '..'")
    if not parts:
        raise CgroupInvalid(f"cgroupsPath {cgroups_path!r} names the root cgroup")
    return PurePosixPath("/", *parts)


def detect_mode(root: Path = DEFAULT_ROOT) -> CgroupMode:
    """V2 when `root` itself is a cgroup2 mount (it has cgroup.controllers), else V1."""
    return CgroupMode.V2 if (root / "cgroup.controllers").exists() else CgroupMode.V1


def v1_controllers(root: Path = DEFAULT_ROOT) -> dict[str, Path]:
    """Controller name → hierarchy mount directory, from the directories under `root`
    ("cpu,cpuacct" serves both cpu and cpuacct; named hierarchies and "unified" are skipped)."""
    out: dict[str, Path] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return out
    for entry in entries:
        if entry.name in ("unified", "systemd") or entry.name.startswith("name="):
            continue
        if not entry.is_dir() or not (entry / "cgroup.procs").exists():
            continue
        real = entry.resolve()  # "cpu" -> "cpu,cpuacct": one hierarchy, one directory
        for ctrl in real.name.split(","):
            out.setdefault(ctrl, real)
    return out
