"""cgroup managers for containers: v1 (legacy/hybrid hosts such as the dev and CI machines) and
v2 (unified, what Kata guests use), chosen by probing the hierarchy root.

API summary
-----------
* `manager_for(cgroups_path, *, container_id, root=Path("/sys/fs/cgroup"), mode=None)
  -> CgroupManager`: resolve `linux.cgroupsPath` (empty → `/<container_id>`; kata's
  `slice:prefix:name` → `slice/prefix/name`; see `paths.py`) and return a `V1Manager` or a
  `V2Manager` (`mode` forces one; by default `detect_mode(root)`). Nothing is created yet.
  `layout`: the hierarchy layout as `probe_layout(root)` returned it, so a long-lived caller
  (the engine's spawner) probes once, not per container.
* `probe_layout(root) -> CgroupLayout | None`: `(mode, v1 controllers)`; None while nothing is
  mounted under `root` yet (probe again later).
* `CgroupManager` (Protocol): `create()`, `add_pid(pid)`, `apply(resources)` / `update(...)`
  (an `oci.spec.LinuxResources`), `freeze(timeout=)` (waits for FROZEN), `thaw()`,
  `freezer_state()`, `can_freeze()`, `freezer_file()` (read later by `frozen(file)` without a
  manager), `refresh_cpuset(cpus)` (after CPU hot-plug), `pids()` (recursive),
  `kill_all(sig=SIGKILL, timeout=)`
  (freeze, signal every pid, thaw; v2 uses cgroup.kill; waits until empty for SIGKILL),
  `stats() -> CgroupStats` (typed dataclasses in `stats.py`), `oom_watcher() -> OomWatcher`,
  `destroy(timeout=)` (removes the cgroup and its children, retrying while EBUSY), `exists()`.
* OOM notification: `OomWatcher.fileno()` to hand to `loop.add_reader`, non-blocking `read()`
  returning the number of new OOM events, `gone` once the cgroup was removed, `close()`.
* Errors: `CgroupError` and its meaning-named subclasses (`CgroupNotFound`, `CgroupBusy`,
  `CgroupInvalid`, `CgroupUnsupported`), each naming the step, the file and the errno:
  `write 100 to /sys/fs/cgroup/memory/c1/memory.limit_in_bytes: EBUSY (Device or resource busy)`.

All methods do plain, fast cgroupfs file I/O and may be called from an event loop, except
`freeze`, `kill_all` and `destroy`, which can wait (up to their timeout): run those through
`asyncio.to_thread`. Device rules are enforced on v1 (devices.allow/deny) but **not on v2**
(that needs an eBPF program; see `v2.py`).
"""

from __future__ import annotations

import signal
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Protocol

from .errors import CgroupBusy, CgroupError, CgroupInvalid, CgroupNotFound, CgroupUnsupported
from .fs import parse_flat_keyed
from .oom import OomWatcher
from .paths import DEFAULT_ROOT, CgroupMode, detect_mode, resolve_cgroups_path, v1_controllers
from .stats import CgroupStats
from .v1 import V1Manager
from .v2 import V2Manager

if TYPE_CHECKING:
    from oci.spec import LinuxResources

CgroupLayout = tuple[CgroupMode, dict[str, Path]]
"""(mode, v1 controller -> hierarchy directory), as ``probe_layout`` returns it."""

__all__ = [
    "DEFAULT_ROOT",
    "CgroupBusy",
    "CgroupError",
    "CgroupInvalid",
    "CgroupLayout",
    "CgroupManager",
    "CgroupMode",
    "CgroupNotFound",
    "CgroupStats",
    "CgroupUnsupported",
    "OomWatcher",
    "V1Manager",
    "V2Manager",
    "detect_mode",
    "frozen",
    "manager_for",
    "probe_layout",
    "resolve_cgroups_path",
    "v1_controllers",
]


class CgroupManager(Protocol):
    """One container's cgroup, on whichever hierarchy the host has."""

    @property
    def version(self) -> int: ...

    @property
    def path(self) -> PurePosixPath: ...

    def exists(self) -> bool: ...

    def create(self) -> None: ...

    def add_pid(self, pid: int) -> None: ...

    def self_join_files(self) -> tuple[str, ...]:
        """Files a single-threaded process writes "0" into to move itself into the cgroup
        without the kernel's global threadgroup lock (v1 ``tasks``); empty: use add_pid."""
        ...

    def apply(self, r: LinuxResources) -> None: ...

    def update(self, r: LinuxResources) -> None: ...

    def refresh_cpuset(self, cpus: str | None) -> None:
        """Give the cgroup the CPUs that came online (``cpus``: its own list, if it has one)."""
        ...

    def can_freeze(self) -> bool: ...

    def freezer_state(self) -> str: ...

    def freezer_file(self) -> str:
        """The file that tells whether the cgroup is frozen (see ``frozen``); "" without a
        freezer."""
        ...

    def freeze(self, *, timeout: float = 10.0) -> None: ...

    def thaw(self) -> None: ...

    def pids(self) -> list[int]: ...

    def kill_all(self, sig: int = signal.SIGKILL, *, timeout: float = 10.0) -> None: ...

    def stats(self) -> CgroupStats: ...

    def oom_watcher(self) -> OomWatcher: ...

    def destroy(self, *, timeout: float = 5.0) -> None: ...


def manager_for(
    cgroups_path: str | None,
    *,
    container_id: str,
    root: Path = DEFAULT_ROOT,
    mode: CgroupMode | None = None,
    layout: CgroupLayout | None = None,
) -> CgroupManager:
    """The manager for a container's cgroup (see the module docstring)."""
    path = resolve_cgroups_path(cgroups_path, container_id)
    if layout is not None and mode is None:
        if layout[0] is CgroupMode.V2:
            return V2Manager(path, root=root)
        return V1Manager(path, root=root, controllers=layout[1])
    if (mode or detect_mode(root)) is CgroupMode.V2:
        return V2Manager(path, root=root)
    return V1Manager(path, root=root)


def frozen(freezer_file: str) -> bool:
    """Whether the cgroup is frozen, from its ``CgroupManager.freezer_file()`` alone: a caller
    that kept the file (the engine's state record) needs no manager to ask."""
    if not freezer_file:
        return False
    try:
        with open(freezer_file, encoding="utf-8") as f:
            text = f.read()
    except OSError:
        return False
    if freezer_file.endswith("freezer.state"):  # v1: THAWED, FREEZING or FROZEN
        return text.strip() == "FROZEN"
    return parse_flat_keyed(text).get("frozen") == 1  # v2: cgroup.events


def probe_layout(root: Path = DEFAULT_ROOT) -> CgroupLayout | None:
    """The hierarchy layout under ``root``: v2, or v1 and its controllers' directories; None
    when nothing is mounted there yet."""
    mode = detect_mode(root)
    if mode is CgroupMode.V2:
        return (mode, {})
    controllers = v1_controllers(root)
    return (mode, controllers) if controllers else None
