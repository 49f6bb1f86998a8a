"""The agent's duties as the guest's init (PID 1), as Kata's agent does them in init mode.

Nothing here acts unless ``os.getpid() == 1``: on a host (tests, developers) every entry point is
a no-op. The image's ``/init`` runs ``agent.pid1_early.main``: for a virtio-serial listen address
it opens the channel first and then runs ``setup`` (``done=`` its own steps) in a worker thread
and ``serve_as_init``; for any other address it calls ``main`` here::

    early = mount_proc()               # /proc, so the command line can be read
    setup(Pid1Config.from_cmdline(text), early)
    agent.cli.main([])                 # the agent, configured from /proc/cmdline as usual
    power_off("...")                   # after DestroySandbox or a fatal error: sync + power off

``setup`` runs these named steps (each timed and logged; a failing step is logged with its name and
errno, and only the steps marked *fatal* stop the boot):

1. ``switch-root``  When ``/`` is the initramfs (``rootfs``, which ``pivot_root`` refuses with
                    EINVAL), bind-mount it onto a directory, move that bind mount onto ``/`` and
                    chroot into it. The new root is a mount with a parent, so containers can
                    ``pivot_root``; nothing is copied (vm-boot-facts measured ~1 s for copying the
                    tree into a tmpfs under TCG; this takes a few ms). ``agent.switchroot=0`` skips
                    it. *fatal*
2. ``mounts``       proc, sysfs, devtmpfs, /dev/pts (own instance, /dev/ptmx -> pts/ptmx),
                    /dev/shm, /run (Kata's INIT_ROOTFS_MOUNTS). *fatal*
3. ``modules``      ``finit_module`` of every file in ``/etc/kata-agent/modules.load`` (written by
                    rootfs/modules.py, dependencies first); a missing list means a kernel with
                    everything built in. Only the channel's modules load here; ``agent.app``
                    loads the rest once listening (``wait_for_modules``), before
                    AgentService takes calls.
4. ``cgroups``      v2 (``cgroup2`` with nsdelegate on /sys/fs/cgroup, every controller enabled for
                    children) unless v1 is asked for with ``systemd.unified_cgroup_hierarchy=0``:
                    then a tmpfs with one ``cgroup`` mount per enabled controller (cpu,cpuacct and
                    net_cls,net_prio co-mounted with links, as systemd does).
5. ``virtio-ports`` ``/dev/virtio-ports/NAME`` links for every virtio-serial port (there is no
                    udev); waits (bounded) for the agent's own port to appear.
6. ``network``      loopback up (one SIOCSIFFLAGS ioctl; pyroute2 is not imported for this).
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from agent.config import AgentConfig
    from agent.rpc.early_serial import SerialHandover

log = logging.getLogger(__name__)

MODULES_LIST = Path("/etc/kata-agent/modules.load")
VIRTIO_PORTS_DIR = Path("/dev/virtio-ports")
SYS_VIRTIO_PORTS = Path("/sys/class/virtio-ports")
SWITCH_DIR = "/.kata-root"
GUEST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# mount(2) flags (see oci/syscalls/consts.py)
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_BIND, MS_MOVE, MS_RELATIME = 32, 4096, 8192, 1 << 21
MNT_DETACH = 2
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1

_FALSE = ("0", "false", "no", "off")


def is_init() -> bool:
    return os.getpid() == 1


@dataclass(frozen=True, slots=True, kw_only=True)
class Pid1Config:
    """What PID 1 does; parsed once from the kernel command line text (pure)."""

    cgroup_v2: bool = True
    switch_root: bool = True
    modules_list: Path = MODULES_LIST
    wait_ports: tuple[str, ...] = ()
    port_timeout: float = 10.0

    @classmethod
    def from_cmdline(cls, text: str, *, server_addr: str = "") -> Pid1Config:
        """`server_addr`: the agent's listen address if known, else the command line's."""
        cgroup_v2 = True
        switch_root = True
        cmdline_addr = ""
        for word in text.split():
            key, _, value = word.partition("=")
            if key == "agent.server_addr":
                cmdline_addr = value
            elif key == "systemd.unified_cgroup_hierarchy":
                cgroup_v2 = value.strip().lower() not in _FALSE
            elif key == "cgroup_no_v1" and value == "all":
                cgroup_v2 = True
            elif key == "agent.switchroot":
                switch_root = value.strip().lower() not in _FALSE
        server_addr = server_addr or cmdline_addr
        ports: tuple[str, ...] = ()
        prefix = f"serial://{VIRTIO_PORTS_DIR}/"
        if server_addr.startswith(prefix):
            ports = (server_addr[len(prefix) :],)
        return cls(cgroup_v2=cgroup_v2, switch_root=switch_root, wait_ports=ports)


@dataclass(frozen=True, slots=True)
class Early:
    """What ``mount_proc`` found before the configuration was read."""

    initramfs_root: bool
    exec_uptime: float  # seconds since boot when this process was exec'd


class BootError(Exception):
    """A fatal PID 1 step failed (the agent cannot serve); the message names the step."""


# -- system calls (through the seam) -------------------------------------------------------------


def _mount(
    source: str, target: str, fstype: str | None, flags: int = 0, data: str | None = None
) -> None:
    from oci.syscalls import libc

    libc.mount(source, target, fstype, flags, data)


def _umount(target: str, flags: int = 0) -> None:
    from oci.syscalls import libc

    libc.umount2(target, flags)


# -- entry points --------------------------------------------------------------------------------


def mount_proc() -> Early | None:
    """Mount /proc (needed to read the command line); None when not PID 1."""
    if not is_init():
        return None
    os.makedirs("/proc", exist_ok=True)
    if not os.path.exists("/proc/self/mountinfo"):  # agent.pid1_early may have mounted it
        with contextlib.suppress(OSError):
            _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)
    return Early(initramfs_root=_root_is_initramfs(), exec_uptime=_exec_uptime())


def setup(
    config: Pid1Config,
    early: Early | None,
    *,
    done: dict[str, float] | None = None,
    channel_opened: bool = False,
    switched_root: bool | None = None,
    extra: dict[str, object] | None = None,
) -> dict[str, float]:
    """Run the PID 1 steps (module docstring); returns each step's duration in seconds.

    ``done``: steps ``agent.pid1_early`` ran already to open the channel (their times): then
    switch-root and the channel's modules are not run again, and the mounts already there are
    kept; ``channel_opened``: the agent's port is open (else its absence is logged at once:
    pid1_early waited for it already)."""
    if not is_init() or early is None:
        return {}
    times: dict[str, float] = dict(done or {})
    fast = done is not None
    steps: list[tuple[str, Callable[[], object], bool]] = []
    if not fast:
        steps += [
            (
                "switch-root",
                lambda: _switch_root() if early.initramfs_root and config.switch_root else None,
                True,
            ),
            ("mounts", lambda: _base_mounts(keep_mounted=True), True),
            ("modules", lambda: load_modules(config.modules_list), False),
        ]
    else:
        steps.append(("mounts", lambda: _base_mounts(keep_mounted=True), True))
    # keep_mounted: proc, sysfs and devtmpfs would stack on a second mount (EBUSY is only for
    # the filesystems that refuse it).
    steps += [
        ("cgroups", lambda: mount_cgroups(v2=config.cgroup_v2), False),
        (
            "virtio-ports",
            lambda: link_virtio_ports(
                () if channel_opened else config.wait_ports, 0.0 if fast else config.port_timeout
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
            "uptime": _uptime(),
            "wall": time.time(),
            "cgroup": "v2" if config.cgroup_v2 else "v1",
            "switched_root": early.initramfs_root and config.switch_root
            if switched_root is None
            else switched_root,
            **(extra or {}),
        },
    )
    return times


def main() -> int:
    """The image's ``/init``: PID 1 duties around ``kata-agent``; plain ``kata-agent`` otherwise."""
    early = mount_proc()
    from agent import cli

    if early is None:
        return cli.main()
    try:
        cmdline = Path("/proc/cmdline").read_text()
    except OSError:
        cmdline = ""
    # cli.main reads the configuration (and /proc/cmdline) itself, with its fast start-up path.
    return run_as_init(early, cmdline, lambda: cli.main([]))


_LOG_LEVELS = {"warning": "warn", "fatal": "critical", "panic": "critical"}


def setup_logging(cmdline: str) -> None:
    """JSON logs on the console at ``agent.log``'s level (before the configuration is read)."""
    from agent import log as agent_log

    level = "info"
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key == "agent.log":
            value = _LOG_LEVELS.get(value.lower(), value.lower())
            level = (
                value if value in ("trace", "debug", "info", "warn", "error", "critical") else level
            )
    agent_log.setup(level)


def serve_as_init(
    prepared: AgentConfig | int | BaseException, handover: SerialHandover | None
) -> int:
    """``agent.pid1_early``'s second half: serve with the configuration its worker thread read
    and the serial port its phase 0 opened, then power off (as ``run_as_init``)."""
    reason = "agent exited"
    try:
        if isinstance(prepared, BaseException):
            raise prepared
        if isinstance(prepared, int):
            reason = f"agent exited with status {prepared}"  # a bad configuration
        else:
            if handover is not None and prepared.server.server_addr != handover.address:
                handover.close()  # the configuration names another address
                handover = None
            from agent import app

            rc = app.run(prepared, handover=handover)
            reason = f"agent exited with status {rc}"
    except BaseException as err:  # PID 1 must never exit: log, then power off
        log.critical("fatal error", extra={"error": repr(err)}, exc_info=True)
        reason = f"fatal error: {err!r}"
    power_off(reason)
    return 1


def run_as_init(early: Early, cmdline: str, run: Callable[[], int]) -> int:
    """The agent's life as PID 1: set the system up, serve (``run``), then power off.

    Never returns normally: after ``run`` ends (DestroySandbox shut the agent down, or a bad
    configuration) or fails, the VM is powered off, as Kata's agent does."""
    setup_logging(cmdline)
    reason = "agent exited"
    try:
        setup(Pid1Config.from_cmdline(cmdline), early)
        rc = run()
        reason = f"agent exited with status {rc}"
    except BaseException as err:  # PID 1 must never exit: log, then power off
        log.critical("fatal error", extra={"error": repr(err)}, exc_info=True)
        reason = f"fatal error: {err!r}"
    power_off(reason)
    return 1


def power_off(reason: str) -> None:
    """sync, then power the VM off. Only ever acts as PID 1 (never on a host)."""
    if not is_init():
        return
    log.warning("powering off", extra={"reason": reason})
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    os.sync()
    from oci.syscalls import boot

    with contextlib.suppress(OSError):
        boot.reboot(boot.RB_POWER_OFF)
    # PID 1 must not exit (the kernel would panic); if power-off failed, wait to be killed.
    while True:
        time.sleep(3600)


# -- 1. switch root --------------------------------------------------------------------------------


def _root_is_initramfs() -> bool:
    """True when / is the kernel's initial rootfs (it has no parent mount)."""
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/":
                    sep = fields.index("-")
                    return fields[sep + 1] == "rootfs"
    except OSError:
        pass
    return False


def _switch_root() -> None:
    # /proc was mounted on the old root: take it off, it is mounted again in the new one.
    with contextlib.suppress(OSError):
        _umount("/proc", MNT_DETACH)
    os.makedirs(SWITCH_DIR, exist_ok=True)
    _mount("/", SWITCH_DIR, None, MS_BIND)
    os.chdir(SWITCH_DIR)
    _mount(".", "/", None, MS_MOVE)
    os.chroot(".")
    os.chdir("/")
    # The same filesystem is visible in the new root: drop the now empty mount point.
    with contextlib.suppress(OSError):
        os.rmdir(SWITCH_DIR)


# -- 2. mounts ---------------------------------------------------------------------------------


def _base_mounts(*, keep_mounted: bool = False) -> None:
    """``keep_mounted``: leave a target that is a mount point already (``agent.pid1_early``
    mounted /proc, /sys and /dev; proc, sysfs and devtmpfs would otherwise stack)."""
    nosuid_nodev = MS_NOSUID | MS_NODEV
    table: tuple[tuple[str, str, str, int, str | None], ...] = (
        ("proc", "/proc", "proc", nosuid_nodev | MS_NOEXEC, None),
        ("sysfs", "/sys", "sysfs", nosuid_nodev | MS_NOEXEC, None),
        ("dev", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
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
    mounted = _mount_points() if keep_mounted else set()
    for source, target, fstype, flags, data in table:
        if target in mounted:
            continue
        os.makedirs(target, exist_ok=True)
        try:
            _mount(source, target, fstype, flags, data)
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


#: The modules the agent's channel needs (virtio-serial over virtio-pci, vsock) end the "early"
#: part of the load list; the rest waits until the agent is listening (``wait_for_modules``).
EARLY_MODULES = ("virtio_console.ko", "vmw_vsock_virtio_transport.ko", "vsock_loopback.ko")
_pending: list[str] = []
_pending_lock = threading.Lock()


def split_load_list(paths: list[str]) -> tuple[list[str], list[str]]:
    """(early, deferred): early ends with the last channel module in the list."""
    last = -1
    for i, path in enumerate(paths):
        if path.rsplit("/", 1)[-1] in EARLY_MODULES:
            last = i
    return paths[: last + 1], paths[last + 1 :]


def load_modules(listing: Path) -> int:
    """Load the channel's modules now and keep the rest for ``wait_for_modules``; returns
    how many were loaded now."""
    try:
        paths = [p for p in listing.read_text().split() if p]
    except FileNotFoundError:
        return 0
    early, rest = split_load_list(paths)
    with _pending_lock:
        _pending[:] = rest
    return _load(early)


def defer_modules(paths: list[str]) -> None:
    """Leave these modules for ``wait_for_modules`` (``agent.pid1_early`` loaded the rest)."""
    with _pending_lock:
        _pending[:] = paths


def wait_for_modules() -> None:
    """Load the modules ``load_modules`` left for later and return when they are in (a no-op
    when not PID 1 or none are left). ``agent.app`` calls it once listening, in a worker thread,
    before AgentService takes calls: a mount of virtio-fs, 9p, overlay or ext4 must find its
    filesystem; on one vCPU, loading them while the agent still imports would only delay the
    listener."""
    with _pending_lock:
        if not _pending:
            return
        t0 = time.monotonic()
        loaded = _load(_pending)
        _pending.clear()
    log.info(
        "kernel modules loaded", extra={"count": loaded, "seconds": round(time.monotonic() - t0, 3)}
    )


def _load(paths: list[str]) -> int:
    from oci.syscalls import boot

    loaded = 0
    for path in paths:
        try:
            boot.finit_module(path)
            loaded += 1
        except OSError as err:
            log.error(
                "kernel module not loaded",
                extra={"path": path, "errno": err.errno, "error": str(err)},
            )
    return loaded


# -- 4. cgroups ----------------------------------------------------------------------------------

_COMOUNTS = {
    "cpu": "cpu,cpuacct",
    "cpuacct": "cpu,cpuacct",
    "net_cls": "net_cls,net_prio",
    "net_prio": "net_cls,net_prio",
}


def mount_cgroups(*, v2: bool, root: str = "/sys/fs/cgroup") -> None:
    if v2:
        _mount(
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
    _mount("tmpfs", root, "tmpfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, "mode=0755")
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
        _mount("cgroup", target, "cgroup", MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RELATIME, name)
        if len(parts) > 1:
            for part in parts:
                with contextlib.suppress(FileExistsError):
                    os.symlink(name, f"{root}/{part}")
    with contextlib.suppress(OSError):
        Path(root, "memory", "memory.use_hierarchy").write_text("1")
    _mount(
        "tmpfs",
        root,
        "tmpfs",
        MS_REMOUNT | MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC,
        "mode=0755",
    )


# -- 5. virtio-serial ports --------------------------------------------------------------------


def virtio_ports(sys_dir: Path = SYS_VIRTIO_PORTS) -> Iterator[tuple[str, str]]:
    """(name, device) of every named virtio-serial port, e.g. ("agent.channel.0", "vport1p1")."""
    try:
        entries = sorted(os.listdir(sys_dir))
    except FileNotFoundError:
        return
    for dev in entries:
        try:
            name = (sys_dir / dev / "name").read_text().strip()
        except OSError:
            continue
        if name:
            yield name, dev


def link_virtio_ports(
    wait_for: tuple[str, ...] = (),
    timeout: float = 10.0,
    *,
    sys_dir: Path = SYS_VIRTIO_PORTS,
    dev_dir: Path = Path("/dev"),
) -> dict[str, str]:
    """Create ``<dev_dir>/virtio-ports/NAME -> ../DEVICE`` links (what udev would do); wait up
    to `timeout` for the ports in `wait_for` (they appear asynchronously after virtio_console
    loads)."""
    links_dir = dev_dir / "virtio-ports"
    links_dir.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    found: dict[str, str] = {}
    while True:
        for name, dev in virtio_ports(sys_dir):
            if name in found:
                continue
            link = links_dir / name
            if not link.is_symlink():
                with contextlib.suppress(FileExistsError):
                    os.symlink(f"../{dev}", link)
            found[name] = dev
        missing = [n for n in wait_for if n not in found]
        if not missing:
            return found
        if time.monotonic() > deadline:
            log.error("virtio-serial port missing", extra={"ports": missing, "waited": timeout})
            return found
        time.sleep(0.01)


def find_virtio_port(
    name: str, *, sys_dir: Path = SYS_VIRTIO_PORTS, dev_dir: Path = Path("/dev")
) -> Path | None:
    """The device of the virtio-serial port called `name` (linking it if needed), or None."""
    link = dev_dir / "virtio-ports" / name
    if link.exists():
        return link
    for port, dev in virtio_ports(sys_dir):
        if port == name and (dev_dir / dev).exists():
            return dev_dir / dev
    return None


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
    from oci.syscalls import libc

    libc.sethostname(name)
    with contextlib.suppress(OSError):
        os.setsid()
    with contextlib.suppress(OSError):
        fcntl.ioctl(0, 0x540E, 0)  # TIOCSCTTY: the console becomes our controlling terminal


# -- clocks --------------------------------------------------------------------------------------


def _uptime() -> float:
    try:
        return float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError):
        return time.clock_gettime(time.CLOCK_BOOTTIME)


def _exec_uptime() -> float:
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
