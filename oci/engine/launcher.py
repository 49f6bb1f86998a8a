"""The parent side of the engine: ``Engine`` creates, starts, execs into, kills and deletes
containers, synchronously, from a single-threaded process.

Process model (decided by measurement; see the numbers below)
-------------------------------------------------------------
The container set-up code (``oci.engine.init``) runs in processes *forked* from a warm,
single-threaded Python process that already has ``oci.engine`` imported:

* ``kata-oci`` (short-lived, single-threaded, like runc) forks them directly.
* The agent (asyncio, must never fork itself) starts one ``oci.engine.spawner`` process at
  start-up (through its own spawn/reaper); per request the spawner forks a worker that runs this
  same ``Engine`` and returns pids and fds over a unix socket (SCM_RIGHTS).

The alternative — a fresh ``python -I -m oci.engine.init`` per container/exec — pays the
interpreter start-up and the imports on every launch. Measured on this 2-core machine (shared
with six other engineers' test runs, load average 2-4, so every figure is noisy):

=============================================  ===============
``python -I -c pass``                          ~12-15 ms
``+ import json, socket, ctypes``              ~20 ms
``+ import oci.spec, oci.cgroups, oci.engine`` ~70-100 ms
``os.fork()`` of the warm spawner + reply      ~3 ms
=============================================  ===============

bench/oci.py, median of 20 interleaved rounds (ms; load average ~1, after the import-light
work — model classes without generated methods, lazy validate/logging/cgroups/stats, no
finalization/GC in the CLI, v1 cgroup self-join through ``tasks`` — and the latency work: a
worker forked ahead of each request, an event (not polling) for start's execve, one cgroup
probe per create):

=======  ========  ====  ====  ========================  ==================
op       kata-oci  runc  crun  engine via warm spawner   spawner/runc, crun
=======  ========  ====  ====  ========================  ==================
run      75        30    11    24                        0.80x, 2.1x
create   77        23    8     16                        0.69x, 2.0x
start    22        6     4     4                         0.65x, 1.0x
exec     58        24    5     9                         0.38x, 1.7x
delete   25        6     4     3                         0.55x, 0.8x
=======  ========  ====  ====  ========================  ==================

A fresh interpreter per launch costs more than runc's whole ``run`` before it does anything,
so it cannot meet the targets; forking a warm process costs ~1-3 ms. Fork wins, and it is what
the agent uses (the spawner column). The kata-oci CLI is itself a fresh interpreter per
command (``python3.11 -I -S -c pass`` alone: ~10-12 ms here, more than runc's whole start or
delete), so its figures are that floor plus what the command imports plus the engine's work.
The import diet, second pass:

* start, kill, state, delete import no json (the state file is read through ``_json``'s C
  scanner: ``state._json_loads``), no signal, contextlib or typing: json pulls in re and
  enum, ~10 ms together.
* create, run, exec: ``inspect`` and ``ipaddress`` are deferred by the CLI (``cli._defer``;
  dataclasses imports inspect for a docstring signature only: ast, dis, tokenize, ~8 ms), no
  typing (protocols exist for the type checker only; the spec codec reads builtin generic
  hints), no socket module (the sync socket is ``_socket.socket``), and the engine's value
  classes are dataclasses without generated methods (``oci.syscalls.valueclass``: ~5 ms of
  exec'd code).

``bench/oci.py --baseline`` with the tree before it (56b1cbc) in the same interleaved rounds
(20 rounds, four runtimes, load average 1.2-1.3; earlier runs of the same comparison agree
within ~5 ms), ms:

=======  ======  ========  ====  ====  ================  ==================
op       before  kata-oci  runc  crun  kata-oci/before   kata-oci/runc
=======  ======  ========  ====  ====  ================  ==================
run      90.6    57.4      37.7  13.9  0.63              1.52x
create   88.4    57.5      24.5  10.1  0.65              2.34x
start    26.9    17.0      6.6   4.2   0.63              2.60x
exec     73.7    42.9      28.3  6.4   0.58              1.52x
delete   24.6    15.5      7.1   5.0   0.63              2.20x
=======  ======  ========  ====  ====  ================  ==================

With three runtimes (no baseline; less load) the same tree measures run 56-61, create 56-58,
start 14.5-17, exec 38-46, delete 13-16.5 ms (runc 32-35, 23-34, 5.5-7, 25-28, 6-7).

start and delete are now the interpreter's floor plus 3-6 ms: no runc ratio <= 1.0 is reachable
with a CPython process per command.

What create and exec still import is mostly dataclasses (and re, enum with it; the spec model
and the plans are dataclasses, which the agent relies on), the spec model itself, pathlib
(oci.cgroups' API), ctypes and the init code; start must also wait for the init's execve,
which frees the forked Python's address space first (~4 ms, the spawner's whole start).

Per launch: stage-1 is forked (it enters/creates the namespaces), it forks the container
process and exits, so the container process is reparented to the nearest subreaper: the agent
(PID 1 or PR_SET_CHILD_SUBREAPER) or ``kata-oci run/exec`` (which set themselves subreaper).
The engine never waits for container processes: the caller reaps them.

exec through the spawner skips stage-1 (``Engine.exec(in_caller=True)``, ``oci.engine.inplace``):
the worker is disposable, so it joins the container's namespaces itself, takes on a plain
process's rlimits, capabilities, user, cwd and umask, and forks the container process, which
only moves itself into the container's cgroup (through files the worker opened before
joining), starts its session, takes its stdio and execs; the worker replies and exits, and the
process is reparented to the agent. One fork of a ~10 MiB-anon Python instead of two, no wait
for stage-1's exit, almost no Python in the child. With the spawner's side of it (asyncio no
longer imported: 13.0 -> 10.1 MiB anon, fork, copy-on-write faults and execve all scale with
it; the process planned in the agent; workers that rehearse a request before waiting) the
worker's share of an agent exec went from ~11.5 to ~5 ms and ExecProcess to first byte (bench/
lifecycle.py) from ~11-14 to ~6-8.5 ms (medians, load 0.5-2). kata-oci exec keeps stage-1: the
CLI process goes on after the launch (pid file, waiting) in its own namespaces.

create through the spawner, where its time goes (a worker, ms, load ~1; timestamps in the
processes): the worker before the fork (config.json decoded, planned, state dir, fifo) ~2.5,
the fork ~0.8, the cgroup (mkdir in each v1 hierarchy, device rules) ~2, while stage-1 starts
(its copy-on-write start-up is hidden there); stage-1 joins (~0.6), unshares (~0.9, mostly the
network namespace) and forks (~0.8); the init's steps ~3.5; the state file. The worker's code
costs 2-3x what it costs warm: every page it first writes (reference counts) is copied.
Changes (commits 8c8a5f1..4285a59): the spawner probes the cgroup layout once
(``Engine(cgroup_layout=)``) instead of each worker (-0.5 ms); the state record's
pid-independent part and its config's JSON are built while stage-1 and the init work
(``_launch(meanwhile=)``), the state file is written without a text layer, v1 mkdir tries the
leaf first. ``bench/oci.py --iterations 20``, in-agent line, base tree and this one alternated
(load 1.4-2.0), ms: run 25.1, 23.9 -> 21.0, 21.7; create 16.5, 17.1 -> 14.9, 15.3; start, exec,
delete unchanged within noise (3.3-4.6, 6.9-8.7, 2.7-3.1). Two spawners side by side, 100
alternated rounds: create 16.5 -> 15.4 and 14.5 -> 13.4, run 24.8 -> 23.9 and 21.1 -> 20.2.
Measured and not kept: rehearsing a config.json decode in each pre-forked worker (create -0.5
ms, but the replacement worker's rehearsal then competes with the next request: delete +1 ms,
exec +0.3-1 ms back to back). Not tried, by the timeline above: creating the cgroup before
the fork so stage-1 needs no "go" puts stage-1's start-up (~0.8 ms) after the cgroup work
instead of beside it, more than the ~0.3 ms wake-up it saves; applying the resources (device
rules ~0.55 ms with their plan) after "go" needs a second sync point before the init's device
nodes.
"""

from __future__ import annotations

import errno
import os
import sys
import time

from oci.syscalls import consts as c

from . import state as st
from .errors import (
    ContainerExists,
    EngineError,
    HookError,
    InitError,
    InvalidArgument,
    InvalidState,
)

TYPE_CHECKING = False  # not typing's: start/kill/state need no typing module (~2 ms)

# Import-light on purpose: kata-oci start/kill/state/delete must not pay for the spec model,
# the init code or logging. Those modules are imported on first use.
if TYPE_CHECKING:
    import contextlib
    import signal
    from collections.abc import Callable
    from typing import Any

    from oci import spec as ocispec
    from oci.cgroups import CgroupLayout, CgroupManager
    from oci.syscalls import Syscalls

    from .init import InitConfig
    from .process import ProcessPlan
else:
    from oci.lazy import LazyModule as _Lazy

    ocispec = _Lazy("oci.spec")
    # start, kill and delete need neither (signal imports enum, contextlib collections and
    # functools: ~3 ms of a fresh kata-oci process)
    contextlib = _Lazy("contextlib")
    signal = _Lazy("signal")


def cgroup_checks_at_open(release: str | None = None) -> bool:
    """Whether the kernel checks a cgroup migration against the credentials and cgroup namespace
    of whoever opened ``cgroup.procs``/``tasks`` rather than of the writer (Linux >= 5.16).
    The in-caller exec (``oci.engine.inplace``) relies on it: its child joins the container's
    cgroup through files the worker opened as root before it joined the container's namespaces
    and took on the process's user. On older kernels an exec takes stage-1's path, where the
    parent moves the process from outside."""

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


def _log() -> Any:
    import logging

    return logging.getLogger(__name__)


PERSONALITY = {"LINUX": 0x0000, "LINUX32": 0x0008}


class Launched:
    """Result of create/exec: the container process's pid (in the caller's PID namespace)."""

    __slots__ = ("pid",)

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def __repr__(self) -> str:
        return f"Launched(pid={self.pid})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Launched) and other.pid == self.pid

    def __hash__(self) -> int:
        return hash(self.pid)


class Engine:
    """Synchronous container engine. Not thread-safe; one call at a time per process.

    ``root`` is the state directory (``/run/kata-oci`` for the CLI; the agent passes its own).
    ``cgroup_layout``: the cgroup hierarchy layout (``oci.cgroups.probe_layout``) when the
    caller has probed it already (the spawner, once for all its workers); else it is probed
    per call.
    """

    def __init__(
        self,
        root: str,
        *,
        syscalls: Syscalls | None = None,
        cgroup_layout: CgroupLayout | None = None,
    ) -> None:
        self.root = os.path.abspath(root)
        self._sys = syscalls
        self._cgroup_layout = cgroup_layout

    @property
    def sys(self) -> Syscalls:
        if self._sys is None:
            from oci.syscalls import LinuxSyscalls

            self._sys = LinuxSyscalls()
        return self._sys

    # -- create ----------------------------------------------------------------------------

    def create(
        self,
        container_id: str,
        bundle: str,
        *,
        spec: ocispec.Spec | None = None,
        stdio: tuple[int, int, int] | None = None,
        console_socket: int | None = None,
        pid_file: str | None = None,
        no_pivot: bool = False,
        preserve_fds: int = 0,
        new_keyring: bool = True,
    ) -> Launched:
        """Create the container; its init waits for ``start``. Blocks until set-up is done.

        ``stdio``: fds for the container's 0/1/2 (default: inherit ours). ``console_socket``: a
        connected unix socket fd that receives the pty master (SCM_RIGHTS) when
        ``process.terminal`` is set. Errors: InvalidArgument, ContainerExists, InitError,
        HookError; nothing is left behind on error."""
        from .process import plan_process

        st.check_id(container_id)
        bundle = os.path.abspath(bundle)
        if spec is None:
            spec = _load_spec(os.path.join(bundle, "config.json"))
        if spec.process is None:
            raise InvalidArgument("process: a container needs a process")
        if spec.root is None:
            raise InvalidArgument("root: a container needs a root filesystem")
        rootfs = os.path.realpath(os.path.join(bundle, spec.root.path))
        if not os.path.isdir(rootfs):
            raise InvalidArgument(
                f"root.path: rootfs {rootfs} does not exist or is not a directory"
            )
        linux = spec.linux or ocispec.Linux()
        plan = plan_process(spec.process, linux.seccomp)
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        sdir = st.state_dir(self.root, container_id)
        try:
            os.mkdir(sdir, 0o711)
        except FileExistsError:
            raise ContainerExists(container_id) from None
        opened: list[int] = []
        try:
            cfg = self._create_config(
                container_id,
                bundle,
                rootfs,
                spec,
                linux,
                plan,
                opened,
                no_pivot,
                stdio,
                console_socket,
                preserve_fds,
            )
            cfg.new_keyring = new_keyring
            fifo = os.path.join(sdir, st.FIFO)
            os.mkfifo(fifo, 0o622)
            fifo_fd = os.open(fifo, os.O_RDWR | os.O_CLOEXEC)
            opened.append(fifo_fd)
            cfg.fifo_fd = fifo_fd
            with _cgroup_errors("create cgroup"):
                mgr = self._cgroup(container_id, linux)  # once: it probes the hierarchies
            state_for_hooks = ocispec.State(
                id=container_id,
                status=ocispec.Status.CREATING,
                bundle=bundle,
                annotations=spec.annotations,
            )
            the_spec = spec
            record: dict[str, Any] = {}

            def prepare_record() -> None:
                # The state record's pid-independent part (its config already encoded), built
                # while stage-1 and the init set the container up (the other core), not after
                # they are done (~1 ms of a create in a spawner worker).
                freezer = (
                    f"/sys/fs/cgroup/freezer{mgr.path}/freezer.state"
                    if mgr.version == 1
                    else f"/sys/fs/cgroup{mgr.path}/cgroup.events"
                )
                record["cgroup"] = {
                    "path": str(mgr.path),
                    "version": mgr.version,
                    "freezer": freezer,
                    # exec joins through these without loading oci.cgroups (see _launch)
                    "join": list(mgr.self_join_files()),
                }
                record["config"] = the_spec.to_dict()
                record["config_json"] = st.config_json(record["config"])

            pid = self._launch(
                cfg,
                linux,
                spec,
                state_for_hooks,
                container_id,
                cgroup=mgr,
                meanwhile=prepare_record,
            )
            if not record:
                prepare_record()
            rec = st.Record(
                cgroup=record["cgroup"],
                id=container_id,
                pid=pid,
                pid_start=st.proc_start_time(pid) or 0,
                bundle=bundle,
                rootfs=rootfs,
                created=st.rfc3339_now(),
                config=record["config"],
                namespaces=[n.type for n in linux.namespaces],
            )
            st.save(self.root, rec, config_json=record["config_json"])
            if pid_file:
                _write_pid_file(pid_file, pid)
            return Launched(pid)
        except BaseException:
            st.remove(self.root, container_id)
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def _create_config(
        self,
        container_id: str,
        bundle: str,
        rootfs: str,
        spec: ocispec.Spec,
        linux: ocispec.Linux,
        plan: ProcessPlan,
        opened: list[int],
        no_pivot: bool,
        stdio: tuple[int, int, int] | None,
        console_socket: int | None,
        preserve_fds: int,
    ) -> InitConfig:
        from . import rootfs as rfs
        from .init import DevicePlan, InitConfig

        ns_new = 0
        joins: list[tuple[int, int, str]] = []
        user_ns: str | None = None
        for i, ns in enumerate(linux.namespaces):
            flag = c.NAMESPACES.get(ns.type, (0, ""))[0]
            if not flag:
                raise InvalidArgument(f'linux.namespaces[{i}].type: unknown namespace "{ns.type}"')
            if ns.path:
                try:
                    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as err:
                    raise InvalidArgument(
                        f"linux.namespaces[{i}].path: {ns.path}: {os.strerror(err.errno or 0)}"
                    ) from None
                opened.append(fd)
                joins.append((fd, flag, ns.path))
                if flag == c.CLONE_NEWUSER:
                    user_ns = "join"
            elif flag == c.CLONE_NEWUSER:
                user_ns = "new"
            else:
                ns_new |= flag
        mounts = tuple(
            rfs.plan_mount(m.destination, m.source, m.type, m.options, bundle) for m in spec.mounts
        )
        dev_mount = next((m for m in mounts if m.destination.rstrip("/") == "/dev"), None)
        devices = tuple(
            DevicePlan(
                d.path,
                d.type,
                d.major or 0,
                d.minor or 0,
                d.file_mode if d.file_mode is not None else 0o666,
                d.uid or 0,
                d.gid or 0,
            )
            for d in linux.devices
        )
        hooks = spec.hooks
        if hooks and (hooks.create_container or hooks.start_container):
            import subprocess  # noqa: F401 - the init runs these hooks after pivot_root

        pers = None
        if linux.personality is not None:
            pers = PERSONALITY.get(linux.personality.domain)
            if pers is None:
                raise InvalidArgument(
                    f'linux.personality.domain: unknown domain "{linux.personality.domain}"'
                )
        return InitConfig(
            mode="create",
            container_id=container_id,
            process=plan,
            rootfs=rootfs,
            bundle=bundle,
            user_ns=user_ns,
            ns_join=tuple(joins),
            ns_new=ns_new,
            mounts=mounts,
            devices=devices,
            default_devices=dev_mount is not None and not dev_mount.is_bind,
            rootfs_propagation=linux.rootfs_propagation,
            rootfs_readonly=spec.root.readonly if spec.root else False,
            masked_paths=linux.masked_paths,
            readonly_paths=linux.readonly_paths,
            sysctl=tuple(linux.sysctl.items()),
            hostname=spec.hostname,
            domainname=spec.domainname,
            no_pivot=no_pivot,
            hooks_create_container=hooks.create_container if hooks else (),
            hooks_start_container=hooks.start_container if hooks else (),
            has_prestart_hooks=bool(hooks and (hooks.prestart or hooks.create_runtime)),
            stdio=stdio,
            console_fd=console_socket,
            preserve_fds=preserve_fds,
            keep_fds=frozenset(fd for fd in (console_socket,) if fd is not None),
            personality=pers,
            time_offsets=tuple(
                (clock, off.secs or 0, off.nanosecs or 0)
                for clock, off in linux.time_offsets.items()
            ),
        )

    def _launch(
        self,
        cfg: InitConfig,
        linux: ocispec.Linux | str | None,
        spec: ocispec.Spec | None,
        hook_state: ocispec.State | None,
        container_id: str,
        cgroup_join: tuple[str, ...] = (),
        cgroup: CgroupManager | None = None,
        meanwhile: Callable[[], None] | None = None,
    ) -> int:
        """Fork stage-1, walk the sync protocol, return the container process's pid.

        ``cgroup_join`` (exec): the files recorded at create through which stage-1 joins the
        container's cgroup itself; empty: the cgroup manager puts it there. ``cgroup``: the
        container's manager when the caller has it already (create). ``meanwhile``: the
        caller's own work, run once stage-1 may go on (a failure is a failed launch)."""
        from . import hooks as hooks_mod
        from . import sync
        from .init import stage1

        cfg.cgroup_join = cgroup_join  # stage-1 then needs no "go"
        psock, csock = sync.pair()
        pid1 = os.fork()
        if pid1 == 0:  # stage-1: never returns
            psock.close()
            stage1(cfg, self.sys, csock)
        csock.close()
        init_pid = 0
        reaped = False
        ready = False  # stage-2's "ready" can overtake stage-1's "pid" on the shared socket
        try:
            if not cgroup_join:
                join = self._cgroup_add(
                    container_id, pid1, linux, create=cfg.mode == "create", mgr=cgroup
                )
                sync.send(psock, "go", cgroup=list(join))
            if meanwhile is not None:
                meanwhile()
            step = "stage-1"
            while True:
                msg = sync.recv(psock, step)
                t = msg["t"]
                if t == "error":
                    raise sync.error_from(msg)
                if t == "idmap":
                    step = "write uid/gid maps"
                    if linux is None or isinstance(linux, str):
                        raise InitError(step, "protocol error: id maps requested by an exec")
                    _write_id_maps(pid1, linux)
                    sync.send(psock, "idmap_ok")
                elif t == "pid":
                    init_pid = int(msg["pid"])
                    _, _status = os.waitpid(pid1, 0)
                    reaped = True
                    step = "container init"
                    if ready:
                        return _after_ready(cfg, psock, init_pid)
                elif t == "hooks":
                    step = "prestart hooks"
                    state_json = ""
                    if hook_state is not None:
                        import dataclasses

                        state_json = dataclasses.replace(hook_state, pid=init_pid).to_json()
                        hooks = spec.hooks if spec else None
                        if hooks is not None:
                            hooks_mod.run_hooks("prestart", hooks.prestart, state_json)
                            hooks_mod.run_hooks("createRuntime", hooks.create_runtime, state_json)
                    sync.send(psock, "hooks_ok", state=state_json)
                elif t == "warn":
                    _log().warning("container %s: %s", container_id, msg.get("msg"))
                elif t == "ready":
                    if not init_pid:
                        ready = True
                        continue
                    return _after_ready(cfg, psock, init_pid)
                else:
                    raise InitError(step, f"protocol error: unexpected message {t!r}")
        except BaseException as err:
            if init_pid:
                _kill_and_wait(init_pid)
            if not reaped:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid1, signal.SIGKILL)
                os.waitpid(pid1, 0)
            if cfg.mode == "create":
                self._cgroup_destroy(container_id, linux)
            if isinstance(err, HookError):
                raise InitError("prestart hooks", str(err)) from None
            raise
        finally:
            psock.close()

    # -- start / exec ------------------------------------------------------------------------

    def start(self, container_id: str) -> None:
        """Let a created container's init exec its process; then run poststart hooks."""
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        if status != "created":
            raise InvalidState(
                f"cannot start a container that is {status}"
                if status != "stopped"
                else "cannot start a container that has stopped"
            )
        fifo = os.path.join(st.state_dir(self.root, container_id), st.FIFO)
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as err:
            if err.errno == errno.ENXIO:
                raise InvalidState("cannot start a container that has stopped") from None
            raise
        has_poststart = bool((rec.config.get("hooks") or {}).get("poststart"))
        try:
            # Return once the init has exec'd the container's program (after its startContainer
            # hooks), so callers (and poststart hooks) see the workload, not the engine's init.
            # The init keeps its end of the fifo (O_RDWR, close-on-exec) open until execve: a
            # reader of ours reports POLLHUP when the last writer is gone, provided a writer
            # opened after it, hence the second writer that sends the byte.
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
                _wait_hangup(rfd, 30.0)
            finally:
                os.close(rfd)
        finally:
            if fd >= 0:
                os.close(fd)
        if has_poststart:
            from . import hooks as hooks_mod

            spec = _spec_of(rec)
            assert spec.hooks is not None
            state_json = ocispec.State(
                id=rec.id,
                status=ocispec.Status.RUNNING,
                pid=rec.pid,
                bundle=rec.bundle,
                annotations=spec.annotations,
            ).to_json()
            hooks_mod.run_hooks("poststart", spec.hooks.poststart, state_json)

    def exec(
        self,
        container_id: str,
        process: ocispec.Process,
        *,
        stdio: tuple[int, int, int] | None = None,
        console_socket: int | None = None,
        pid_file: str | None = None,
        preserve_fds: int = 0,
        in_caller: bool = False,
    ) -> Launched:
        """Start ``process`` inside a created/running container (setns into its namespaces and
        its cgroup). Blocks until the process has exec'd; returns its pid.

        ``in_caller``: the calling process is disposable (the spawner's worker, which exits
        right after replying): it joins the container's namespaces itself and forks the
        container process directly, one fork instead of stage-1's two (``oci.engine.inplace``).
        The caller is left inside those namespaces, and the container process is its child
        until the caller exits (then it is reparented to the subreaper, as it is when stage-1
        exits). Not with ``pid_file`` (written in the caller's mount namespace)."""
        from .process import plan_process

        return self.exec_planned(
            container_id,
            plan_process(process, None),
            init_caps=process.capabilities is None,
            stdio=stdio,
            console_socket=console_socket,
            pid_file=pid_file,
            preserve_fds=preserve_fds,
            in_caller=in_caller,
        )

    def exec_planned(
        self,
        container_id: str,
        plan: ProcessPlan,
        *,
        init_caps: bool,
        stdio: tuple[int, int, int] | None = None,
        console_socket: int | None = None,
        pid_file: str | None = None,
        preserve_fds: int = 0,
        in_caller: bool = False,
    ) -> Launched:
        """``exec`` of a process already planned (``plan_process(process, None)``; the
        spawner's client plans it in the agent, so its worker decodes no spec): the
        container's seccomp profile is added here, and with ``init_caps`` (the process named
        no capabilities) the init's capabilities."""
        import dataclasses

        from .init import InitConfig
        from .process import plan_caps, plan_seccomp

        if plan.seccomp is not None:
            raise InvalidArgument("exec: the process plan must not carry a seccomp profile")
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        if status not in ("created", "running"):
            raise InvalidState(f"cannot exec in a {status} container")
        # Decode only what exec needs from the stored config (the seccomp profile, the init's
        # capabilities): the full spec costs milliseconds.
        raw_linux = rec.config.get("linux") or {}
        raw_caps = (rec.config.get("process") or {}).get("capabilities")
        if raw_linux.get("seccomp"):
            seccomp = ocispec.decode(ocispec.LinuxSeccomp, raw_linux["seccomp"])[0]
            plan = dataclasses.replace(plan, seccomp=plan_seccomp(seccomp))
        if init_caps and raw_caps:
            caps = ocispec.decode(ocispec.LinuxCapabilities, raw_caps)[0]
            plan = dataclasses.replace(plan, caps=plan_caps(caps))
        opened: list[int] = []
        try:
            joins: list[tuple[int, int, str]] = []
            order = ["user", "ipc", "uts", "network", "pid", "cgroup", "time", "mount"]
            for t in order:
                if t not in rec.namespaces:
                    continue
                flag, name = c.NAMESPACES[t]
                path = f"/proc/{rec.pid}/ns/{name}"
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as err:
                    raise InvalidState(
                        f"container {container_id}: open {path}: {os.strerror(err.errno or 0)}"
                    ) from None
                opened.append(fd)
                joins.append((fd, flag, path))
            cfg = InitConfig(
                mode="exec",
                container_id=container_id,
                process=plan,
                rootfs="/",
                bundle=rec.bundle,
                ns_join=tuple(joins),
                stdio=stdio,
                console_fd=console_socket,
                preserve_fds=preserve_fds,
                keep_fds=frozenset(fd for fd in (console_socket,) if fd is not None),
            )
            join = tuple(str(f) for f in rec.cgroup.get("join") or ())
            if in_caller and join and not pid_file and cgroup_checks_at_open():
                from .inplace import exec_in_caller

                pid = exec_in_caller(cfg, self.sys, join)
            else:
                pid = self._launch(cfg, _cgroups_path(rec), None, None, container_id, join)
            if pid_file:
                _write_pid_file(pid_file, pid)
            return Launched(pid)
        finally:
            for fd in opened:
                os.close(fd)

    # -- kill / delete / state ----------------------------------------------------------------

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        if status == "stopped":
            raise InvalidState("container not running")
        if all_processes:
            for pid in self.pids(container_id):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
        try:
            os.kill(rec.pid, sig)
        except ProcessLookupError:
            raise InvalidState("container not running") from None

    def delete(self, container_id: str, *, force: bool = False) -> None:
        """Remove a stopped (or created) container: its processes, cgroup and state; with
        ``force`` also a running or paused one. Runs poststop hooks (failures are logged)."""
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        if status in ("running", "paused") and not force:
            raise InvalidState(
                f"cannot delete container {container_id} that is not stopped: {status}"
            )
        rec.config.get("linux") or {}
        if status != "stopped":
            if status == "paused":
                self._cgroup_thaw(container_id, _cgroups_path(rec))
            for pid in [rec.pid, *self.pids(container_id)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            _kill_and_wait(rec.pid)
        if not _rmdir_cgroup_fast(rec):
            self._cgroup_destroy(container_id, _cgroups_path(rec))
        if (rec.config.get("hooks") or {}).get("poststop"):
            from . import hooks as hooks_mod

            spec = _spec_of(rec)
            assert spec.hooks is not None
            state_json = ocispec.State(
                id=rec.id,
                status=ocispec.Status.STOPPED,
                bundle=rec.bundle,
                annotations=spec.annotations,
            ).to_json()
            hooks_mod.run_hooks_logged("poststop", spec.hooks.poststop, state_json)
        st.remove(self.root, container_id)

    def record(self, container_id: str) -> st.Record:
        return st.load(self.root, container_id)

    def status(self, rec: st.Record) -> str:
        if not st.alive(rec):
            return "stopped"
        if os.path.exists(os.path.join(st.state_dir(self.root, rec.id), st.FIFO)):
            return "created"
        if _frozen(rec):
            return "paused"
        return "running"

    def state(self, container_id: str) -> dict[str, object]:
        """runc's ``state`` JSON object."""
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        out: dict[str, object] = {
            # not .get(key, default): evaluating the default imports the whole spec model
            "ociVersion": rec.config["ociVersion"]  # noqa: SIM401
            if "ociVersion" in rec.config
            else ocispec.SPEC_VERSION,
            "id": rec.id,
            "pid": rec.pid if status != "stopped" else 0,
            "status": status,
            "bundle": rec.bundle,
            "rootfs": rec.rootfs,
            "created": rec.created,
            "owner": rec.owner,
        }
        ann = rec.config.get("annotations")
        if ann:
            out["annotations"] = ann
        return out

    def containers(self) -> list[dict[str, object]]:
        out = []
        for cid in st.list_ids(self.root):
            try:
                out.append(self.state(cid))
            except EngineError:
                continue
        return out

    def pids(self, container_id: str) -> list[int]:
        """Pids of every process of the container (its cgroup, or the init alone)."""
        rec = st.load(self.root, container_id)
        pids = self._cgroup_pids(container_id, _cgroups_path(rec))
        if pids is None:
            return [rec.pid] if st.alive(rec) else []
        return pids

    # -- pause / resume / update / stats ----------------------------------------------------

    def pause(self, container_id: str) -> None:
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        if status not in ("running", "created"):
            raise InvalidState(f"container not running (status: {status})")
        with _cgroup_errors("pause"):
            self._cgroup(rec.id, _cgroups_path(rec)).freeze()

    def resume(self, container_id: str) -> None:
        rec = st.load(self.root, container_id)
        status = self.status(rec)
        if status != "paused":
            raise InvalidState(f"container not paused (status: {status})")
        with _cgroup_errors("resume"):
            self._cgroup(rec.id, _cgroups_path(rec)).thaw()

    def update(self, container_id: str, resources: ocispec.LinuxResources) -> None:
        """Apply ``resources`` to the container's cgroup and remember them."""
        rec = st.load(self.root, container_id)
        if self.status(rec) == "stopped":
            raise InvalidState("container not running")
        with _cgroup_errors("update"):
            self._cgroup(rec.id, _cgroups_path(rec)).update(resources)
        linux = rec.config.setdefault("linux", {})
        merged = dict(linux.get("resources") or {})
        merged.update(resources.to_dict())
        linux["resources"] = merged
        st.save(self.root, rec)

    def stats(self, container_id: str) -> dict[str, object]:
        """The cgroup statistics (``oci.cgroups.CgroupStats`` as plain dicts)."""
        import dataclasses

        rec = st.load(self.root, container_id)
        with _cgroup_errors("stats"):
            stats = self._cgroup(rec.id, _cgroups_path(rec)).stats()
        return dataclasses.asdict(stats)

    def oom_watcher(self, container_id: str) -> object:
        """An ``oci.cgroups.OomWatcher`` (fileno/read/close) for the container's memory cgroup."""
        rec = st.load(self.root, container_id)
        with _cgroup_errors("oom watch"):
            return self._cgroup(rec.id, _cgroups_path(rec)).oom_watcher()

    # -- cgroups (oci.cgroups) ------------------------------------------------------------------

    def _cgroup(self, container_id: str, linux: ocispec.Linux | str | None) -> CgroupManager:
        """``linux``: the spec's Linux section, or just its cgroupsPath (a str)."""
        from oci.cgroups import manager_for

        path = linux if isinstance(linux, str) else (linux.cgroups_path if linux else None)
        return manager_for(path, container_id=container_id, layout=self._cgroup_layout)

    def _cgroup_add(
        self,
        container_id: str,
        pid: int,
        linux: ocispec.Linux | str | None,
        *,
        create: bool,
        mgr: CgroupManager | None = None,
    ) -> tuple[str, ...]:
        """Create (and configure) the cgroup and put stage-1 (``pid``) in it; or, when the
        hierarchy allows it, return the files stage-1 writes "0" into to join it itself,
        first thing after "go" (v1: much cheaper, see ``V1Manager.self_join_files``)."""
        step = "create cgroup" if create else "join cgroup"
        with _cgroup_errors(step):
            if mgr is None:
                mgr = self._cgroup(container_id, linux)
            resources = None
            if create:
                assert linux is not None
                assert not isinstance(linux, str)
                mgr.create()
                resources = _with_default_device_rules(linux)
            join = mgr.self_join_files()
            if not join:
                mgr.add_pid(pid)
            if resources is not None:
                mgr.apply(resources)
            return join

    def _cgroup_destroy(self, container_id: str, linux: ocispec.Linux | str | None) -> None:
        mgr = self._cgroup(container_id, linux)
        try:
            if mgr.exists():
                if mgr.pids():
                    mgr.kill_all()
                mgr.destroy()
        except Exception as err:  # a leftover cgroup is reported, never fatal for delete
            _log().warning("container %s: remove cgroup %s: %s", container_id, mgr.path, err)

    def _cgroup_thaw(self, container_id: str, linux: ocispec.Linux | str | None) -> None:
        with contextlib.suppress(Exception):
            self._cgroup(container_id, linux).thaw()

    def _cgroup_frozen(self, container_id: str, linux: ocispec.Linux | str | None) -> bool:
        try:
            mgr = self._cgroup(container_id, linux)
            return mgr.can_freeze() and mgr.freezer_state() == "FROZEN"
        except Exception:
            return False

    def _cgroup_pids(
        self, container_id: str, linux: ocispec.Linux | str | None
    ) -> list[int] | None:
        try:
            return self._cgroup(container_id, linux).pids()
        except Exception:
            return None


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


def _with_default_device_rules(linux: ocispec.Linux) -> ocispec.LinuxResources:
    import dataclasses

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


class _cgroup_errors:
    """``with _cgroup_errors(step):`` a CgroupError becomes InitError(step, ...). (A class,
    not contextlib.contextmanager: contextlib is not imported by start, kill and delete.)"""

    def __init__(self, step: str) -> None:
        self.step = step

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: Any
    ) -> None:
        if err is None or "oci.cgroups" not in sys.modules:
            return
        from oci.cgroups import CgroupError

        if isinstance(err, CgroupError):
            raise InitError(self.step, str(err), err.errno or 0) from None


def _frozen(rec: st.Record) -> bool:
    """Read the freezer state file recorded at create (no cgroup manager needed)."""
    path = rec.cgroup.get("freezer")
    if not path:
        return False
    try:
        with open(path) as f:
            text = f.read()
    except OSError:
        return False
    return text.strip() == "FROZEN" if path.endswith("freezer.state") else "frozen 1" in text


def _rmdir_cgroup_fast(rec: st.Record) -> bool:
    """Remove the container's cgroup directories recorded at create (v1: one per hierarchy)
    without loading oci.cgroups: enough when they are empty leaves. False when there is
    nothing recorded or any rmdir fails for another reason than ENOENT (busy, child cgroups):
    the cgroup manager then kills what is left and removes the rest, retrying."""
    join = rec.cgroup.get("join")
    if not join:
        return False
    for f in join:
        try:
            os.rmdir(os.path.dirname(str(f)))
        except FileNotFoundError:
            continue
        except OSError:
            return False
    return True


def _after_ready(cfg: InitConfig, psock: Any, pid: int) -> int:
    """For exec, wait for EOF on the sync socket: the process's end is close-on-exec, so EOF
    means it has exec'd (or died): the caller sees the program, not the engine's init."""
    if cfg.mode == "exec":
        with contextlib.suppress(OSError):
            while psock.recv(65536):
                pass
    return pid


def _wait_hangup(fd: int, timeout: float) -> None:
    """Wait (at most ``timeout`` s) until the fifo's writers are all gone: EPOLLHUP on our
    reader. Edge-triggered: the unread start byte (level EPOLLIN) must not make this spin."""
    import select

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


def _cgroups_path(rec: st.Record) -> str | None:
    path = (rec.config.get("linux") or {}).get("cgroupsPath")
    return str(path) if path is not None else None


def _load_spec(path: str) -> ocispec.Spec:
    try:
        return ocispec.load(path)
    except ocispec.SpecError as err:
        raise InvalidArgument(f"{path}: {err}") from None


def _spec_of(rec: st.Record) -> ocispec.Spec:
    return ocispec.decode(ocispec.Spec, rec.config)[0]


def _write_id_maps(pid: int, linux: ocispec.Linux) -> None:
    for name, maps in (("uid_map", linux.uid_mappings), ("gid_map", linux.gid_mappings)):
        text = "".join(f"{m.container_id} {m.host_id} {m.size}\n" for m in maps)
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


def _write_pid_file(path: str, pid: int) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(str(pid))
    os.rename(tmp, path)


def _kill_and_wait(pid: int, timeout: float = 10.0) -> None:
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
        if st.exiting(pid):
            return
        time.sleep(delay)
        delay = min(delay * 2, 0.02)


__all__ = ["Engine", "Launched"]
