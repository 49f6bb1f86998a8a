"""The parent's side of a launch: fork stage-1 and walk the sync protocol (``oci.engine.sync``)
until the container process is ready; and start's walk: release a created init through its
exec fifo and wait until it has exec'd.

Per launch, stage-1 is forked (it enters or creates the namespaces), forks the container process
and exits, so the container process is reparented to the nearest subreaper: the agent (PID 1 or
PR_SET_CHILD_SUBREAPER) or ``kata-oci run/exec`` (which set themselves subreaper). The engine
never waits for container processes: the caller reaps them.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import select
import signal
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass

from oci.syscalls.api import Syscalls

from . import sync
from .errors import HookError, InitError, InvalidState
from .init import InitConfig, stage1
from .plan import NamespacePath
from .state import exiting

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Parent:
    """What the parent does for the child at the sync points.

    ``go``: called with stage-1's pid before "go"; puts it into the container's cgroup and
    returns the files stage-1 joins through itself (None: ``cgroup_join`` is set, no "go").
    ``id_maps``: the uid_map and gid_map text for a new user namespace.
    ``prestart``: called with the container process's pid at "hooks"; runs the prestart and
    createRuntime hooks and returns the state JSON the init's hooks read.
    ``meanwhile``: the caller's own work, run once stage-1 may go on (a failure is a failed
    launch). ``undo``: called when the launch fails (after the processes are gone)."""

    go: Callable[[int], tuple[str, ...]] | None = None
    id_maps: tuple[str, str] | None = None
    prestart: Callable[[int], str] | None = None
    meanwhile: Callable[[], None] | None = None
    undo: Callable[[], None] | None = None


def open_namespaces(
    paths: tuple[NamespacePath, ...], opened: contextlib.ExitStack
) -> tuple[tuple[int, int, str], ...]:
    """Open each namespace (close-on-exec; closed with ``opened``) → (fd, CLONE_NEW*, path).
    Raises OSError naming the path."""
    out = []
    for ns in paths:
        fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
        opened.callback(os.close, fd)
        out.append((fd, ns.flag, ns.path))
    return tuple(out)


def launch(cfg: InitConfig, sys_: Syscalls, parent: Parent) -> int:
    """Fork stage-1, walk the sync protocol, return the container process's pid."""
    psock, csock = sync.pair()
    pid1 = os.fork()
    if pid1 == 0:  # stage-1: never returns
        psock.close()
        stage1(cfg, sys_, csock)
    csock.close()
    init_pid = 0
    reaped = False
    ready = False  # stage-2's "ready" can overtake stage-1's "pid" on the shared socket
    try:
        if parent.go is not None:
            sync.send(psock, "go", cgroup=list(parent.go(pid1)))
        if parent.meanwhile is not None:
            parent.meanwhile()
        step = "stage-1"
        while True:
            msg = sync.recv(psock, step)
            t = msg["t"]
            if t == "error":
                raise sync.error_from(msg)
            if t == "idmap":
                step = "write uid/gid maps"
                if parent.id_maps is None:
                    raise InitError(step, "protocol error: id maps requested by an exec")
                _write_id_maps(pid1, *parent.id_maps)
                sync.send(psock, "idmap_ok")
            elif t == "pid":
                init_pid = int(msg["pid"])
                os.waitpid(pid1, 0)
                reaped = True
                step = "container init"
                if ready:
                    return _after_ready(cfg, psock, init_pid)
            elif t == "hooks":
                step = "prestart hooks"
                state = parent.prestart(init_pid) if parent.prestart is not None else ""
                sync.send(psock, "hooks_ok", state=state)
            elif t == "warn":
                log.warning("container %s: %s", cfg.container_id, msg.get("msg"))
            elif t == "ready":
                if not init_pid:
                    ready = True
                    continue
                return _after_ready(cfg, psock, init_pid)
            else:
                raise InitError(step, f"protocol error: unexpected message {t!r}")
    except BaseException as err:
        if init_pid:
            kill_and_wait(init_pid)
        if not reaped:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid1, signal.SIGKILL)
            os.waitpid(pid1, 0)
        if parent.undo is not None:
            parent.undo()
        if isinstance(err, HookError):
            raise InitError("prestart hooks", str(err), err.errno) from None
        raise
    finally:
        psock.close()


def _after_ready(cfg: InitConfig, psock: socket.socket, pid: int) -> int:
    """For exec, wait for EOF on the sync socket: the process's end is close-on-exec, so EOF
    means it has exec'd (or died): the caller sees the program, not the engine's init."""
    if cfg.mode == "exec":
        with contextlib.suppress(OSError):
            while psock.recv(65536):
                pass
    return pid


def _write_id_maps(pid: int, uid_map: str, gid_map: str) -> None:
    for name, text in (("uid_map", uid_map), ("gid_map", gid_map)):
        path = f"/proc/{pid}/{name}"
        try:
            fd = os.open(path, os.O_WRONLY)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        except OSError as err:
            raise InitError(
                "write uid/gid maps", os.strerror(err.errno or 0), err.errno or 0, path
            ) from None


def release(fifo: str, timeout: float = 30.0) -> None:
    """Let the created init waiting on ``fifo`` exec its program, and return once it has
    (after its startContainer hooks), so callers and poststart hooks see the workload, not
    the engine's init.

    The init keeps its end of the fifo (O_RDWR, close-on-exec) open until execve: a reader of
    ours reports POLLHUP when the last writer is gone, provided a writer opened after it,
    hence the second writer that sends the byte."""
    try:
        fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ENXIO:  # no reader: the init is gone
            raise InvalidState("cannot start a container that has stopped") from None
        raise
    try:
        rfd = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            wfd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            try:
                os.write(wfd, b"0")
            finally:
                os.close(wfd)
            os.close(fd)
            fd = -1
            os.unlink(fifo)
            _wait_hangup(rfd, timeout)
        finally:
            os.close(rfd)
    finally:
        if fd >= 0:
            os.close(fd)


def _wait_hangup(fd: int, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until the fifo's writers are all gone: EPOLLHUP on our
    reader. Edge-triggered: the unread start byte (level EPOLLIN) must not make this spin."""
    deadline = time.monotonic() + timeout
    with select.epoll(1) as ep:
        ep.register(fd, select.EPOLLIN | select.EPOLLET)
        while (left := deadline - time.monotonic()) > 0:
            try:
                events = ep.poll(left)
            except InterruptedError:
                continue
            if any(mask & select.EPOLLHUP for _, mask in events):
                return


def write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def kill_and_wait(pid: int, timeout: float = 10.0) -> None:
    """SIGKILL ``pid`` and wait until it is gone or a zombie (it may not be our child)."""
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    delay = 0.0005
    while time.monotonic() < deadline:
        try:  # our child: notice the exit without reaping it (the caller reaps)
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
                return
        except ChildProcessError:
            pass
        if exiting(pid):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


__all__ = ["Parent", "kill_and_wait", "launch", "open_namespaces", "release", "write_pid_file"]
