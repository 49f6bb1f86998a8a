"""PID 1's duties, as Kata's agent does them in init mode: set the guest up, then power it off.

Nothing here acts unless ``os.getpid() == 1``: on a host (tests, developers) every entry point is
a no-op. The guest's ``/init`` (``agent.boot.init``) calls ``setup`` with the BootArgs: on the main
thread before the agent starts, or, when it opened the agent's serial port first, in its worker
thread with ``done=`` the early steps it ran already (``agent.boot.pid1_early``). Then it runs the
agent through ``run_as_init``, which powers the VM off when the agent ends (DestroySandbox, a bad
configuration, a fatal error), as Kata's agent does.

``setup`` runs these named steps (each timed and logged; a failing step is logged with its name and
errno, and only the steps marked *fatal* stop the boot):

1. ``switch-root``  ``agent.boot.pid1_early.switch_root`` when ``/`` is the initramfs (unless
                    ``agent.switchroot=0``). *fatal*
2. ``mounts``       proc, sysfs, devtmpfs, /dev/pts (own instance, /dev/ptmx -> pts/ptmx),
                    /dev/shm, /run (Kata's INIT_ROOTFS_MOUNTS). *fatal*
3. ``modules``      ``finit_module`` of the load list up to the channel drivers; the rest is loaded
                    once the agent listens (``wait_for_modules``, phase 1), before AgentService
                    takes calls: a mount of virtio-fs, 9p, overlay or ext4 must find its
                    filesystem. A missing list means a kernel with everything built in.
4. ``cgroups``      v2 (``cgroup2`` with nsdelegate on /sys/fs/cgroup, every controller enabled for
                    children) unless v1 is asked for with ``systemd.unified_cgroup_hierarchy=0``:
                    then a tmpfs with one ``cgroup`` mount per enabled controller (cpu,cpuacct and
                    net_cls,net_prio co-mounted with links, as systemd does).
5. ``virtio-ports`` ``/dev/virtio-ports/NAME`` links for every virtio-serial port (there is no
                    udev); waits (bounded) for the agent's own port to appear.
6. ``network``      loopback up (one SIOCSIFFLAGS ioctl; no netlink library for this).
7. ``identity``     hostname from /etc/hostname, PATH, a session with the console as controlling
                    terminal.

Orphans are reaped by ``agent.reaper`` (``Reaper(reap_all=True)`` as PID 1).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from agent import config as cfg
from agent import log as agent_log
from agent.boot import pid1_early
from agent.boot.args import BootArgs
from agent.devices.virtio_ports import link_ports
from oci.syscalls import boot as sys_boot
from oci.syscalls import libc
from oci.syscalls.consts import (
    MS_NODEV,
    MS_NOEXEC,
    MS_NOSUID,
    MS_RDONLY,
    MS_RELATIME,
    MS_REMOUNT,
    TIOCSCTTY,
)

log = logging.getLogger(__name__)

GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def is_init() -> bool:
    return os.getpid() == 1


@dataclass(frozen=True, slots=True)
class Early:
    """What ``agent.boot.init`` found before PID 1's set-up."""

    initramfs_root: bool
    exec_uptime: float  # seconds since boot when this process was exec'd


class BootError(Exception):
    """A fatal PID 1 step failed (the agent cannot serve); the message names the step."""


# -- entry points --------------------------------------------------------------------------------


def setup(
    boot: BootArgs,
    early: Early | None,
    *,
    done: dict[str, float] | None = None,
    channel_opened: bool = False,
    switched_root: bool | None = None,
    extra: dict[str, object] | None = None,
) -> dict[str, float]:
    """Run the PID 1 steps (module docstring); returns each step's duration in seconds.

    ``done``: steps ``agent.boot.init`` ran already to open the channel (their times): then
    switch-root and the channel's modules are not run again, and the mounts already there are
    kept; ``channel_opened``: the agent's port is open (else its absence is logged at once: the
    early path waited for it already)."""
    if not is_init() or early is None:
        return {}
    times: dict[str, float] = dict(done or {})
    fast = done is not None
    port = boot.serial_port
    steps: list[tuple[str, Callable[[], object], bool]] = []
    if not fast:
        steps += [
            (
                "switch-root",
                lambda: (
                    pid1_early.switch_root() if early.initramfs_root and boot.switch_root else None
                ),
                True,
            ),
            ("mounts", _base_mounts, True),
            ("modules", load_modules, False),
        ]
    else:
        steps.append(("mounts", _base_mounts, True))
    steps += [
        ("cgroups", lambda: mount_cgroups(v2=boot.cgroup_v2), False),
        (
            "virtio-ports",
            lambda: link_virtio_ports(
                () if channel_opened or port is None else (port,),
                0.0 if fast else pid1_early.PORT_TIMEOUT,
            ),
            False,
        ),
        ("network", loopback_up, False),
        ("identity", _identity, False),
    ]
    for name, fn, fatal in steps:
        t0 = time.monotonic()
        try:
            fn()
        except OSError as err:
            log.error(
                "pid1 step failed",
                extra={"step": name, "error": str(err), "errno": err.errno, "path": err.filename},
            )
            if fatal:
                raise BootError(f"pid1 step {name}: {err}") from err
        times[name] = round(time.monotonic() - t0, 4)
    log.info(
        "pid1 ready",
        extra={
            "steps": times,
            "exec_uptime": early.exec_uptime,
            "uptime": round(pid1_early.uptime(), 4),
            "wall": time.time(),
            "cgroup": "v2" if boot.cgroup_v2 else "v1",
            "switched_root": early.initramfs_root and boot.switch_root
            if switched_root is None
            else switched_root,
            **(extra or {}),
        },
    )
    return times


def run_as_init(run: Callable[[], int]) -> int:
    """The agent's life as PID 1: ``run`` it, then power off.

    Never returns normally: after ``run`` ends (DestroySandbox shut the agent down, or a bad
    configuration) or fails, the VM is powered off, as Kata's agent does."""
    reason = "agent exited"
    try:
        rc = run()
        reason = f"agent exited with status {rc}"
    except BaseException as err:  # PID 1 must never exit: log, then power off
        log.critical("fatal error", extra={"error": repr(err)}, exc_info=True)
        reason = f"fatal error: {err!r}"
    power_off(reason)
    return 1


def setup_logging(boot: BootArgs) -> None:
    """JSON logs on the console at the requested level (before the configuration is read; an
    invalid level is the configuration's to report: info until then)."""
    try:
        level = cfg.parse_log_level("agent.log", boot.log_level or "info")
    except cfg.ConfigError:
        level = "info"
    agent_log.setup(level)


def power_off(reason: str) -> None:
    """sync, then power the VM off. Only ever acts as PID 1 (never on a host)."""
    if not is_init():
        return
    log.warning("powering off", extra={"reason": reason})
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os.sync()
    with contextlib.suppress(OSError):
        sys_boot.reboot(sys_boot.RB_POWER_OFF)
    # PID 1 must not exit (the kernel would panic); if power-off failed, wait to be killed.
    while True:
        time.sleep(3600)


# -- 2. mounts ---------------------------------------------------------------------------------


def _base_mounts() -> None:
    """Leaves a target that is a mount point already: ``agent.boot.pid1_early`` may have mounted
    /proc, /sys and /dev; proc, sysfs and devtmpfs would stack on a second mount."""
    nosuid_nodev = MS_NOSUID | MS_NODEV
    table: tuple[tuple[str, str, str, int, str | None], ...] = (
        pid1_early.PROC_MOUNT,
        *pid1_early.EARLY_MOUNTS,
        ("tmpfs", "/dev/shm", "tmpfs", nosuid_nodev, "mode=1777"),
        (
            "devpts",
            "/dev/pts",
            "devpts",
            MS_NOSUID | MS_NOEXEC,
            "newinstance,ptmxmode=0666,mode=0620",
        ),
        ("tmpfs", "/run", "tmpfs", nosuid_nodev, "mode=0755"),
    )
    mounted = _mount_points()
    for source, target, fstype, flags, data in table:
        if target in mounted:
            continue
        os.makedirs(target, exist_ok=True)
        try:
            pid1_early.mount(source, target, fstype, flags, data)
        except OSError as err:
            if err.errno == errno.EBUSY and _is_mounted(target):
                continue  # already mounted (systemd, or a disk image's fstab)
            if fstype == "devtmpfs":
                log.warning("devtmpfs not mounted", extra={"error": str(err)})
                continue
            raise
    ptmx = Path("/dev/ptmx")
    if not ptmx.is_symlink():
        with contextlib.suppress(FileNotFoundError):
            ptmx.unlink()
        os.symlink("pts/ptmx", ptmx)
    for link, target in (
        ("/dev/fd", "/proc/self/fd"),
        ("/dev/stdin", "/proc/self/fd/0"),
        ("/dev/stdout", "/proc/self/fd/1"),
        ("/dev/stderr", "/proc/self/fd/2"),
    ):
        if not os.path.lexists(link):
            os.symlink(target, link)


def _mount_points() -> set[str]:
    try:
        with open("/proc/self/mountinfo") as fh:
            return {line.split()[4] for line in fh}
    except OSError:
        return set()


def _is_mounted(target: str) -> bool:
    try:
        with open("/proc/self/mountinfo") as fh:
            return any(line.split()[4] == target for line in fh)
    except OSError:
        return False


# -- 3. modules ----------------------------------------------------------------------------------


_pending: list[str] = []
_pending_lock = threading.Lock()


def load_modules(listing: str = pid1_early.MODULES_LIST) -> int:
    """Load the channel drivers' part of the load list now and keep the rest for
    ``wait_for_modules``; returns how many were loaded now."""
    now, later = pid1_early.split_load_list(pid1_early.read_load_list(listing))
    defer_modules(later)
    failed = pid1_early.load_modules(now)
    log_module_failures(failed)
    return len(now) - len(failed)


def defer_modules(paths: list[str]) -> None:
    """Leave these modules for ``wait_for_modules``."""
    with _pending_lock:
        _pending[:] = paths


def log_module_failures(failed: list[tuple[str, OSError]]) -> None:
    for path, err in failed:
        log.error(
            "kernel module not loaded", extra={"path": path, "errno": err.errno, "error": str(err)}
        )


def wait_for_modules() -> None:
    """Load the modules left for later and return when they are in (a no-op when not PID 1 or
    none are left). Phase 1 calls it once listening, in a worker thread, before AgentService
    takes calls: a mount of virtio-fs, 9p, overlay or ext4 must find its filesystem; on one
    vCPU, loading them while the agent still imports would only delay the listener."""
    with _pending_lock:
        if not _pending:
            return
        t0 = time.monotonic()
        failed = pid1_early.load_modules(_pending)
        loaded = len(_pending) - len(failed)
        _pending.clear()
    log_module_failures(failed)
    log.info(
        "kernel modules loaded", extra={"count": loaded, "seconds": round(time.monotonic() - t0, 3)}
    )


# -- 4. cgroups ----------------------------------------------------------------------------------

_COMOUNTS = {
    "cpu": "cpu,cpuacct",
    "cpuacct": "cpu,cpuacct",
    "net_cls": "net_cls,net_prio",
    "net_prio": "net_cls,net_prio",
}


def mount_cgroups(*, v2: bool, root: str = "/sys/fs/cgroup") -> None:
    if v2:
        pid1_early.mount(
            "cgroup2", root, "cgroup2", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, "nsdelegate"
        )
        # Every controller for the children (one write each: one refusal must not cost the rest).
        with contextlib.suppress(OSError):
            for ctrl in Path(root, "cgroup.controllers").read_text().split():
                try:
                    Path(root, "cgroup.subtree_control").write_text(f"+{ctrl}")
                except OSError as err:
                    log.warning(
                        "cgroup controller not enabled",
                        extra={"controller": ctrl, "error": str(err)},
                    )
        return
    enabled = []
    for line in Path("/proc/cgroups").read_text().splitlines()[1:]:
        fields = line.split()
        if len(fields) >= 4 and fields[3] == "1":
            enabled.append(fields[0])
    if "devices" not in enabled:
        log.warning("no devices cgroup controller: cgroups v1 not mounted")
        return
    pid1_early.mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755")
    done: set[str] = set()
    for ctrl in enabled:
        name = _COMOUNTS.get(ctrl, ctrl)
        if name in done:
            continue
        done.add(name)
        parts = name.split(",")
        if not all(p in enabled for p in parts):
            name, parts = ctrl, [ctrl]
        target = f"{root}/{name}"
        os.makedirs(target, exist_ok=True)
        pid1_early.mount(
            "cgroup", target, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, name
        )
        if len(parts) > 1:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.symlink(name, f"{root}/{part}")
    with contextlib.suppress(OSError):
        Path(root, "memory", "memory.use_hierarchy").write_text("1")
    pid1_early.mount(
        "tmpfs",
        root,
        "tmpfs",
        MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
        "mode=0755",
    )


# -- 5. virtio-serial ports --------------------------------------------------------------------


def link_virtio_ports(wait_for: tuple[str, ...], timeout: float) -> None:
    found = link_ports(wait_for, timeout)
    missing = [n for n in wait_for if n not in found]
    if missing:
        log.error("virtio-serial port missing", extra={"ports": missing, "waited": timeout})


# -- 6. network ----------------------------------------------------------------------------------


def loopback_up() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        if not flags & IFF_UP:
            fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo", flags | IFF_UP))


# -- 7. identity ---------------------------------------------------------------------------------


def _identity() -> None:
    os.environ["PATH"] = GUEST_PATH
    try:
        name = Path("/etc/hostname").read_text().strip() or "localhost"
    except OSError:
        name = "localhost"
    libc.sethostname(name)
    with contextlib.suppress(OSError):
        os.setsid()
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, TIOCSCTTY, 0)  # the console becomes our controlling terminal


# -- clocks --------------------------------------------------------------------------------------


def exec_uptime() -> float:
    """Seconds after boot at which the kernel exec'd init: its "Run /init as init process" line
    in the kernel log (PID 1's own start time is the kernel's, long before the exec)."""
    try:
        fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
    except OSError:
        return 0.0
    try:
        while True:
            try:
                record = os.read(fd, 8192).decode(errors="replace")
            except BlockingIOError:
                return 0.0
            except OSError as err:
                if err.errno == errno.EPIPE:  # overwritten record; keep reading
                    continue
                return 0.0
            prefix, _, text = record.partition(";")
            if text.startswith("Run ") and "as init process" in text:
                return int(prefix.split(",")[2]) / 1e6
    finally:
        os.close(fd)
