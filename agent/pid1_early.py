"""PID 1's fast path: the agent's serial channel is open and answering Health.Check first,
everything else afterwards.

The image's ``/init`` runs ``main``. Importing the agent (logging, dataclasses, asyncio, protobuf,
the configuration) costs seconds under TCG, and the host's first call is a Health.Check. So when
the listen address is a virtio-serial port (``agent.server_addr=serial:///dev/virtio-ports/NAME``
on the kernel command line, and no ``agent.config_file``), this module, which imports only
``os``, ``sys``, ``time`` and the ctypes syscall seam until the port is open, does on the main
thread:

1. ``channel-modules``: the load list up to the virtio-serial driver (``virtio_console``);
2. ``switch-root`` (as ``agent.pid1``) and the ``early-mounts`` /proc, /sys, /dev, while the
   kernel adds the ports;
3. ``channel-open``: waits for the port to appear in sysfs, links ``/dev/virtio-ports/NAME``
   and opens it;

then serves the port with ``agent.rpc.early_serial`` while a worker thread runs the rest of
``agent.pid1.setup`` (logging, the remaining mounts, cgroups, modules left for later, links, lo,
hostname), reads the configuration and imports the asyncio stack. The asyncio serial listener
adopts the open port (``agent.app.run(handover=...)``); a port that does not show up within
10 s is left to it (it keeps trying). Any other case (not PID 1, another address, a config
file) takes ``agent.pid1.main``'s ordinary path.

"pid1 ready" logs ``channel_open_uptime``: from then on a Check is answered (``bench/boot.py``).
"""

from __future__ import annotations

import os
import sys
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    import threading

    from agent.config import AgentConfig
    from agent.rpc.early_serial import SerialHandover

PORTS_PREFIX = "serial:///dev/virtio-ports/"
SYS_VIRTIO_PORTS = "/sys/class/virtio-ports"
MODULES_LIST = "/etc/kata-agent/modules.load"
SERIAL_DRIVER = "virtio_console.ko"
SWITCH_DIR = "/.kata-root"
PORT_TIMEOUT = 10.0

MS_NOSUID, MS_NODEV, MS_NOEXEC, MS_BIND, MS_MOVE = 2, 4, 8, 4096, 8192
MNT_DETACH = 2
_FALSE = ("0", "false", "no", "off")


def _uptime() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _mount(source: str, target: str, fstype: str | None, flags: int, data: str | None) -> None:
    from oci.syscalls import libc

    libc.mount(source, target, fstype, flags, data)


def serial_port_name(cmdline: str, env: dict[str, str] | os._Environ[str]) -> str | None:
    """The virtio-serial port the agent will listen on, or None when the fast path does not
    apply (another address, a config file): the same precedence as the configuration (the
    environment, then the command line; ``agent.cli`` has no flags as PID 1)."""
    cmdline_address = None
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key == "agent.config_file":
            return None
        if key == "agent.server_addr":
            cmdline_address = value  # the last one wins, as in agent.config
    address = env.get("KATA_AGENT_SERVER_ADDR") or cmdline_address
    if address is None or not address.startswith(PORTS_PREFIX):
        return None
    name = address[len(PORTS_PREFIX) :]
    return name if name and "/" not in name else None


def _switch_root_wanted(cmdline: str) -> bool:
    for word in cmdline.split():
        key, _, value = word.partition("=")
        if key == "agent.switchroot":
            return value.strip().lower() not in _FALSE
    return True


def _root_is_initramfs() -> bool:
    try:
        with open("/proc/self/mountinfo") as fh:
            for line in fh:
                fields = line.split()
                if len(fields) > 4 and fields[4] == "/":
                    return fields[fields.index("-") + 1] == "rootfs"
    except (OSError, ValueError):
        pass
    return False


def _switch_root() -> None:
    """As ``agent.pid1._switch_root``: / becomes a bind mount with a parent (pivot_root works)."""
    from oci.syscalls import libc

    try:  # noqa: SIM105 (contextlib is not imported on this path)
        libc.umount2("/proc", MNT_DETACH)
    except OSError:
        pass
    os.makedirs(SWITCH_DIR, exist_ok=True)
    _mount("/", SWITCH_DIR, None, MS_BIND, None)
    os.chdir(SWITCH_DIR)
    _mount(".", "/", None, MS_MOVE, None)
    os.chroot(".")
    os.chdir("/")
    try:  # noqa: SIM105 (contextlib is not imported on this path)
        os.rmdir(SWITCH_DIR)
    except OSError:
        pass


#: What the fast path mounts itself; ``agent.pid1`` mounts the rest (/dev/shm, /dev/pts, /run).
EARLY_MOUNTS = (
    ("sysfs", "/sys", "sysfs", MS_NOSUID | MS_NODEV | MS_NOEXEC, None),
    ("dev", "/dev", "devtmpfs", MS_NOSUID, "mode=0755"),
)


def _load_channel_modules() -> list[str]:
    """finit_module of the load list up to the serial driver; returns the rest (for later)."""
    try:
        with open(MODULES_LIST) as fh:
            paths = fh.read().split()
    except FileNotFoundError:
        return []
    last = -1
    for i, path in enumerate(paths):
        if path.rsplit("/", 1)[-1] == SERIAL_DRIVER:
            last = i
    from oci.syscalls import boot

    for path in paths[: last + 1]:
        try:
            boot.finit_module(path)
        except OSError as err:
            # agent.pid1 logs what failed once logging is up (it retries the list's failures).
            _FAILED.append((path, err))
    return paths[last + 1 :]


_FAILED: list[tuple[str, OSError]] = []
_STAT_AT_MAIN: list[str] = []  # /proc/self/stat when main() began (the interpreter's start-up)


def _startup_cost() -> dict[str, float]:
    """CPU time and page faults of the interpreter's start-up (up to main()), for the bench."""
    if not _STAT_AT_MAIN:
        return {}
    fields = _STAT_AT_MAIN[0].rsplit(")", 1)[1].split()
    tick = os.sysconf("SC_CLK_TCK")
    return {
        "minflt": int(fields[7]),
        "majflt": int(fields[9]),
        "utime_s": int(fields[11]) / tick,
        "stime_s": int(fields[12]) / tick,
    }


def _find_port(name: str, timeout: float) -> str | None:
    """/dev/virtio-ports/NAME once the port shows up (linked as udev would), or None."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            entries = os.listdir(SYS_VIRTIO_PORTS)
        except FileNotFoundError:
            entries = []
        for dev in entries:
            try:
                with open(f"{SYS_VIRTIO_PORTS}/{dev}/name") as fh:
                    port = fh.read().strip()
            except OSError:
                continue
            if port == name and os.path.exists(f"/dev/{dev}"):
                os.makedirs("/dev/virtio-ports", exist_ok=True)
                link = f"/dev/virtio-ports/{name}"
                if not os.path.islink(link):
                    try:  # noqa: SIM105 (contextlib is not imported on this path)
                        os.symlink(f"../{dev}", link)
                    except FileExistsError:
                        pass
                return link
        if time.monotonic() > deadline:
            return None
        time.sleep(0.005)


def main() -> int:
    """The image's ``/init``."""
    if os.getpid() != 1:
        from agent import pid1

        return pid1.main()
    started = _uptime()
    os.makedirs("/proc", exist_ok=True)
    try:  # noqa: SIM105 (contextlib is not imported on this path)
        _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    except OSError:
        pass
    try:
        with open("/proc/cmdline") as fh:
            cmdline = fh.read()
        with open("/proc/self/stat") as fh:
            _STAT_AT_MAIN.append(fh.read())
    except OSError:
        cmdline = ""
    name = serial_port_name(cmdline, os.environ)
    if name is None:
        from agent import pid1

        return pid1.main()  # mounting /proc again there is harmless (EBUSY is ignored)
    return _fast(cmdline, name, started)


def _fast(cmdline: str, name: str, started: float) -> int:
    times: dict[str, float] = {}
    # The channel's modules first: the port then appears while the rest of this runs (the
    # host's QEMU answers the driver's port queries meanwhile).
    t0 = time.monotonic()
    deferred = _load_channel_modules()
    times["channel-modules"] = round(time.monotonic() - t0, 4)
    t0 = time.monotonic()
    initramfs = _root_is_initramfs()
    switched = initramfs and _switch_root_wanted(cmdline)
    if switched:
        _switch_root()
    times["switch-root"] = round(time.monotonic() - t0, 4)
    t0 = time.monotonic()
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC, None)
    for source, target, fstype, flags, data in EARLY_MOUNTS:
        os.makedirs(target, exist_ok=True)
        try:  # noqa: SIM105 (contextlib is not imported on this path)
            _mount(source, target, fstype, flags, data)
        except OSError:
            pass  # agent.pid1's mounts step mounts it again and reports the error
    times["early-mounts"] = round(time.monotonic() - t0, 4)
    t0 = time.monotonic()
    from agent.rpc import early_serial

    path = _find_port(name, PORT_TIMEOUT)
    handover: SerialHandover | None = None
    if path is not None:
        try:
            handover = early_serial.SerialHandover(
                PORTS_PREFIX + name, path, early_serial.open_port(path)
            )
        except OSError:
            handover = None  # the asyncio listener retries (and logs) the open
    times["channel-open"] = round(time.monotonic() - t0, 4)
    # From here on a Check is answered: the serve loop polls the port first thing.
    opened = _uptime() if handover is not None else None
    outcome: list[AgentConfig | int | BaseException] = []

    def start() -> threading.Event:
        import threading  # on the main thread first: it is the main thread for threading/asyncio

        done = threading.Event()

        def prepare() -> None:
            try:
                outcome.append(
                    _prepare(cmdline, switched, initramfs, deferred, times, started, opened)
                )
            except BaseException as err:
                outcome.append(err)
            finally:
                done.set()

        threading.Thread(target=prepare, name="pid1-prepare", daemon=True).start()
        return done

    if handover is not None:
        early_serial.EarlySerialServer(handover).serve(start)
    else:
        start().wait()
    from agent import pid1

    return pid1.serve_as_init(outcome[0], handover)


def _prepare(
    cmdline: str,
    switched: bool,
    initramfs: bool,
    deferred: list[str],
    early_times: dict[str, float],
    started: float,
    opened: float | None,
) -> AgentConfig | int:
    """The worker thread: the rest of PID 1's set-up, the configuration, the imports."""
    from agent import pid1

    pid1.setup_logging(cmdline)
    for path, err in _FAILED:
        pid1.log.error(
            "kernel module not loaded", extra={"path": path, "errno": err.errno, "error": str(err)}
        )
    early = pid1.Early(initramfs_root=initramfs, exec_uptime=pid1._exec_uptime())
    pid1.defer_modules(deferred)
    config = pid1.Pid1Config.from_cmdline(cmdline)
    pid1.setup(
        config,
        early,
        done=early_times,
        channel_opened=opened is not None,
        switched_root=switched,
        extra={
            "main_uptime": round(started, 4),
            "channel_open_uptime": opened,
            "python_startup": _startup_cost(),
        },
    )
    return _load_config()


def _load_config() -> AgentConfig | int:
    """The configuration as ``kata-agent`` with no flags reads it; then the asyncio stack."""
    from pathlib import Path

    from agent import app
    from agent import config as cfg

    try:
        config, _ignored = app.load_config(
            config_file=None, cmdline_file=Path("/proc/cmdline"), overrides={}
        )
    except cfg.ConfigError as err:
        print(f"kata-agent: {err}", file=sys.stderr)
        return 2
    app.import_phase1()
    return config
