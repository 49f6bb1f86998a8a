"""The engine's use of ``oci.cgroups``: the container's manager, its creation with runc's default
device rules, the files stage-1 joins it through, and a best-effort removal at delete."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import oci.cgroups
from oci import spec as ocispec
from oci.cgroups import CgroupBusy, CgroupError, CgroupLayout, CgroupManager, manager_for

from .errors import InitError

log = logging.getLogger(__name__)

# Device cgroup rules runc always adds after the spec's (the default /dev nodes, ptys, tun).
_DEFAULT_DEVICE_RULES: tuple[tuple[str, int | None, int | None, str], ...] = (
    ("c", None, None, "m"),
    ("b", None, None, "m"),
    ("c", 1, 3, "rwm"),
    ("c", 1, 5, "rwm"),
    ("c", 1, 7, "rwm"),
    ("c", 1, 8, "rwm"),
    ("c", 1, 9, "rwm"),
    ("c", 5, 0, "rwm"),
    ("c", 5, 1, "rwm"),
    ("c", 5, 2, "rwm"),
    ("c", 136, None, "rwm"),
    ("c", 10, 200, "rwm"),
)


def manager(
    container_id: str, cgroups_path: str | None, layout: CgroupLayout | None = None
) -> CgroupManager:
    """The container's cgroup (``linux.cgroupsPath``); ``layout``: probed already, or None."""
    return manager_for(cgroups_path, container_id=container_id, layout=layout)


@contextmanager
def errors(step: str) -> Iterator[None]:
    """A CgroupError inside becomes InitError(step, ...)."""
    try:
        yield
    except CgroupError as err:
        raise InitError(step, str(err), err.errno or 0) from None


def create(mgr: CgroupManager, pid: int, linux: ocispec.Linux) -> tuple[str, ...]:
    """Create the cgroup with the spec's resources and put stage-1 (``pid``) in it; or, when
    the hierarchy allows it, return the files stage-1 joins through itself (``join``)."""
    with errors("create cgroup"):
        mgr.create()
        resources = with_default_device_rules(linux)
        joined = join(mgr, pid)
        mgr.apply(resources)
        return joined


def join(mgr: CgroupManager, pid: int) -> tuple[str, ...]:
    """Put ``pid`` into the existing cgroup, or return the files it writes "0" into to join
    it itself, first thing after "go" (``CgroupManager.self_join_files``: cheaper on v1)."""
    files = mgr.self_join_files()
    if not files:
        mgr.add_pid(pid)
    return files


def destroy(container_id: str, mgr: CgroupManager) -> None:
    """Remove the cgroup, killing what is left in it first; a failure is logged, never raised
    (a leftover cgroup must not fail a delete)."""
    try:
        try:
            mgr.destroy(timeout=0)  # the usual case, an empty cgroup: removed at once
            return
        except CgroupBusy:
            pass  # processes left, or still exiting: kill them, then wait for the removal
        mgr.kill_all()
        mgr.destroy()
    except Exception as err:
        log.warning("container %s: remove cgroup %s: %s", container_id, mgr.path, err)


def frozen(recorded: dict[str, Any], mgr: Callable[[], CgroupManager]) -> bool:
    """Whether the container's cgroup is frozen: through the freezer file its state record
    keeps (``record_of``), else through its manager (``mgr()``)."""
    if "freezer" in recorded:
        return oci.cgroups.frozen(str(recorded["freezer"]))
    try:
        m = mgr()
        return m.can_freeze() and m.freezer_state() == "FROZEN"
    except Exception:
        return False


def record_of(mgr: CgroupManager) -> dict[str, Any]:
    """What the state record keeps of the container's cgroup."""
    return {
        "path": str(mgr.path),
        "version": mgr.version,
        "freezer": mgr.freezer_file(),
        # exec's stage-1 joins the cgroup through these (see ``join``)
        "join": list(mgr.self_join_files()),
    }


def thaw(mgr: CgroupManager) -> None:
    try:
        mgr.thaw()
    except Exception as err:  # the processes are killed next anyway
        log.debug("thaw %s: %s", mgr.path, err)


def pids(mgr: CgroupManager) -> list[int] | None:
    """Every pid in the cgroup; None when it cannot be read (gone, never created)."""
    try:
        return mgr.pids()
    except Exception:
        return None


def with_default_device_rules(linux: ocispec.Linux) -> ocispec.LinuxResources:
    res = linux.resources or ocispec.LinuxResources()
    extra = [
        ocispec.LinuxDeviceCgroup(allow=True, type=t, major=ma, minor=mi, access=a)
        for t, ma, mi, a in _DEFAULT_DEVICE_RULES
    ]
    extra += [
        ocispec.LinuxDeviceCgroup(
            allow=True,
            type="b" if d.type == "b" else "c",
            major=d.major,
            minor=d.minor,
            access="rwm",
        )
        for d in linux.devices
        if d.type != "p"
    ]
    return dataclasses.replace(res, devices=(*res.devices, *extra))
