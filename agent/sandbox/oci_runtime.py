"""The real `agent.sandbox.engine` implementation: `oci.engine`'s spawner plus `oci.cgroups`.

* create / exec go through the engine's spawner process (`oci.engine.client.SpawnerClient`,
  started once by `start_spawner`): the agent never forks.
* start / delete run the engine's own code in a thread of the agent when the container has no
  poststart / poststop hooks (they would run as child processes): neither forks, joins a
  namespace or changes credentials (a fifo write and a wait for the init's execve; signals,
  cgroup removal and the state directory). That saves the spawner round trip and a fresh
  worker's copy-on-write faults on every cycle (docs/performance.md). With hooks they go through
  the spawner.
* The container processes are reparented to the agent (PID 1 or subreaper) when the engine's
  stage-1 exits; their exits come from the agent's single reaper (``reaper.adopt(pid)``).
* pause / resume / update / stats / kill-all / OOM notification act on the container's cgroup
  directly through `oci.cgroups` (plain file writes, the blocking ones in a thread).

Engine and cgroup errors become domain errors here (the OS → domain edge for this subsystem).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from agent import errors
from agent.reaper import ExitStatus, Reaper
from agent.sandbox.engine import Launched
from agent.sandbox.stdio import ChildStdio
from agent.spawn import Child, Spawner
from oci.cgroups import (
    DEFAULT_ROOT,
    CgroupLayout,
    CgroupManager,
    CgroupMode,
    V1Manager,
    V2Manager,
    detect_mode,
    resolve_cgroups_path,
    v1_controllers,
)
from oci.cgroups import errors as cgerr
from oci.cgroups.oom import OomWatcher
from oci.cgroups.stats import CgroupStats
from oci.engine import errors as engerr
from oci.engine.client import SpawnerClient, spawner_argv
from oci.spec import LinuxResources, Process, Spec

if TYPE_CHECKING:
    from oci.engine.facade import Engine

log = logging.getLogger(__name__)


@contextlib.contextmanager
def domain_errors(what: str) -> Iterator[None]:
    """Engine and cgroup errors → agent domain errors, prefixed with ``what``."""
    try:
        yield
    except engerr.ContainerNotFound as err:
        raise errors.NotFound(f"{what}: {err}") from err
    except engerr.ContainerExists as err:
        raise errors.AlreadyExists(f"{what}: {err}") from err
    except engerr.InvalidArgument as err:
        raise errors.InvalidArgument(f"{what}: {err}") from err
    except engerr.InvalidState as err:
        raise errors.FailedPrecondition(f"{what}: {err}") from err
    except (engerr.InitError, engerr.HookError) as err:
        raise _by_errno(err.errno)(f"{what}: {err}") from err
    except engerr.EngineError as err:
        raise errors.Internal(f"{what}: {err}") from err
    except cgerr.CgroupNotFound as err:
        raise errors.NotFound(f"{what}: {err}") from err
    except cgerr.CgroupInvalid as err:
        raise errors.InvalidArgument(f"{what}: {err}") from err
    except cgerr.CgroupUnsupported as err:
        raise errors.InvalidArgument(f"{what}: {err}") from err
    except cgerr.CgroupBusy as err:
        raise errors.FailedPrecondition(f"{what}: {err}") from err
    except cgerr.CgroupError as err:
        raise errors.Internal(f"{what}: {err}") from err
    except OSError as err:  # the spawner's socket (the spawner died?)
        code = errno.errorcode.get(err.errno or 0, "?")
        raise errors.Internal(f"{what}: engine spawner: {code}: {err.strerror}") from err


# errnos of a set-up step that come from what the spec asked for (a path that is not there or too
# long, a value the kernel refuses, an unknown filesystem type), as opposed to a failing guest
_INPUT_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.ENAMETOOLONG,
        errno.ELOOP,
        errno.EXDEV,
        errno.EINVAL,
        errno.ERANGE,
        errno.ENODEV,
        errno.E2BIG,
        errno.ENOEXEC,
    }
)


def _by_errno(code: int) -> type[errors.AgentError]:
    if code in _INPUT_ERRNOS:
        return errors.InvalidArgument
    if code in (errno.EACCES, errno.EPERM):
        return errors.PermissionDenied
    return errors.Internal


def _checked_pid(pid: int, what: str) -> int:
    """Never track (or later signal) pid 0 or a negative pid: kill(0) is our process group."""
    if pid <= 0:
        raise errors.Internal(f"{what}: the engine reported an invalid pid {pid}")
    return pid


def _shell_status(
    loop: asyncio.AbstractEventLoop, fut: asyncio.Future[ExitStatus]
) -> asyncio.Future[int]:
    out: asyncio.Future[int] = loop.create_future()

    def done(f: asyncio.Future[ExitStatus]) -> None:
        if out.done():
            return
        if f.cancelled():
            out.cancel()
        elif f.exception() is not None:
            out.set_exception(f.exception())  # type: ignore[arg-type]
        else:
            out.set_result(f.result().shell_code)

    fut.add_done_callback(done)
    return out


class OciContainer:
    """`agent.sandbox.engine.ContainerRuntime` for one container of the real engine."""

    def __init__(
        self,
        *,
        container_id: str,
        client: SpawnerClient,
        reaper: Reaper,
        cgroup: CgroupManager,
        cgroup_layout: CgroupLayout | None = None,
        start_hooks: bool = True,
        stop_hooks: bool = True,
        cpus: str | None = None,
    ) -> None:
        self.id = container_id
        self._client = client
        self._reaper = reaper
        self._cgroup = cgroup
        self._cpus = cpus  # the container's own cpuset (spec, then updates): refresh_cpuset
        self._cgroup_layout = cgroup_layout  # probed once by OciEngine: the engine needs no probe
        self._oom: OomWatcher | None = None
        # poststart / poststop hooks run as child processes: then only the spawner may start /
        # delete the container (the agent never forks)
        self._start_hooks = start_hooks
        self._stop_hooks = stop_hooks

    def _stdio(self, stdio: ChildStdio) -> tuple[int, int, int]:
        return (stdio.stdin, stdio.stdout, stdio.stderr)

    async def start(self) -> None:
        with domain_errors(f"start container {self.id}"):
            if self._start_hooks:
                await self._client.start(self.id)
            else:
                await asyncio.to_thread(self._engine().start, self.id)

    def _engine(self) -> Engine:
        """The engine's synchronous API on the spawner's state root, for the operations that
        neither fork nor change this process (see the module docstring)."""
        # Looked up per call: tests replace the engine class (tests/unit/lifecycle).
        from oci.engine.facade import Engine

        return Engine(self._client.root, cgroup_layout=self._cgroup_layout)

    async def exec(self, exec_id: str, process: Process, stdio: ChildStdio) -> Launched:
        with domain_errors(f"container {self.id}: exec {exec_id}"):
            pid = await self._client.exec(self.id, process, stdio=self._stdio(stdio))
        _checked_pid(pid, f"container {self.id}: exec {exec_id}")
        loop = asyncio.get_running_loop()
        return Launched(pid, _shell_status(loop, self._reaper.adopt(pid)))

    async def kill_all(self, signum: int) -> None:
        with domain_errors(f"container {self.id}: kill all processes"):
            await asyncio.to_thread(self._cgroup.kill_all, signum)

    async def pause(self) -> None:
        with domain_errors(f"pause container {self.id}"):
            await asyncio.to_thread(self._cgroup.freeze)

    async def resume(self) -> None:
        with domain_errors(f"resume container {self.id}"):
            await asyncio.to_thread(self._cgroup.thaw)

    async def update(self, resources: LinuxResources) -> None:
        with domain_errors(f"update container {self.id}"):
            await asyncio.to_thread(self._cgroup.apply, resources)
        if resources.cpu is not None and resources.cpu.cpus:
            self._cpus = resources.cpu.cpus

    async def refresh_cpuset(self) -> None:
        with domain_errors(f"container {self.id}: cpuset after CPU hot-plug"):
            await asyncio.to_thread(self._cgroup.refresh_cpuset, self._cpus)

    async def stats(self) -> CgroupStats:
        with domain_errors(f"stats of container {self.id}"):
            return await asyncio.to_thread(self._cgroup.stats)

    def pids(self) -> list[int]:
        with domain_errors(f"container {self.id}: list processes"):
            return self._cgroup.pids()

    def watch_oom(self, callback: Callable[[], None]) -> None:
        try:
            watcher = self._cgroup.oom_watcher()
        except cgerr.CgroupError as err:
            log.warning(
                "no OOM notification for container",
                extra={"container_id": self.id, "error": str(err)},
            )
            return
        self._oom = watcher
        loop = asyncio.get_running_loop()

        def ready() -> None:
            try:
                count = watcher.read()
            except cgerr.CgroupError as err:
                log.warning(
                    "OOM notification failed, no longer watching",
                    extra={"container_id": self.id, "error": str(err)},
                )
                self._stop_oom()
                return
            for _ in range(count):
                callback()
            if watcher.gone:
                self._stop_oom()

        loop.add_reader(watcher.fileno(), ready)

    def _stop_oom(self) -> None:
        watcher, self._oom = self._oom, None
        if watcher is None:
            return
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(watcher.fileno())
        watcher.close()

    async def destroy(self) -> None:
        self._stop_oom()
        with domain_errors(f"delete container {self.id}"):
            if self._stop_hooks:
                await self._client.delete(self.id, force=True)
            else:
                await asyncio.to_thread(self._engine().delete, self.id, force=True)


class OciEngine:
    """`agent.sandbox.engine.Engine` over the engine's spawner process."""

    def __init__(
        self,
        *,
        client: SpawnerClient,
        reaper: Reaper,
        cgroup_root: Path = DEFAULT_ROOT,
        child: Child | None = None,
        sock: socket.socket | None = None,
    ) -> None:
        self._client = client
        self._reaper = reaper
        self._cgroup_root = cgroup_root
        self._child = child
        self._sock = sock
        # The hierarchy layout, probed at the first create (cgroupfs is mounted by then) rather
        # than on every create, on the event loop.
        self._cgroup_mode: CgroupMode | None = None
        self._controllers: dict[str, Path] = {}

    def _cgroup_manager(self, cgroups_path: str | None, container_id: str) -> CgroupManager:
        path = resolve_cgroups_path(cgroups_path, container_id)
        root = self._cgroup_root
        if self._cgroup_mode is None:
            mode = detect_mode(root)
            controllers = v1_controllers(root) if mode is CgroupMode.V1 else {}
            if mode is CgroupMode.V2 or controllers:  # nothing mounted yet: probe again
                self._cgroup_mode, self._controllers = mode, controllers
            return manager_for_layout(path, root, mode, controllers)
        return manager_for_layout(path, root, self._cgroup_mode, self._controllers)

    def _layout(self) -> CgroupLayout | None:
        return None if self._cgroup_mode is None else (self._cgroup_mode, self._controllers)

    async def create(
        self, *, container_id: str, bundle: Path, spec: Spec, stdio: ChildStdio
    ) -> tuple[OciContainer, Launched]:
        with domain_errors(f"create container {container_id}"):
            cgroup = self._cgroup_manager(
                spec.linux.cgroups_path if spec.linux else None, container_id
            )
            pid = await self._client.create(
                container_id, str(bundle), stdio=(stdio.stdin, stdio.stdout, stdio.stderr)
            )
        _checked_pid(pid, f"create container {container_id}")
        loop = asyncio.get_running_loop()
        hooks = spec.hooks
        container = OciContainer(
            container_id=container_id,
            client=self._client,
            reaper=self._reaper,
            cgroup=cgroup,
            cgroup_layout=self._layout(),
            start_hooks=bool(hooks and hooks.poststart),
            stop_hooks=bool(hooks and hooks.poststop),
            cpus=_spec_cpus(spec),
        )
        return container, Launched(pid, _shell_status(loop, self._reaper.adopt(pid)))

    async def close(self) -> None:
        """Stop the spawner (it exits when its socket closes)."""
        if self._sock is not None:
            self._sock.close()
        if self._child is not None:
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5):
                    await self._child.wait()


def _spec_cpus(spec: Spec) -> str | None:
    resources = spec.linux.resources if spec.linux is not None else None
    cpu = resources.cpu if resources is not None else None
    if cpu is None or not cpu.cpus:
        return None
    return cpu.cpus


def manager_for_layout(
    path: PurePosixPath, root: Path, mode: CgroupMode, controllers: dict[str, Path]
) -> CgroupManager:
    """`oci.cgroups.manager_for` with the hierarchy layout already probed."""
    if mode is CgroupMode.V2:
        return V2Manager(path, root=root)
    return V1Manager(path, root=root, controllers=controllers)


def start_spawner(
    spawner: Spawner, *, state_root: Path, cgroup_root: Path = DEFAULT_ROOT
) -> OciEngine:
    """Start the engine's spawner child (once, at agent start-up) and return the engine."""
    parent, child_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        child = spawner.spawn(spawner_argv(3), fds={3: child_end.fileno()}, env={})
    except BaseException:
        parent.close()
        raise
    finally:
        child_end.close()
    client = SpawnerClient(parent, root=str(state_root))
    return OciEngine(
        client=client, reaper=spawner.reaper, cgroup_root=cgroup_root, child=child, sock=parent
    )
