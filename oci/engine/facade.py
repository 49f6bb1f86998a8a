"""``Engine``: creates, starts, execs into, kills and deletes containers, synchronously, from a
single-threaded process; one short method per verb over the engine's concepts: the state record
(``state``), the lifecycle (``status``), the pure plan (``plan``, ``process``), the launch and
sync walk (``launch``, ``init``, ``inplace``), the cgroup (``cgroup``) and the hooks (``hooks``).

It runs in the ``kata-oci`` command and, for the agent, in the spawner's workers (see
``oci.engine.spawner`` and docs/performance.md for why the agent forks a warm process rather
than starting an interpreter per container).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import signal
from dataclasses import dataclass
from typing import Any

from oci import spec as ocispec
from oci.cgroups import CgroupLayout, CgroupManager, OomWatcher
from oci.spec import Status
from oci.syscalls.api import Syscalls
from oci.syscalls.linux import LinuxSyscalls

from . import cgroup, hooks, launch, plan, state, status
from .errors import EngineError, InvalidArgument, InvalidState
from .init import InitConfig
from .inplace import cgroup_checks_at_open, exec_in_caller
from .process import ProcessPlan, plan_process


@dataclass(frozen=True, slots=True)
class Launched:
    """Result of create/exec: the container process's pid (in the caller's PID namespace)."""

    pid: int


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
        self.sys: Syscalls = syscalls if syscalls is not None else LinuxSyscalls()
        self._cgroup_layout = cgroup_layout

    # -- create, start, exec ---------------------------------------------------------------

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
        state.check_id(container_id)
        bundle = os.path.abspath(bundle)
        if spec is None:
            spec = _load_spec(os.path.join(bundle, "config.json"))
        if spec.process is None:
            raise InvalidArgument("process: a container needs a process")
        rootfs = _rootfs_of(bundle, spec)
        linux = spec.linux or ocispec.Linux()
        process = plan_process(spec.process, linux.seccomp)
        options = plan.Options(stdio, console_socket, no_pivot, preserve_fds, new_keyring)
        cfg, joins = plan.create_config(container_id, bundle, rootfs, spec, process, options)
        state.make_dir(self.root, container_id)
        try:
            with contextlib.ExitStack() as opened:
                cfg = dataclasses.replace(
                    cfg,
                    ns_join=_open_namespaces(joins, opened),
                    fifo_fd=state.make_fifo(self.root, container_id, opened),
                )
                with cgroup.errors("create cgroup"):
                    mgr = self._cgroup(container_id, linux.cgroups_path)
                rec = self._launch_create(cfg, spec, linux, mgr)
            if pid_file:
                launch.write_pid_file(pid_file, rec.pid)
            return Launched(rec.pid)
        except BaseException:
            state.remove(self.root, container_id)
            raise

    def _launch_create(
        self, cfg: InitConfig, spec: ocispec.Spec, linux: ocispec.Linux, mgr: CgroupManager
    ) -> state.Record:
        """Launch a planned create and save its state record. The record's pid-independent part
        (its config encoded) is built while stage-1 and the init set the container up
        (``Parent.meanwhile``), not after."""
        prepared: dict[str, Any] = {}

        def prepare() -> None:
            prepared["cgroup"] = cgroup.record_of(mgr)
            prepared["config"] = spec.to_dict()
            prepared["config_json"] = state.config_json(prepared["config"])

        def prestart(init_pid: int) -> str:
            doc = _hook_state(cfg.container_id, Status.CREATING, cfg.bundle, spec, init_pid)
            if spec.hooks is not None:
                hooks.run_hooks("prestart", spec.hooks.prestart, doc)
                hooks.run_hooks("createRuntime", spec.hooks.create_runtime, doc)
            return doc

        pid = launch.launch(
            cfg,
            self.sys,
            launch.Parent(
                go=lambda pid1: cgroup.create(mgr, pid1, linux),
                id_maps=plan.id_maps(linux) if cfg.user_ns == "new" else None,
                prestart=prestart,
                meanwhile=prepare,
                undo=lambda: cgroup.destroy(cfg.container_id, mgr),
            ),
        )
        if not prepared:
            prepare()
        rec = state.Record(
            id=cfg.container_id,
            pid=pid,
            pid_start=state.proc_start_time(pid) or 0,
            bundle=cfg.bundle,
            rootfs=cfg.rootfs,
            created=state.rfc3339_now(),
            config=prepared["config"],
            cgroup=prepared["cgroup"],
            namespaces=[n.type for n in linux.namespaces],
        )
        state.save(self.root, rec, config_json=prepared["config_json"])
        return rec

    def start(self, container_id: str) -> None:
        """Let a created container's init exec its process; then run poststart hooks."""
        rec = state.load(self.root, container_id)
        status.require("start", self.status(rec), container_id)
        launch.release(state.fifo_path(self.root, container_id))
        spec = _spec_with_hooks(rec, "poststart")
        if spec is not None and spec.hooks is not None:
            doc = _hook_state(rec.id, Status.RUNNING, rec.bundle, spec, rec.pid)
            hooks.run_hooks("poststart", spec.hooks.poststart, doc)

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
        process: ProcessPlan,
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
        if process.seccomp is not None:
            raise InvalidArgument("exec: the process plan must not carry a seccomp profile")
        rec = state.load(self.root, container_id)
        status.require("exec", self.status(rec), container_id)
        process = plan.exec_process(rec.config, process, init_caps=init_caps)
        cfg, joins = plan.exec_config(
            container_id,
            rec.bundle,
            rec.pid,
            rec.namespaces,
            process,
            stdio=stdio,
            console_socket=console_socket,
            preserve_fds=preserve_fds,
        )
        join = tuple(str(f) for f in rec.cgroup.get("join") or ())
        with contextlib.ExitStack() as opened:
            try:
                ns_join = launch.open_namespaces(joins, opened)
            except OSError as err:
                raise InvalidState(
                    f"container {container_id}: open {err.filename}: {os.strerror(err.errno or 0)}"
                ) from None
            cfg = dataclasses.replace(cfg, ns_join=ns_join, cgroup_join=join)
            if in_caller and join and not pid_file and cgroup_checks_at_open():
                pid = exec_in_caller(cfg, self.sys, join)
            else:
                go = None
                if not join:  # no files recorded: the manager puts stage-1 in the cgroup
                    mgr = self._cgroup(container_id, rec.cgroups_path)

                    def go(pid1: int) -> tuple[str, ...]:
                        with cgroup.errors("join cgroup"):
                            return cgroup.join(mgr, pid1)

                pid = launch.launch(cfg, self.sys, launch.Parent(go=go))
        if pid_file:
            launch.write_pid_file(pid_file, pid)
        return Launched(pid)

    # -- kill, delete -----------------------------------------------------------------------

    def kill(self, container_id: str, sig: int, *, all_processes: bool = False) -> None:
        rec = state.load(self.root, container_id)
        status.require("kill", self.status(rec), container_id)
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
        rec = state.load(self.root, container_id)
        current = self.status(rec)
        if not force:
            status.require("delete", current, container_id)
        mgr = self._cgroup(container_id, rec.cgroups_path)
        if current is not Status.STOPPED:
            if current is Status.PAUSED:
                cgroup.thaw(mgr)
            for pid in [rec.pid, *self.pids(container_id)]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            launch.kill_and_wait(rec.pid)
        cgroup.destroy(container_id, mgr)
        spec = _spec_with_hooks(rec, "poststop")
        if spec is not None and spec.hooks is not None:
            doc = _hook_state(rec.id, Status.STOPPED, rec.bundle, spec)
            hooks.run_hooks_logged("poststop", spec.hooks.poststop, doc)
        state.remove(self.root, container_id)

    # -- queries ------------------------------------------------------------------------------

    def record(self, container_id: str) -> state.Record:
        return state.load(self.root, container_id)

    def status(self, rec: state.Record) -> Status:
        """The live status: the init gone (or its pid reused) → stopped; the exec fifo there →
        created; the cgroup frozen → paused; else running."""
        if not state.alive(rec):
            return Status.STOPPED
        if os.path.exists(state.fifo_path(self.root, rec.id)):
            return Status.CREATED
        if cgroup.frozen(rec.cgroup, lambda: self._cgroup(rec.id, rec.cgroups_path)):
            return Status.PAUSED
        return Status.RUNNING

    def state(self, container_id: str) -> dict[str, object]:
        """runc's ``state`` JSON object."""
        rec = state.load(self.root, container_id)
        current = self.status(rec)
        out: dict[str, object] = {
            "ociVersion": rec.config.get("ociVersion", ocispec.SPEC_VERSION),
            "id": rec.id,
            "pid": rec.pid if current is not Status.STOPPED else 0,
            "status": current.value,
            "bundle": rec.bundle,
            "rootfs": rec.rootfs,
            "created": rec.created,
            "owner": rec.owner,
        }
        annotations = rec.config.get("annotations")
        if annotations:
            out["annotations"] = annotations
        return out

    def containers(self) -> list[dict[str, object]]:
        out = []
        for cid in state.list_ids(self.root):
            try:
                out.append(self.state(cid))
            except EngineError:
                continue
        return out

    def pids(self, container_id: str) -> list[int]:
        """Pids of every process of the container (its cgroup, or the init alone)."""
        rec = state.load(self.root, container_id)
        pids = cgroup.pids(self._cgroup(container_id, rec.cgroups_path))
        if pids is None:
            return [rec.pid] if state.alive(rec) else []
        return pids

    # -- pause, resume, update, stats ---------------------------------------------------------

    def pause(self, container_id: str) -> None:
        rec = state.load(self.root, container_id)
        status.require("pause", self.status(rec), container_id)
        with cgroup.errors("pause"):
            self._cgroup(rec.id, rec.cgroups_path).freeze()

    def resume(self, container_id: str) -> None:
        rec = state.load(self.root, container_id)
        status.require("resume", self.status(rec), container_id)
        with cgroup.errors("resume"):
            self._cgroup(rec.id, rec.cgroups_path).thaw()

    def update(self, container_id: str, resources: ocispec.LinuxResources) -> None:
        """Apply ``resources`` to the container's cgroup and remember them."""
        rec = state.load(self.root, container_id)
        status.require("update", self.status(rec), container_id)
        with cgroup.errors("update"):
            self._cgroup(rec.id, rec.cgroups_path).update(resources)
        linux = rec.config.setdefault("linux", {})
        linux["resources"] = {**(linux.get("resources") or {}), **resources.to_dict()}
        state.save(self.root, rec)

    def stats(self, container_id: str) -> dict[str, object]:
        """The cgroup statistics (``oci.cgroups.CgroupStats`` as plain dicts)."""
        rec = state.load(self.root, container_id)
        with cgroup.errors("stats"):
            stats = self._cgroup(rec.id, rec.cgroups_path).stats()
        return dataclasses.asdict(stats)

    def oom_watcher(self, container_id: str) -> OomWatcher:
        """An OOM watcher (fileno/read/close) for the container's memory cgroup."""
        rec = state.load(self.root, container_id)
        with cgroup.errors("oom watch"):
            return self._cgroup(rec.id, rec.cgroups_path).oom_watcher()

    def _cgroup(self, container_id: str, cgroups_path: str | None) -> CgroupManager:
        return cgroup.manager(container_id, cgroups_path, self._cgroup_layout)


def _load_spec(path: str) -> ocispec.Spec:
    try:
        return ocispec.load(path)
    except ocispec.SpecError as err:
        raise InvalidArgument(f"{path}: {err}") from None


def _rootfs_of(bundle: str, spec: ocispec.Spec) -> str:
    if spec.root is None:
        raise InvalidArgument("root: a container needs a root filesystem")
    rootfs = os.path.realpath(os.path.join(bundle, spec.root.path))
    if not os.path.isdir(rootfs):
        raise InvalidArgument(f"root.path: rootfs {rootfs} does not exist or is not a directory")
    return rootfs


def _open_namespaces(
    joins: tuple[plan.NamespacePath, ...], opened: contextlib.ExitStack
) -> tuple[tuple[int, int, str], ...]:
    try:
        return launch.open_namespaces(joins, opened)
    except OSError as err:
        field = next(j.field for j in joins if j.path == err.filename)
        raise InvalidArgument(f"{field}: {err.filename}: {os.strerror(err.errno or 0)}") from None


def _spec_with_hooks(rec: state.Record, kind: str) -> ocispec.Spec | None:
    """The stored spec, decoded only when it has hooks of ``kind`` (its JSON key)."""
    if not (rec.config.get("hooks") or {}).get(kind):
        return None
    return ocispec.decode(ocispec.Spec, rec.config)[0]


def _hook_state(
    container_id: str, current: Status, bundle: str, spec: ocispec.Spec, pid: int | None = None
) -> str:
    return hooks.state_json(container_id, current, bundle, spec.annotations, pid)
