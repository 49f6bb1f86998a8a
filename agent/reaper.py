"""The single child reaper of the agent process.

The agent is the guest's PID 1, or a child subreaper (``PR_SET_CHILD_SUBREAPER``) when it runs as an
ordinary process, so every orphan in the guest ends up as its child and must be reaped. Reaping with
``waitpid(-1)`` steals exit statuses from anyone else who waits for a child, so this module is the
only place in the process that calls ``waitpid``, and every child is started by ``agent.spawn``,
which registers the pid here.

API (all methods must be called on the event loop's thread)::

    reaper = Reaper(reap_all=True)      # PID 1 / subreaper mode: SIGCHLD -> waitpid(-1) loop
    reaper.start(loop, subreaper=True)  # installs the SIGCHLD handler, becomes subreaper
    fut = reaper.register(pid)          # asyncio.Future[ExitStatus], set once the pid is reaped
    fut = reaper.adopt(pid)             # same, for a pid that was not started by us (a grandchild
                                        # that the kernel reparented to us); resolves at once if its
                                        # exit was already reaped as an orphan
    reaper.close()

``register`` is called by ``agent.spawn`` in the same synchronous step as ``posix_spawn``; the
SIGCHLD handler runs as a loop callback, so it can never run between the two and no exit status is
lost or delivered to nobody. A reaped pid nobody registered is an orphan: it is logged at debug
level and its status kept in a small bounded table so a later ``adopt`` still gets it.

Two modes:

* ``reap_all=True`` (the agent): ``waitpid(-1, WNOHANG)`` until no child is left to reap. Use it
  only in a process that owns all of its children (PID 1, or a subreaper that starts children only
  through ``agent.spawn``).
* ``reap_all=False`` (tests, tools embedding the agent code): each registered pid is watched with a
  pidfd and reaped by ``waitpid(pid)``; other children of the process are left alone, so a test
  runner's ``subprocess`` bookkeeping keeps working.

``default_reaper()`` returns the reaper of the running loop, creating a ``reap_all=False`` one on
first use when the application did not install one with ``install()``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import weakref
from collections import OrderedDict
from dataclasses import dataclass

from oci.syscalls import libc
from oci.syscalls.consts import PR_SET_CHILD_SUBREAPER

log = logging.getLogger(__name__)

# <linux/wait.h> __WALL: also children whose exit signal is not SIGCHLD (clone3 with a custom or no
# exit signal), as Kata's reaper waits for them.
WALL = 0x40000000
_ORPHAN_TABLE_SIZE = 1024

_reapers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Reaper] = weakref.WeakKeyDictionary()


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """A decoded wait status. Exactly one of ``code`` and ``signal`` is set."""

    pid: int
    code: int | None
    signal: int | None
    core_dumped: bool = False

    @classmethod
    def from_wait_status(cls, pid: int, status: int) -> ExitStatus:
        if os.WIFSIGNALED(status):
            return cls(pid, None, os.WTERMSIG(status), os.WCOREDUMP(status))
        return cls(pid, os.WEXITSTATUS(status), None)

    @property
    def returncode(self) -> int:
        """As ``subprocess``: the exit code, or ``-signal`` when killed by a signal."""
        return self.code if self.code is not None else -(self.signal or 0)

    @property
    def shell_code(self) -> int:
        """As a shell reports it: the exit code, or ``128 + signal``."""
        return self.code if self.code is not None else 128 + (self.signal or 0)

    def describe(self) -> str:
        if self.signal is not None:
            name = _signal_name(self.signal)
            return f"killed by {name}" + (" (core dumped)" if self.core_dumped else "")
        return f"exited with status {self.code}"


def _signal_name(signum: int) -> str:
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def set_child_subreaper() -> None:
    """Make this process a child subreaper, so orphaned descendants are reparented to it."""
    libc.prctl(PR_SET_CHILD_SUBREAPER, 1)


class Reaper:
    """Owns the exit statuses of every child of the process (see the module docstring)."""

    def __init__(self, *, reap_all: bool) -> None:
        self.reap_all = reap_all
        self._loop: asyncio.AbstractEventLoop | None = None
        self._waiters: dict[int, asyncio.Future[ExitStatus]] = {}
        self._pidfds: dict[int, int] = {}
        self._orphans: OrderedDict[int, ExitStatus] = OrderedDict()
        self._orphans_reaped = 0
        self._raw_handler = False

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self, loop: asyncio.AbstractEventLoop, *, subreaper: bool = False) -> None:
        """Attach to ``loop``. In ``reap_all`` mode install the SIGCHLD handler and reap whatever
        already exited. ``subreaper`` asks for PR_SET_CHILD_SUBREAPER (pointless as PID 1)."""
        if self._loop is not None:
            raise RuntimeError("reaper already started")
        self._loop = loop
        if self.reap_all:
            if subreaper and os.getpid() != 1:
                set_child_subreaper()
            self._install_sigchld(loop)
            self._reap_all()

    def close(self) -> None:
        """Detach from the loop; pending waiters are cancelled."""
        loop = self._loop
        if loop is None:
            return
        if self.reap_all:
            self._remove_sigchld(loop)
        for pid in list(self._pidfds):
            self._drop_pidfd(pid)
        for fut in self._waiters.values():
            fut.cancel()
        self._waiters.clear()
        if _reapers.get(loop) is self:
            del _reapers[loop]
        self._loop = None

    @property
    def orphans_reaped(self) -> int:
        """How many exits of pids nobody registered were reaped (for metrics and tests)."""
        return self._orphans_reaped

    @property
    def pending(self) -> int:
        """How many registered children have not exited yet."""
        return len(self._waiters)

    # -- registration ----------------------------------------------------------------------------

    def register(self, pid: int) -> asyncio.Future[ExitStatus]:
        """Watch a child we just started. Call in the same loop step as the spawn."""
        loop = self._require_loop()
        if pid in self._waiters:
            raise RuntimeError(f"pid {pid} is already registered with the reaper")
        fut: asyncio.Future[ExitStatus] = loop.create_future()
        self._waiters[pid] = fut
        if not self.reap_all:
            self._watch_pidfd(pid)
        return fut

    def adopt(self, pid: int) -> asyncio.Future[ExitStatus]:
        """Watch a descendant reparented to us (we did not spawn it). Resolves immediately if its
        exit was reaped as an orphan already. Only meaningful in ``reap_all`` mode."""
        loop = self._require_loop()
        status = self._orphans.pop(pid, None)
        if status is not None:
            fut: asyncio.Future[ExitStatus] = loop.create_future()
            fut.set_result(status)
            return fut
        existing = self._waiters.get(pid)
        if existing is not None:
            return existing
        return self.register(pid)

    def _require_loop(self) -> asyncio.AbstractEventLoop:
        if self._loop is None:
            raise RuntimeError("reaper is not started")
        return self._loop

    # -- reaping ---------------------------------------------------------------------------------

    def _install_sigchld(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.add_signal_handler(signal.SIGCHLD, self._reap_all)
            self._raw_handler = False
        except RuntimeError:
            # uvloop refuses SIGCHLD (libuv wants it for its own subprocesses, which we never
            # use). A Python-level handler works there: uvloop runs Python signal handlers from
            # its wakeup fd. The handler only schedules the reap pass, so it still runs as a loop
            # callback and can never come between a posix_spawn and the registration.
            def on_sigchld(signum: int, frame: object) -> None:
                loop.call_soon_threadsafe(self._reap_all)

            signal.signal(signal.SIGCHLD, on_sigchld)
            self._raw_handler = True

    def _remove_sigchld(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._raw_handler:
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        elif not loop.is_closed():
            loop.remove_signal_handler(signal.SIGCHLD)

    def _reap_all(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG | WALL)
            except ChildProcessError:
                return
            except InterruptedError:
                continue
            if pid == 0:
                return
            self._deliver(pid, status)

    def _deliver(self, pid: int, status: int) -> None:
        exit_status = ExitStatus.from_wait_status(pid, status)
        fut = self._waiters.pop(pid, None)
        if fut is None:
            self._orphans_reaped += 1
            self._orphans[pid] = exit_status
            while len(self._orphans) > _ORPHAN_TABLE_SIZE:
                self._orphans.popitem(last=False)
            log.debug("reaped orphan", extra={"pid_reaped": pid, "status": exit_status.describe()})
            return
        if not fut.done():
            fut.set_result(exit_status)

    def _watch_pidfd(self, pid: int) -> None:
        loop = self._require_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            # Already reaped by someone else: should not happen for a child we just spawned.
            self._waiters.pop(pid).set_exception(ChildProcessError(f"pid {pid} vanished"))
            return
        self._pidfds[pid] = pidfd
        loop.add_reader(pidfd, self._on_pidfd, pid)

    def _drop_pidfd(self, pid: int) -> None:
        pidfd = self._pidfds.pop(pid, None)
        if pidfd is None:
            return
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.remove_reader(pidfd)
        os.close(pidfd)

    def _on_pidfd(self, pid: int) -> None:
        try:
            got, status = os.waitpid(pid, os.WNOHANG | WALL)
        except ChildProcessError:
            self._drop_pidfd(pid)
            fut = self._waiters.pop(pid, None)
            if fut is not None and not fut.done():
                fut.set_exception(ChildProcessError(f"pid {pid} was reaped by someone else"))
            return
        if got == 0:
            return
        self._drop_pidfd(pid)
        self._deliver(pid, status)


def install(reaper: Reaper, loop: asyncio.AbstractEventLoop) -> None:
    """Make ``reaper`` the one ``default_reaper()`` returns for ``loop`` (start-up does)."""
    current = _reapers.get(loop)
    if current is not None and current is not reaper:
        raise RuntimeError("another reaper is installed for this loop")
    _reapers[loop] = reaper


def default_reaper() -> Reaper:
    """The reaper of the running loop; a per-pid (``reap_all=False``) one is created on first use
    when the application has not installed one."""
    loop = asyncio.get_running_loop()
    reaper = _reapers.get(loop)
    if reaper is None:
        reaper = Reaper(reap_all=False)
        reaper.start(loop)
        _reapers[loop] = reaper
    return reaper


def current_reaper() -> Reaper | None:
    """The reaper installed for the running loop, if any (never creates one)."""
    with contextlib.suppress(RuntimeError):
        return _reapers.get(asyncio.get_running_loop())
    return None
