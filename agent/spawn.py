"""The only way the agent starts a child process.

Never use ``subprocess`` or ``asyncio.create_subprocess_*`` in the agent: the reaper
(``agent.reaper``) owns every exit status, and only children started here are registered with it
before it can reap them.

High level, for helpers (iptables, mkfs, modprobe, hooks)::

    done = await run(["mkfs.ext4", "-F", dev], timeout=30)
    done.returncode, done.stdout, done.stderr          # Completed; bytes
    done.check("format the scratch disk")              # raises agent.errors.Internal if != 0

``run`` feeds ``input`` on stdin (or /dev/null), collects stdout and stderr (each capped at
``max_output`` bytes; the rest is drained and dropped), and on ``timeout`` kills the child with
SIGKILL, waits for it and raises ``agent.errors.DeadlineExceeded`` naming the program. A program
that cannot be started raises ``SpawnError`` (an ``agent.errors.Internal`` with ``errno``).

Low level, with an explicit fd plan::

    child = spawn(argv, fds={0: rfd, 1: wfd, 2: wfd, 3: sync_fd}, env={...}, setsid=True)
    child.pid
    status = await child.wait()        # agent.reaper.ExitStatus (code / signal / returncode)
    child.send_signal(signal.SIGTERM)  # a no-op once the child has been reaped (no pid reuse)

``fds`` maps a child fd number to a parent fd (or ``None`` for /dev/null). The child gets exactly
those fds: everything else the agent has open is close-on-exec. Missing 0, 1 and 2 are /dev/null.
Signal dispositions the agent changed (SIGPIPE is ignored by Python) are reset to default and the
signal mask is cleared in the child. The parent keeps its own copies of the fds and must close them.

Both must be called on the event loop's thread (the pid is registered with the loop's reaper in
the same synchronous step as ``posix_spawn``). The reaper is ``reaper``, if given, else the one
installed for the running loop (``agent.reaper.default_reaper()``). A ``Spawner`` bundles a reaper
for code that receives its spawner by injection (e.g. the OCI engine's launcher); ``Runner`` is
``run``'s signature for the areas that take it injected (storage, network), so their tests can
pass a fake.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import os
import signal
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from agent.errors import DeadlineExceeded, Internal
from agent.reaper import ExitStatus, Reaper, default_reaper

DEFAULT_MAX_OUTPUT = 16 << 20
_RESET_SIGNALS = frozenset({signal.SIGPIPE, signal.SIGXFSZ})


class SpawnError(Internal):
    """The program could not be started (not found, not executable, ...)."""

    def __init__(self, message: str, errno_: int) -> None:
        super().__init__(message)
        self.errno = errno_


@dataclass(frozen=True, slots=True)
class Completed:
    """Result of ``run``."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    def check(self, what: str | None = None) -> Completed:
        """Raise ``agent.errors.Internal`` naming the program, the step and its stderr unless the
        program exited with status 0."""
        if self.returncode == 0:
            return self
        prog = self.argv[0] if self.argv else "?"
        how = (
            f"exited with status {self.returncode}"
            if self.returncode >= 0
            else f"killed by signal {-self.returncode}"
        )
        err = self.stderr.decode(errors="replace").strip()
        prefix = f"{what}: " if what else ""
        raise Internal(f"{prefix}{prog} {how}" + (f": {err}" if err else ""))


class RunResult(Protocol):
    """What the callers of a ``Runner`` read of its result (``Completed`` has more)."""

    @property
    def returncode(self) -> int: ...
    @property
    def stdout(self) -> bytes: ...
    @property
    def stderr(self) -> bytes: ...


class Runner(Protocol):
    """``run`` as the areas that take it injected call it."""

    def __call__(
        self, argv: Sequence[str], *, input: bytes | None = None, timeout: float
    ) -> Awaitable[RunResult]: ...


class Child:
    """A started child process whose exit the reaper reports."""

    def __init__(self, argv: Sequence[str], pid: int, exit_future: asyncio.Future[ExitStatus]):
        self.argv = tuple(argv)
        self.pid = pid
        self._exit = exit_future

    @property
    def exited(self) -> bool:
        return self._exit.done()

    @property
    def status(self) -> ExitStatus | None:
        """The exit status once reaped, else None."""
        if self._exit.done() and not self._exit.cancelled() and self._exit.exception() is None:
            return self._exit.result()
        return None

    @property
    def returncode(self) -> int | None:
        status = self.status
        return None if status is None else status.returncode

    async def wait(self) -> ExitStatus:
        """Wait for the exit (cancelling the wait does not affect the child)."""
        return await asyncio.shield(self._exit)

    def send_signal(self, signum: int) -> bool:
        """Signal the child unless it has already been reaped; False if it was gone."""
        if self._exit.done():
            return False
        try:
            os.kill(self.pid, signum)
        except ProcessLookupError:
            return False
        return True

    def kill(self) -> bool:
        return self.send_signal(signal.SIGKILL)

    def __repr__(self) -> str:
        return f"<Child pid={self.pid} argv0={self.argv[0] if self.argv else '?'}>"


def close_inherited_fds_on_exec() -> list[int]:
    """Mark every fd above 2 close-on-exec; returns the fds changed.

    Python opens everything close-on-exec, but a process can inherit fds without the flag from
    whoever started it, and ``posix_spawn`` has no "close all others" action. Start-up
    (``agent.boot.phase1``) calls this once so that children get exactly their fd plan.
    """
    changed: list[int] = []
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd <= 2:
            continue
        try:
            flags = fcntl.fcntl(fd, fcntl.F_GETFD)
            if not flags & fcntl.FD_CLOEXEC:
                fcntl.fcntl(fd, fcntl.F_SETFD, flags | fcntl.FD_CLOEXEC)
                changed.append(fd)
        except OSError:
            continue  # the fd of the directory listing itself, closed by now
    return changed


def spawn(
    argv: Sequence[str],
    *,
    fds: Mapping[int, int | None] | None = None,
    env: Mapping[str, str] | None = None,
    setsid: bool = False,
    setpgroup: int | None = None,
    executable: str | None = None,
    reaper: Reaper | None = None,
) -> Child:
    """Start ``argv`` with the given fd plan (see the module docstring) and return its ``Child``.

    ``env`` defaults to an empty environment plus a standard PATH: the agent's own environment is
    not passed on implicitly. ``executable`` overrides the program path (``argv[0]`` is then only
    the name the child sees); otherwise ``argv[0]`` is searched in the child's PATH.
    """
    if not argv:
        raise ValueError("spawn: empty argv")
    reaper = reaper if reaper is not None else default_reaper()
    child_env = dict(env) if env is not None else {"PATH": _DEFAULT_PATH}
    plan: dict[int, int | None] = {0: None, 1: None, 2: None}
    if fds is not None:
        plan.update(fds)
    if any(target < 0 for target in plan):
        raise ValueError("spawn: negative fd in the fd plan")

    # Duplicate every source above all target numbers first, so that dup2 in the child cannot
    # clobber a source that another mapping still needs. The copies are close-on-exec.
    floor = max(plan) + 1
    temps: list[int] = []
    devnull = -1
    try:
        actions: list[tuple[int, int, int]] = []
        for target, source in sorted(plan.items()):
            if source is None:
                if devnull < 0:
                    devnull = os.open(os.devnull, os.O_RDWR | os.O_CLOEXEC)
                source = devnull
            tmp = fcntl.fcntl(source, fcntl.F_DUPFD_CLOEXEC, floor)
            temps.append(tmp)
            actions.append((os.POSIX_SPAWN_DUP2, tmp, target))
        path = executable or _which(argv[0], child_env.get("PATH", _DEFAULT_PATH))
        try:
            if setpgroup is None:
                pid = os.posix_spawn(
                    path,
                    list(argv),
                    child_env,
                    file_actions=actions,
                    setsid=setsid,
                    setsigmask=(),
                    setsigdef=_RESET_SIGNALS,
                )
            else:
                pid = os.posix_spawn(
                    path,
                    list(argv),
                    child_env,
                    file_actions=actions,
                    setpgroup=setpgroup,
                    setsigmask=(),
                    setsigdef=_RESET_SIGNALS,
                )
        except OSError as err:
            code = err.errno or errno.EIO
            raise SpawnError(
                f"start {argv[0]}: {os.strerror(code)} ({errno.errorcode.get(code, code)})", code
            ) from err
        return Child(argv, pid, reaper.register(pid))
    finally:
        for tmp in temps:
            os.close(tmp)
        if devnull >= 0:
            os.close(devnull)


_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _which(name: str, path: str) -> str:
    if "/" in name:
        return name
    for directory in path.split(":"):
        candidate = os.path.join(directory or ".", name)
        if os.access(candidate, os.X_OK) and not os.path.isdir(candidate):
            return candidate
    raise SpawnError(f"start {name}: executable not found in PATH {path}", errno.ENOENT)


async def run(
    argv: Sequence[str],
    *,
    input: bytes | None = None,
    timeout: float,  # noqa: ASYNC109 - on expiry the child is killed, not only the wait
    env: Mapping[str, str] | None = None,
    max_output: int = DEFAULT_MAX_OUTPUT,
    reaper: Reaper | None = None,
) -> Completed:
    """Run ``argv`` to completion and collect its output (see the module docstring)."""
    loop = asyncio.get_running_loop()
    pipes: list[int] = []

    def pipe() -> tuple[int, int]:
        r, w = os.pipe2(os.O_CLOEXEC)
        pipes.extend((r, w))
        return r, w

    try:
        out_r, out_w = pipe()
        err_r, err_w = pipe()
        in_r: int | None = None
        in_w = -1
        if input is not None:
            in_r, in_w = pipe()
        child = spawn(argv, fds={0: in_r, 1: out_w, 2: err_w}, env=env, reaper=reaper)
        for fd in (out_w, err_w, *(() if in_r is None else (in_r,))):
            os.close(fd)
            pipes.remove(fd)
        readers = [
            loop.create_task(_read_all(loop, out_r, max_output)),
            loop.create_task(_read_all(loop, err_r, max_output)),
        ]
        writer = None
        if input is not None:
            writer = loop.create_task(_write_all(loop, in_w, input))
        tasks = [*readers, *(() if writer is None else (writer,))]
        try:
            async with asyncio.timeout(timeout):
                if writer is not None:
                    await writer
                    os.close(in_w)  # EOF for the child
                    pipes.remove(in_w)
                status = await child.wait()
                stdout, stderr = await asyncio.gather(*readers)
        except TimeoutError:
            child.kill()
            await child.wait()
            raise DeadlineExceeded(f"{argv[0]}: did not finish within {timeout:g}s") from None
        finally:
            if child.status is None:
                child.kill()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        return Completed(tuple(argv), status.returncode, stdout, stderr)
    finally:
        for fd in pipes:
            with contextlib.suppress(OSError):
                os.close(fd)


async def _read_all(loop: asyncio.AbstractEventLoop, fd: int, limit: int) -> bytes:
    """Read ``fd`` to EOF without blocking the loop; keep at most ``limit`` bytes."""
    os.set_blocking(fd, False)
    chunks: list[bytes] = []
    kept = 0
    readable: asyncio.Event = asyncio.Event()
    loop.add_reader(fd, readable.set)
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except BlockingIOError:
                readable.clear()
                await readable.wait()
                continue
            if not chunk:
                return b"".join(chunks)
            if kept < limit:
                chunk = chunk[: limit - kept]
                chunks.append(chunk)
                kept += len(chunk)
    finally:
        loop.remove_reader(fd)


async def _write_all(loop: asyncio.AbstractEventLoop, fd: int, data: bytes) -> None:
    """Write all of ``data`` to ``fd``; a child that stops reading is not an error."""
    os.set_blocking(fd, False)
    view = memoryview(data)
    writable: asyncio.Event = asyncio.Event()
    loop.add_writer(fd, writable.set)
    try:
        while view:
            try:
                n = os.write(fd, view[:65536])
            except BlockingIOError:
                writable.clear()
                await writable.wait()
                continue
            except BrokenPipeError:
                return
            view = view[n:]
    finally:
        loop.remove_writer(fd)


class Spawner:
    """``spawn``/``run`` bound to one reaper, for injection into components that start children."""

    def __init__(self, reaper: Reaper) -> None:
        self.reaper = reaper

    def spawn(
        self,
        argv: Sequence[str],
        *,
        fds: Mapping[int, int | None] | None = None,
        env: Mapping[str, str] | None = None,
        setsid: bool = False,
        setpgroup: int | None = None,
        executable: str | None = None,
    ) -> Child:
        return spawn(
            argv,
            fds=fds,
            env=env,
            setsid=setsid,
            setpgroup=setpgroup,
            executable=executable,
            reaper=self.reaper,
        )

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109 - see run()
        env: Mapping[str, str] | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ) -> Completed:
        return await run(
            argv, input=input, timeout=timeout, env=env, max_output=max_output, reaper=self.reaper
        )
