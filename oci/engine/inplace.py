"""exec from a disposable caller (the spawner's worker): ``Engine.exec(..., in_caller=True)``.

The worker serves one request and exits, so it may change itself for the container process it
starts: it joins the container's namespaces, and for a plain process (no LSM label, console
socket or preserved fds; a seccomp profile only with no_new_privs) it also takes on the
process's rlimits, capabilities, user, working directory and umask itself, then forks. The
child then runs almost no Python: it moves itself into the container's cgroup, starts a
session, takes its stdio (and controlling tty), loads the seccomp filter (last, as the init
does with no_new_privs), and execs. Every step before the fork fails in the worker with the step's
name; the child reports its own failures through a close-on-exec pipe, whose EOF also tells
the worker that the program runs. An ``execve`` failure is what the init's reports are: a line
on the process's stderr and exit status 127.

Otherwise the child runs the init's exec steps (``oci.engine.init.stage2``) after the same
namespace and cgroup joins (one fork instead of stage-1's two).

The cgroup files are opened before the namespaces are joined, as root: the kernel (>= 5.16)
checks a migration against the opener's credentials and cgroup namespace, and the worker
itself never enters the container's cgroup (it would be counted, frozen and charged there
until it exits). The container process is the worker's child until the worker exits; then it
is reparented to the subreaper (the agent), as it is after stage-1's exit in ``kata-oci``.

Only on Linux >= 5.16 (``cgroup_checks_at_open``); older kernels take stage-1's path. What this
path saves: docs/performance.md.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
from socket import socket

from oci.syscalls import consts as c
from oci.syscalls.api import Syscalls

# Everything this module runs after joining the container's mount namespace is imported here:
# the Python library is not visible from there.
from . import sync
from .errors import InitError
from .init import InitConfig, stage2
from .process import ProcessPlan, exec_env, find_executable

log = logging.getLogger(__name__)

# What stage-1 resets before the container process inherits it (Python ignores SIGPIPE and
# SIGXFSZ, and handles SIGINT).
_DEFAULT_SIGNALS = (signal.SIGINT, signal.SIGPIPE, signal.SIGXFSZ, signal.SIGTERM)


def cgroup_checks_at_open(release: str | None = None) -> bool:
    """Whether the kernel checks a cgroup migration against the credentials and cgroup namespace
    of whoever opened ``cgroup.procs``/``tasks`` rather than of the writer (Linux >= 5.16).
    The in-caller exec relies on it: its child joins the container's cgroup through files the
    worker opened as root before it joined the container's namespaces and took on the
    process's user. On older kernels an exec takes stage-1's path, where the parent moves the
    process from outside."""

    def leading_int(text: str) -> int:
        digits = ""
        for ch in text:
            if not ch.isdigit():
                break
            digits += ch
        return int(digits) if digits else -1

    parts = (release or os.uname().release).split(".")
    if len(parts) < 2:
        return False
    return (leading_int(parts[0]), leading_int(parts[1])) >= (5, 16)


def exec_in_caller(cfg: InitConfig, sys_: Syscalls, cgroup_join: tuple[str, ...]) -> int:
    """Start ``cfg``'s process (mode "exec") from this process; return its pid once it has
    exec'd. Leaves this process inside the container's namespaces (and, on the lean path,
    with the process's credentials): the caller must exit soon after."""
    sys_.set_dumpable(False)  # as the init's stage 1: inherited by the child until its execve
    lean = is_lean(cfg)
    if lean:
        # Before the mount namespace changes what /proc/self is: nothing of ours but the
        # stdio the child dup2()s survives its execve.
        _all_cloexec()
    fds: list[tuple[int, str]] = []
    try:
        for path in cgroup_join:
            try:
                fds.append((os.open(path, os.O_WRONLY | os.O_CLOEXEC), path))
            except OSError as err:
                raise InitError(
                    "join cgroup", os.strerror(err.errno or 0), err.errno or 0, path
                ) from None
        join_namespaces(sys_, cfg.ns_join)
        if lean:
            return _lean_exec(cfg, sys_, fds)
        return _stage2_exec(cfg, sys_, fds)
    finally:
        for fd, _ in fds:
            os.close(fd)


def is_lean(cfg: InitConfig) -> bool:
    """Whether the process can be set up in the caller before the fork: what must happen in
    the process itself (an LSM exec label, a console socket, preserved fds; a seccomp filter
    without no_new_privs, which the init loads while it still has CAP_SYS_ADMIN) takes the
    init's steps instead."""
    p = cfg.process
    return (
        cfg.mode == "exec"
        and cfg.stdio is not None
        and cfg.console_fd is None
        and not cfg.preserve_fds
        and (p.seccomp is None or p.no_new_privs)
        and not p.apparmor_profile
        and not p.selinux_label
    )


def join_namespaces(sys_: Syscalls, joins: tuple[tuple[int, int, str], ...]) -> None:
    """Join ``joins`` (fd, CLONE_NEW*, path) in stage-1's order: the user namespace first
    (then become its root), the mount namespace last. pid and time namespaces apply to the
    children forked afterwards. Raises InitError naming the namespace."""
    ordered = [j for j in joins if j[1] == c.CLONE_NEWUSER]
    ordered += [j for j in joins if j[1] not in (c.CLONE_NEWUSER, c.CLONE_NEWNS)]
    ordered += [j for j in joins if j[1] == c.CLONE_NEWNS]
    for fd, flag, path in ordered:
        user = flag == c.CLONE_NEWUSER
        step = f"join user namespace {path}" if user else f"join namespace {path}"
        try:
            sys_.setns(fd, flag, path)
        except OSError as err:
            raise InitError(step, os.strerror(err.errno or 0), err.errno or 0) from None
        if user:
            with contextlib.suppress(OSError):  # 0 not mapped: the process sets its user later
                sys_.setresgid(0)
                sys_.setresuid(0)


# ---------------------------------------------------------------------------------------------
# the lean path


def _lean_exec(cfg: InitConfig, sys_: Syscalls, cgroup_fds: list[tuple[int, str]]) -> int:
    p = cfg.process
    assert cfg.stdio is not None
    step = "rlimits"
    try:
        for res, soft, hard in p.rlimits:
            sys_.setrlimit(res, soft, hard)
        step = "resolve executable"
        exe = find_executable(p.args[0], p.env)
        env = exec_env(p)
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        step = "no_new_privs"
        if p.no_new_privs:
            sys_.set_no_new_privs()
        step = "capabilities bounding set"
        if p.caps is not None:
            sys_.drop_bounding_set(p.caps.bounding)
        step = "user"
        sys_.set_keepcaps(True)
        sys_.setgroups(list(p.additional_gids))
        sys_.setresgid(p.gid)
        sys_.setresuid(p.uid)
        sys_.set_keepcaps(False)
        step = "capabilities"
        if p.caps is not None:
            sys_.set_capabilities(p.caps)
        step = "cwd"
        sys_.chdir(p.cwd)
        os.umask(0o022 if p.umask is None else p.umask)
    except OSError as err:
        raise _init_error(step, err) from None
    rpipe, wpipe = os.pipe2(os.O_CLOEXEC)
    pid = 0
    try:
        pid = os.fork()
        if pid == 0:  # the container process: never returns
            _lean_child(exe, p, env, cfg.stdio, sys_, cgroup_fds, wpipe)
        os.close(wpipe)
        wpipe = -1
        report = b""
        while chunk := _read(rpipe):
            report += chunk
        if report:  # a step before execve failed; the child has exited
            os.waitpid(pid, 0)
            pid = 0
            step, errno, text = report.decode(errors="replace").split("\0", 2)
            raise InitError(step, text, int(errno))
        return pid
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        raise
    finally:
        os.close(rpipe)
        if wpipe >= 0:
            os.close(wpipe)


def _lean_child(
    exe: str,
    p: ProcessPlan,
    env: dict[str, str],
    stdio: tuple[int, int, int],
    sys_: Syscalls,
    cgroup_fds: list[tuple[int, str]],
    report: int,
) -> None:
    step = "join cgroup"
    try:
        for fd, path in cgroup_fds:
            step = f"join cgroup {path}"
            os.write(fd, b"0")
        step = "setsid"
        os.setsid()
        step = "console"
        for i, fd in enumerate(stdio):
            if fd != i:
                os.dup2(fd, i)  # the copy is not close-on-exec
            else:
                os.set_inheritable(fd, True)
        if p.terminal:
            sys_.set_controlling_tty(0)
        if p.seccomp is not None:  # with no_new_privs (is_lean): the last step before execve
            step = "seccomp"
            sys_.load_seccomp(p.seccomp)
    except BaseException as err:
        errno, text = 0, str(err)
        if isinstance(err, OSError):
            errno, text = err.errno or 0, err.strerror or text
        with contextlib.suppress(OSError):
            os.write(report, f"{step}\0{errno}\0{text}".encode())
        os._exit(1)
    try:
        os.execve(exe, list(p.args), env)
    except OSError as err:  # as the init's: on the process's stderr, exit status 127
        with contextlib.suppress(OSError):
            os.write(2, f"kata-oci init: exec {exe}: {err.strerror}\n".encode())
    os._exit(127)


def _kill_and_reap(pid: int) -> None:
    """Undo a fork whose set-up failed: the child is killed and reaped."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _all_cloexec() -> None:
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)


def _read(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 4096)
        except InterruptedError:
            continue


def _init_error(step: str, err: OSError) -> InitError:
    """As the init reports a failed step (``oci.engine.sync.send_error``)."""
    errno = err.errno or 0
    path = err.filename if isinstance(err.filename, str) else None
    text = err.strerror or str(err)
    if errno and os.strerror(errno) not in text:
        text = f"{text}: {os.strerror(errno)}"
    return InitError(step, text, errno, path)


# ---------------------------------------------------------------------------------------------
# the init's steps


def _stage2_exec(cfg: InitConfig, sys_: Syscalls, cgroup_fds: list[tuple[int, str]]) -> int:
    """Fork the container process, which joins the cgroup and runs the init's exec steps;
    walk its half of the sync protocol ("warn", "ready" or "error", then EOF at execve)."""
    psock, csock = sync.pair()
    pid = 0
    try:
        pid = os.fork()
        if pid == 0:  # the container process: never returns
            psock.close()
            _stage2_child(cfg, sys_, csock, cgroup_fds)
        csock.close()
        step = "container process"
        while True:
            msg = sync.recv(psock, step)
            t = msg["t"]
            if t == "error":
                raise sync.error_from(msg)
            if t == "warn":
                log.warning("container %s: %s", cfg.container_id, msg.get("msg"))
            elif t == "ready":
                # The process's end is close-on-exec: EOF = it has exec'd (or died).
                with contextlib.suppress(OSError):
                    while psock.recv(65536):
                        pass
                return pid
            else:
                raise InitError(step, f"protocol error: unexpected message {t!r}")
    except BaseException:
        if pid:
            _kill_and_reap(pid)
        raise
    finally:
        psock.close()
        csock.close()


def _stage2_child(
    cfg: InitConfig, sys_: Syscalls, sock: socket, cgroup_fds: list[tuple[int, str]]
) -> None:
    gc.disable()  # a short-lived fork: never let a collection dirty the inherited pages
    step = "reset signals"
    try:
        for sig in _DEFAULT_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        for fd, path in cgroup_fds:
            step = f"join cgroup {path}"
            os.write(fd, b"0")
    except BaseException as err:
        sync.send_error(sock, step, err)
        os._exit(1)
    stage2(cfg, sys_, sock)
    os._exit(127)  # not reached: stage2 execs or exits
