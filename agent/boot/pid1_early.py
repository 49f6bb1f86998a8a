"""PID 1's early steps: what the guest's ``/init`` does before the agent's channel is open.

``agent.boot.init`` runs them in this order when the agent listens on a virtio-serial port, and
``agent.boot.pid1`` runs the same functions among its own steps otherwise:

1. ``mount_proc``        /proc, so the command line can be read;
2. ``load_modules``      ``finit_module`` of the load list (``/etc/kata-agent/modules.load``,
                         written by rootfs/modules.py) up to the channel's driver; the rest is left
                         for later (``split_load_list``);
3. ``switch_root``       when ``/`` is the initramfs (``rootfs``, which ``pivot_root`` refuses with
                         EINVAL): bind-mount it onto a directory, move that mount onto ``/`` and
                         chroot into it. The new root is a mount with a parent, so containers can
                         ``pivot_root``; nothing is copied. ``agent.switchroot=0`` skips it;
4. ``early_mounts``      /sys and /dev (``agent.boot.pid1`` mounts the rest).

Cold: run before the channel is open, in a guest where every import is slow. Imports ``os``,
``time`` and the ctypes syscall seam only (``tests/unit/boot/test_import_budget.py``); no
``contextlib`` (plain try/except), no ``logging`` (failures are returned; the caller logs them).
"""

from __future__ import annotations

import os
import time

from oci.syscalls import boot as sys_boot
from oci.syscalls import libc
from oci.syscalls.consts import MNT_DETACH, MS_BIND, MS_MOVE, MS_NODEV, MS_NOEXEC, MS_NOSUID

MODULES_LIST = "/etc/kata-agent/modules.load"
SWITCH_DIR = "/.kata-root"
PORT_TIMEOUT = 10.0  # seconds the agent's own virtio-serial port is waited for
#: The drivers of the agent's channels: the early part of the load list ends with the last of
#: them; the rest waits until the agent is listening.
SERIAL_DRIVER = "virtio_console.ko"
CHANNEL_DRIVERS = (SERIAL_DRIVER, "vmw_vsock_virtio_transport.ko", "vsock_loopback.ko")

PROC_MOUNT = ("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
#: What the early path mounts after switching root; ``agent.boot.pid1`` mounts the rest.
EARLY_MOUNTS: tuple[tuple[str, str, str, int, str | None], ...] = (
    ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
    ("dev", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
)


def uptime() -> float:
    """Seconds since boot."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    libc.mount(source, target, fstype, flags, data)


def mount_proc() -> None:
    """Mount /proc unless it is there (a second proc mount would stack)."""
    os.makedirs("/proc", exist_ok=True)
    if os.path.exists("/proc/self/mountinfo"):
        return
    try:
        mount(*PROC_MOUNT)
    except OSError:
        pass  # agent.boot.pid1's mounts step tries again and reports the error


def root_is_initramfs() -> bool:
    """True when / is the kernel's initial rootfs (it has no parent mount)."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/":
                    return fields[fields.index("-") + 1] == "rootfs"
    except (OSError, ValueError):
        pass
    return False


def switch_root() -> None:
    """/ becomes a bind mount with a parent, so ``pivot_root`` works (module docstring)."""
    # /proc was mounted on the old root: take it off, it is mounted again in the new one.
    try:
        libc.umount2("/proc", MNT_DETACH)
    except OSError:
        pass
    os.makedirs(SWITCH_DIR, exist_ok=True)
    mount("/", SWITCH_DIR, None, MS_BIND, None)
    os.chdir(SWITCH_DIR)
    mount(".", "/", None, MS_MOVE, None)
    os.chroot(".")
    os.chdir("/")
    # The same filesystem is visible in the new root: drop the now empty mount point.
    try:
        os.rmdir(SWITCH_DIR)
    except OSError:
        pass


def early_mounts() -> None:
    """proc, sysfs and devtmpfs in the (new) root; a failure is left for agent.boot.pid1's
    mounts step, which mounts them again and reports it."""
    for source, target, fstype, flags, data in (PROC_MOUNT, *EARLY_MOUNTS):
        os.makedirs(target, exist_ok=True)
        try:
            mount(source, target, fstype, flags, data)
        except OSError:
            pass


def read_load_list(listing: str = MODULES_LIST) -> list[str]:
    """The kernel modules to load, in order; none when there is no list (all built in)."""
    try:
        with open(listing) as fh:
            return fh.read().split()
    except FileNotFoundError:
        return []


def split_load_list(
    paths: list[str], channel: tuple[str, ...] = CHANNEL_DRIVERS
) -> tuple[list[str], list[str]]:
    """(now, later): `now` ends with the last of the `channel` drivers in the list."""
    last = -1
    for i, path in enumerate(paths):
        if path.rsplit("/", 1)[-1] in channel:
            last = i
    return paths[: last + 1], paths[last + 1 :]


def load_modules(paths: list[str]) -> list[tuple[str, OSError]]:
    """``finit_module`` of each file in order; returns the ones that failed (the caller logs)."""
    failed = []
    for path in paths:
        try:
            sys_boot.finit_module(path)
        except OSError as err:
            failed.append((path, err))
    return failed


def startup_cost(stat: str) -> dict[str, float]:
    """CPU time and page faults of the interpreter's start-up, from ``/proc/self/stat`` read
    when ``main`` began (``bench/boot.py`` prints them)."""
    fields = stat.rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "minflt": int(fields[7]),
        "majflt": int(fields[9]),
        "utime_s": int(fields[11]) / tick,
        "stime_s": int(fields[12]) / tick,
    }
