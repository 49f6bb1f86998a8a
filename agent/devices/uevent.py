"""Kernel uevents: NETLINK_KOBJECT_UEVENT listener, device map and waiters (reference doc §3.4).

The listener is a non-blocking netlink socket (multicast group 1, kernel messages only) read by a
loop reader callback. Each `add`/`change` is remembered by devpath until its `remove`, so a waiter
that registers after the device appeared still finds it ("remember then wait"). Devices present
before the agent started emitted no uevent we could see: `start()` opens the socket first, then
records what sysfs already shows. A hot-plugged memory block is onlined on sight.

Messages look like `add@/devices/...\\0ACTION=add\\0DEVPATH=...\\0SUBSYSTEM=block\\0...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import itertools
import logging
import os
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from agent.errors import DeadlineExceeded

log = logging.getLogger(__name__)

NETLINK_KOBJECT_UEVENT = 15
UEVENT_GROUP_KERNEL = 1
RCVBUF = 4 << 20
COLDPLUG_CLASSES = ("block", "net", "vfio", "scsi_host", "nd")
MEMORY_DEVPATH_PREFIX = "/devices/system/memory/memory"
LOGGED_SUBSYSTEMS = frozenset({"block", "net", "pci", "vfio", "scsi"})  # hot-plugs, not churn


@dataclass(frozen=True, slots=True)
class Uevent:
    action: str
    devpath: str
    subsystem: str = ""
    devname: str = ""
    devtype: str = ""
    seqnum: int = 0
    interface: str = ""
    env: Mapping[str, str] = field(default_factory=dict)


def parse(data: bytes) -> Uevent | None:
    """One kernel uevent datagram → Uevent; None for udev-daemon or malformed messages."""
    if data.startswith(b"libudev\0"):
        return None
    parts = data.split(b"\0")
    head = parts[0].decode(errors="replace")
    if "@" not in head:
        return None
    env: dict[str, str] = {}
    for raw in parts[1:]:
        if not raw:
            continue
        k, sep, v = raw.decode(errors="replace").partition("=")
        if sep:
            env[k] = v
    action = env.get("ACTION") or head.split("@", 1)[0]
    devpath = env.get("DEVPATH") or head.split("@", 1)[1]
    try:
        seqnum = int(env.get("SEQNUM", "0"))
    except ValueError:
        seqnum = 0
    return Uevent(
        action=action,
        devpath=devpath,
        subsystem=env.get("SUBSYSTEM", ""),
        devname=env.get("DEVNAME", ""),
        devtype=env.get("DEVTYPE", ""),
        seqnum=seqnum,
        interface=env.get("INTERFACE", ""),
        env=env,
    )


def from_sysfs(sysfs: Path, device_dir: Path) -> Uevent | None:
    """Synthesize an `add` event from a device directory in sysfs (cold-plugged devices)."""
    try:
        real = Path(os.path.realpath(device_dir))
        text = (real / "uevent").read_text()
    except OSError:
        return None
    env: dict[str, str] = {}
    for line in text.splitlines():
        k, sep, v = line.partition("=")
        if sep:
            env[k] = v
    real_sysfs = Path(os.path.realpath(sysfs))
    try:
        dp = "/" + str(real.relative_to(real_sysfs))
    except ValueError:
        return None
    sub = ""
    with contextlib.suppress(OSError):
        sub = Path(os.readlink(real / "subsystem")).name
    return Uevent(
        action="add",
        devpath=dp,
        subsystem=sub,
        devname=env.get("DEVNAME", ""),
        devtype=env.get("DEVTYPE", ""),
        interface=env.get("INTERFACE", ""),
        env=env,
    )


def scan_sysfs(sysfs: Path) -> list[Uevent]:
    out = []
    dirs: list[Path] = []
    for cls in COLDPLUG_CLASSES:
        with contextlib.suppress(OSError):
            dirs.extend((sysfs / "class" / cls).iterdir())
    with contextlib.suppress(OSError):
        dirs.extend((sysfs / "bus" / "pci" / "devices").iterdir())
    for d in dirs:
        ev = from_sysfs(sysfs, d)
        if ev is not None:
            out.append(ev)
    return out


class Matcher(Protocol):
    def matches(self, ev: Uevent) -> bool: ...

    def describe(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Match:
    """A matcher from a predicate and a description (the text of the timeout error)."""

    pred: Callable[[Uevent], bool]
    text: str

    def matches(self, ev: Uevent) -> bool:
        return self.pred(ev)

    def describe(self) -> str:
        return self.text


class UeventListener:
    def __init__(
        self,
        *,
        hotplug_timeout: float,
        sysfs: Path = Path("/sys"),
        online_memory: bool = True,
    ) -> None:
        self.hotplug_timeout = hotplug_timeout
        self._sysfs = sysfs
        self._online_memory = online_memory
        self._sock: socket.socket | None = None
        self._devices: dict[str, Uevent] = {}
        self._waiters: dict[int, tuple[Matcher, asyncio.Future[Uevent]]] = {}
        self._ids = itertools.count()
        self._listeners: list[Callable[[Uevent], None]] = []
        self.received = 0
        self._resync: asyncio.Task[None] | None = None

    @property
    def running(self) -> bool:
        return self._sock is not None

    async def start(self) -> None:
        sock = socket.socket(
            socket.AF_NETLINK,
            socket.SOCK_DGRAM | socket.SOCK_NONBLOCK | socket.SOCK_CLOEXEC,
            NETLINK_KOBJECT_UEVENT,
        )
        try:
            try:
                sock.setsockopt(socket.SOL_SOCKET, 33, RCVBUF)  # SO_RCVBUFFORCE
            except OSError:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
            sock.bind((0, UEVENT_GROUP_KERNEL))
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._on_readable)
        for ev in await asyncio.to_thread(scan_sysfs, self._sysfs):
            self._devices.setdefault(ev.devpath, ev)
        log.info("uevent listener started", extra={"devices": len(self._devices)})

    def stop(self) -> None:
        if self._resync is not None:
            self._resync.cancel()
            self._resync = None
        if self._sock is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._sock.fileno())
        self._sock.close()
        self._sock = None
        for _, fut in self._waiters.values():
            if not fut.done():
                fut.cancel()
        self._waiters.clear()

    def add_listener(self, fn: Callable[[Uevent], None]) -> None:
        self._listeners.append(fn)

    def _on_readable(self) -> None:
        sock = self._sock
        while sock is not None:
            try:
                data = sock.recv(16384)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as err:
                if err.errno == errno.ENOBUFS:  # the kernel dropped events: re-read sysfs
                    log.warning("uevents were lost (ENOBUFS); re-reading sysfs")
                    self._schedule_resync()
                    continue
                log.warning("uevent socket error", extra={"error": str(err)})
                return
            self.received += 1
            ev = parse(data)
            if ev is not None:
                self.handle(ev)

    def _schedule_resync(self) -> None:
        if self._resync is not None and not self._resync.done():
            return
        self._resync = asyncio.get_running_loop().create_task(self.resync(), name="uevent resync")

    async def resync(self) -> None:
        """Offer what sysfs shows now as `add` events (devices whose uevent was lost)."""
        for ev in await asyncio.to_thread(scan_sysfs, self._sysfs):
            if ev.devpath not in self._devices:
                self.handle(ev)

    def handle(self, ev: Uevent) -> None:
        """Record one event and wake its waiters (also the entry point for unit tests)."""
        if ev.action in ("add", "remove") and ev.subsystem in LOGGED_SUBSYSTEMS:
            log.info("uevent", extra={"action": ev.action, "devpath": ev.devpath})
        if ev.action == "remove":
            self._devices.pop(ev.devpath, None)
            return
        if ev.action not in ("add", "change", "bind", "online", "move"):
            return
        if ev.action == "add" and ev.devpath.startswith(MEMORY_DEVPATH_PREFIX):
            if self._online_memory:
                self._online_memory_block(ev)
            return
        self._devices[ev.devpath] = ev
        for fn in self._listeners:
            fn(ev)
        for wid, (matcher, fut) in list(self._waiters.items()):
            if not fut.done() and matcher.matches(ev):
                fut.set_result(ev)
                del self._waiters[wid]

    def _online_memory_block(self, ev: Uevent) -> None:
        online = self._sysfs / ev.devpath.lstrip("/") / "online"
        try:
            if online.read_text().strip() != "1":
                online.write_text("1")
            log.info("memory block onlined", extra={"devpath": ev.devpath})
        except OSError as err:
            log.warning("online memory block", extra={"devpath": ev.devpath, "error": str(err)})

    def seen(self) -> Iterable[Uevent]:
        return list(self._devices.values())

    def find(self, matcher: Matcher) -> Uevent | None:
        for ev in self._devices.values():
            if matcher.matches(ev):
                return ev
        return None

    async def wait_for(self, matcher: Matcher, within: float | None = None) -> Uevent:
        """The first device (seen already, or from now on) that matches, within the timeout."""
        found = self.find(matcher)
        if found is not None:
            return found
        t = self.hotplug_timeout if within is None else within
        fut: asyncio.Future[Uevent] = asyncio.get_running_loop().create_future()
        wid = next(self._ids)
        self._waiters[wid] = (matcher, fut)
        try:
            async with asyncio.timeout(t):
                ev = await fut
            log.info("uevent matched", extra={"devpath": ev.devpath, "waiter": matcher.describe()})
            return ev
        except TimeoutError:
            raise DeadlineExceeded(
                f"Timeout after {t:g} s waiting for uevent {matcher.describe()}"
            ) from None
        finally:
            self._waiters.pop(wid, None)
