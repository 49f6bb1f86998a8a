"""The engine's spawner: how a process that must never fork (the asyncio agent) runs containers.

The agent starts this process ONCE, at start-up, through its own spawner/reaper::

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child_proc = spawn(spawner_argv(3), fds={3: child.fileno()})   # agent.spawn
    child.close()
    client = SpawnerClient(parent, root="/run/kata-containers/oci")

Each request carries a fresh socketpair end (SCM_RIGHTS) for its reply plus the fds it needs
(the process's stdio). The spawner forks one worker per request (~1-2 ms; the spawner is a warm,
single-threaded Python with ``oci.engine`` imported; workers are forked ahead of their
requests, see ``_Pool``, so that cost is off the request's path); the worker runs the
synchronous ``oci.engine.Engine`` call and writes one reply ``{"ok": true, ...}`` or
``{"ok": false, "error": <class>, "msg", "step", "errno", "path"}``, then exits. Requests are
therefore served concurrently, and a slow create never blocks an exec. An exec request
carries the process already planned by the client (``plan_to_wire``): the worker, a fresh
fork, would pay a copy-on-write fault for every page the spec decoder touches.

Container processes are reparented to the agent (PID 1 / subreaper) when their first parent
exits — the engine's stage-1 (create), or for exec the worker itself, which joins the
container's namespaces and forks the process directly (``Engine.exec(in_caller=True)``), then
replies and exits — never to the spawner, so the agent's single reaper gets every exit status
(``reaper.adopt(pid)``). The spawner only reaps its own workers. It exits when the agent's end
of the socket closes, and it has PR_SET_PDEATHSIG=SIGKILL.

The spawner keeps its heap small: every fork copies its page tables, and the worker and the
container process copy each page they touch; asyncio (the client side's) is imported lazily
(3 MiB less anonymous memory in every fork).
"""

from __future__ import annotations

import array
import contextlib
import dataclasses
import json
import os
import signal
import socket
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .errors import (
    ContainerExists,
    ContainerNotFound,
    EngineError,
    HookError,
    InitError,
    InvalidArgument,
    InvalidState,
)

if TYPE_CHECKING:
    from oci.cgroups import CgroupLayout

    from .process import ProcessPlan

_MAXFDS = 8
_ERRORS: dict[str, type[EngineError]] = {
    c.__name__: c
    for c in (
        ContainerExists,
        ContainerNotFound,
        EngineError,
        HookError,
        InvalidArgument,
        InvalidState,
    )
}


def spawner_argv(fd: int) -> list[str]:
    """argv to start the spawner with its socket on ``fd`` (same interpreter, isolated mode)."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    code = (
        f"import sys; sys.path.insert(0, {root!r}); from oci.engine.spawner import main; main({fd})"
    )
    return [sys.executable, "-I", "-c", code]


# ---------------------------------------------------------------------------------------------
# server side (runs in the spawner process; plain blocking code)


def main(fd: int) -> None:
    from oci.syscalls import consts, libc

    libc.prctl(consts.PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=fd)
    serve(sock)


def serve(sock: socket.socket) -> None:
    """Serve requests on ``sock`` until it is closed by the other side."""
    import gc

    sample_plan = _warm_up()
    # Workers are short-lived forks: keep the collector away from the imported state so that
    # neither a collection nor its bookkeeping dirties shared pages (copy-on-write faults).
    gc.collect()
    gc.freeze()

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _Pool(sock, sample_plan).run()


class _Pool:
    """Workers forked ahead of the requests, each waiting for one on the socket itself, so a
    fork (~1 ms here: page tables, the child's first copy-on-write faults, scheduling) is never
    on a request's path. Each worker has a note pipe: "t" when it has taken a request, "q"
    when it saw the socket close (we exit), EOF when it exits (done, or died).

    Two wait while nothing runs; while a request runs, one: the replacement of a worker that
    took a request is forked when it has finished (its pipe's EOF), not when it starts, where
    the fork would compete with the request for the CPU (and, here, preempt it: +0.3-0.5 ms).
    A worker that takes a request when no other one waits has its replacement forked at once,
    so a burst of concurrent requests is served as before."""

    IDLE_TARGET = 2

    def __init__(self, sock: socket.socket, sample_plan: str) -> None:
        self.sock = sock
        self.sample_plan = sample_plan  # for the workers' rehearsal (``_rehearse``)
        # The cgroup hierarchy layout, probed here (before a fork, off every request's path),
        # not in each worker (~0.7 ms of a create); again before each fork until something is
        # mounted (the agent may mount cgroupfs after it started the spawner).
        self.cgroup_layout: CgroupLayout | None = None
        self.idle: set[int] = set()  # note fds of the workers waiting for a request
        self.busy: set[int] = set()  # note fds of the workers serving one

    def run(self) -> None:
        import select

        poller = select.poll()
        while True:
            _reap_workers()
            target = self.IDLE_TARGET if not self.busy else 1
            while len(self.idle) < target:
                fd = self._fork()
                self.idle.add(fd)
                poller.register(fd, select.POLLIN)
            try:
                events = poller.poll()
            except InterruptedError:
                continue
            for fd, _ in events:
                note = _read_note(fd)
                if note == b"q":
                    return
                if note == b"t":
                    self.idle.discard(fd)
                    self.busy.add(fd)
                    continue
                # EOF: the worker exited (after its reply, or it died)
                poller.unregister(fd)
                os.close(fd)
                self.idle.discard(fd)
                self.busy.discard(fd)

    def _fork(self) -> int:
        import gc

        if self.cgroup_layout is None:
            from oci.cgroups import probe_layout

            self.cgroup_layout = probe_layout()
        note_r, note_w = os.pipe2(os.O_CLOEXEC)
        pid = os.fork()
        if pid == 0:
            os.close(note_r)
            for fd in (*self.idle, *self.busy):  # the other workers' notes are not ours
                os.close(fd)
            gc.disable()
            # never returns
            _prefork_worker(self.sock, note_w, self.sample_plan, self.cgroup_layout)
        os.close(note_w)
        return note_r


def _read_note(fd: int) -> bytes:
    while True:
        try:
            return os.read(fd, 1)
        except InterruptedError:
            continue


def _prefork_worker(
    sock: socket.socket,
    note: int,
    sample_plan: str = "",
    cgroup_layout: CgroupLayout | None = None,
) -> None:
    """A forked worker: take one request from ``sock``, tell the spawner, serve it, exit (the
    note pipe closes then: the spawner forks a replacement)."""
    code = 0
    try:
        _rehearse(sample_plan)
        while True:
            try:
                data, fds, _, _ = socket.recv_fds(sock, 65536, _MAXFDS)
                break
            except InterruptedError:
                continue
        os.write(note, b"t" if data else b"q")
        sock.close()
        if data:
            _worker(json.loads(data), fds, cgroup_layout)
    except BaseException:
        code = 1
    os._exit(code)


def _rehearse(sample_plan: str) -> None:
    """Run the generic part of a request once in a fresh worker, before it waits: receiving
    fds, decoding the request, a reply socket, encoding the reply, and decoding an exec's
    process plan (``sample_plan``, made by ``_warm_up``). The first run of code in a fork
    copies every page it writes (reference counts): here, not on a request's path (-0.4 to
    -1 ms per exec, bench of the spawner alone, interleaved blocks)."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        socket.send_fds(a, [b'{"op": "x", "id": "y", "root": "/"}'], [a.fileno(), b.fileno()])
        data, fds, _, _ = socket.recv_fds(b, 65536, _MAXFDS)
        json.loads(data)
        for fd in fds:
            reply = socket.socket(fileno=fd)
            reply.close()
        a.send(json.dumps({"ok": True, "pid": 1}).encode())
        b.recv(65536)
    finally:
        a.close()
        b.close()
    if sample_plan:
        from .init import InitConfig
        from .inplace import is_lean

        plan = plan_from_wire(json.loads(sample_plan))
        is_lean(InitConfig(mode="exec", container_id="x", process=plan, stdio=(0, 1, 2)))


def _warm_up() -> str:
    """Import (and exercise once) everything a worker needs, so each fork starts warm: the
    engine imports lazily to keep kata-oci's short commands cheap, which is the opposite of
    what a long-lived spawner wants. Returns a process plan as exec requests carry it."""
    import logging  # noqa: F401
    import subprocess  # noqa: F401

    import oci.cgroups  # noqa: F401
    from oci import spec as ocispec
    from oci.syscalls import libseccomp, linux  # noqa: F401

    from . import hooks, init, inplace, launcher, process, rootfs, state, sync  # noqa: F401

    with contextlib.suppress(OSError):
        libseccomp.resolve_syscall("read")  # loads libseccomp.so.2 once
    caps = ("CAP_CHOWN", "CAP_KILL")
    sample = ocispec.Process(
        args=("true",),
        cwd="/",
        env=("PATH=/bin",),
        capabilities=ocispec.LinuxCapabilities(bounding=caps, effective=caps, permitted=caps),
    )
    sample_plan = json.dumps(plan_to_wire(process.plan_process(sample, None)))
    # Decoding builds per-class caches on first use: do it once here.
    raw = ocispec.default_spec().to_dict()
    ocispec.decode(ocispec.Spec, raw)
    ocispec.check(ocispec.decode(ocispec.Spec, raw)[0])
    return sample_plan


def _reap_workers() -> None:
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _worker(req: dict[str, Any], fds: list[int], cgroup_layout: CgroupLayout | None = None) -> None:
    reply = socket.socket(fileno=fds[0])
    try:
        out = _handle(req, fds[1:], cgroup_layout)
        out["ok"] = True
    except EngineError as err:
        out = {"ok": False, "error": type(err).__name__, "msg": str(err)}
        if isinstance(err, InitError):
            out.update(step=err.step, errno=err.errno, path=err.path, detail=err.detail)
    except Exception as err:
        out = {"ok": False, "error": "EngineError", "msg": f"{type(err).__name__}: {err}"}
    reply.send(json.dumps(out).encode())


def _handle(
    req: dict[str, Any], fds: list[int], cgroup_layout: CgroupLayout | None = None
) -> dict[str, Any]:
    from oci import spec as ocispec

    from .launcher import Engine

    eng = Engine(req["root"], cgroup_layout=cgroup_layout)
    op = req["op"]
    cid = req["id"]
    stdio = (fds[0], fds[1], fds[2]) if len(fds) >= 3 else None
    if op == "create":
        r = eng.create(cid, req["bundle"], stdio=stdio, no_pivot=bool(req.get("no_pivot")))
        return {"pid": r.pid}
    if op == "exec":
        r = eng.exec_planned(
            cid,
            plan_from_wire(req["plan"]),
            init_caps=bool(req.get("init_caps")),
            stdio=stdio,
            in_caller=True,  # the worker exits after its reply: it may join the namespaces
        )
        return {"pid": r.pid}
    if op == "start":
        eng.start(cid)
        return {}
    if op == "kill":
        eng.kill(cid, int(req["signal"]), all_processes=bool(req.get("all")))
        return {}
    if op == "delete":
        eng.delete(cid, force=bool(req.get("force")))
        return {}
    if op == "state":
        return {"state": eng.state(cid)}
    if op == "pids":
        return {"pids": eng.pids(cid)}
    fn = getattr(eng, op, None)
    if op in ("pause", "resume") and fn is not None:
        fn(cid)
        return {}
    if op == "update" and fn is not None:
        res = ocispec.decode(ocispec.LinuxResources, req["resources"])[0]
        fn(cid, res)
        return {}
    if op == "stats" and fn is not None:
        return {"stats": fn(cid)}
    raise InvalidArgument(f"spawner: unknown operation {op!r}")


def plan_to_wire(plan: ProcessPlan) -> dict[str, Any]:
    """A ``ProcessPlan`` without a seccomp profile as JSON-able data (``plan_from_wire``)."""
    if plan.seccomp is not None:
        raise InvalidArgument("exec: a process plan on the wire carries no seccomp profile")
    out: dict[str, Any] = {}
    for f in dataclasses.fields(plan):
        value = getattr(plan, f.name)
        if f.name == "caps" and value is not None:
            value = {c.name: sorted(getattr(value, c.name)) for c in dataclasses.fields(value)}
        out[f.name] = value
    return out


def plan_from_wire(data: dict[str, Any]) -> ProcessPlan:
    from oci.syscalls import CapabilitySets

    from .process import ProcessPlan

    def tup(v: Any) -> Any:
        return tuple(tup(x) for x in v) if isinstance(v, list) else v

    fields = {k: tup(v) for k, v in data.items()}
    caps = fields.get("caps")
    if caps is not None:
        fields["caps"] = CapabilitySets(**{k: frozenset(v) for k, v in caps.items()})
    return ProcessPlan(**fields)


# ---------------------------------------------------------------------------------------------
# client side (runs in the agent, on its event loop; never forks, never blocks)


@dataclass(frozen=True, slots=True)
class Created:
    pid: int


class SpawnerClient:
    """asyncio client of the spawner. Safe to use from many tasks at once (one socketpair per
    request). Raises the same ``oci.engine.errors`` classes as ``Engine``."""

    def __init__(self, sock: socket.socket, root: str) -> None:
        self._sock = sock
        self._sock.setblocking(True)
        self.root = root

    async def create(
        self,
        container_id: str,
        bundle: str,
        *,
        stdio: tuple[int, int, int] | None = None,
        no_pivot: bool = False,
    ) -> int:
        """Create from ``bundle``/config.json; returns the init's pid (blocked until start)."""
        r = await self._call(
            {"op": "create", "id": container_id, "bundle": bundle, "no_pivot": no_pivot}, stdio
        )
        return int(r["pid"])

    async def start(self, container_id: str) -> None:
        await self._call({"op": "start", "id": container_id})

    async def exec(
        self, container_id: str, process: object, *, stdio: tuple[int, int, int] | None = None
    ) -> int:
        """``process``: an ``oci.spec.Process``; returns the pid (already running). It is
        planned here (names resolved: InvalidArgument before any request), so the worker
        decodes no spec: a forked worker pays a copy-on-write fault for every page the
        generic decoder touches (~1 ms)."""
        from .process import plan_process

        plan = plan_process(process, None)
        req = {
            "op": "exec",
            "id": container_id,
            "plan": plan_to_wire(plan),
            "init_caps": process.capabilities is None,  # type: ignore[attr-defined]
        }
        r = await self._call(req, stdio)
        return int(r["pid"])

    async def kill(self, container_id: str, signum: int, *, all_processes: bool = False) -> None:
        await self._call({"op": "kill", "id": container_id, "signal": signum, "all": all_processes})

    async def delete(self, container_id: str, *, force: bool = False) -> None:
        await self._call({"op": "delete", "id": container_id, "force": force})

    async def state(self, container_id: str) -> dict[str, Any]:
        r = await self._call({"op": "state", "id": container_id})
        return dict(r["state"])

    async def pids(self, container_id: str) -> list[int]:
        r = await self._call({"op": "pids", "id": container_id})
        return [int(p) for p in r["pids"]]

    async def pause(self, container_id: str) -> None:
        await self._call({"op": "pause", "id": container_id})

    async def resume(self, container_id: str) -> None:
        await self._call({"op": "resume", "id": container_id})

    async def update(self, container_id: str, resources: object) -> None:
        from oci.spec import encode

        await self._call({"op": "update", "id": container_id, "resources": encode(resources)})  # type: ignore[arg-type]

    async def stats(self, container_id: str) -> dict[str, Any]:
        r = await self._call({"op": "stats", "id": container_id})
        return dict(r["stats"])

    async def _call(
        self, req: dict[str, Any], stdio: tuple[int, int, int] | None = None
    ) -> dict[str, Any]:
        req["root"] = self.root
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            fds = [theirs.fileno(), *(stdio or ())]
            # A small message on a local socketpair: never blocks in practice.
            self._sock.sendmsg(
                [json.dumps(req).encode()],
                [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))],
            )
            theirs.close()
            mine.setblocking(False)
            import asyncio  # here: the spawner itself must not load it (+3 MiB in every fork)

            loop = asyncio.get_running_loop()
            data = await loop.sock_recv(mine, 65536)
        finally:
            mine.close()
            theirs.close()
        if not data:
            raise EngineError(f"{req['op']} {req['id']}: the engine's worker died without a reply")
        out: dict[str, Any] = json.loads(data)
        if out.get("ok"):
            return out
        if out.get("error") == "InitError":
            raise InitError(
                out.get("step") or "init",
                out.get("detail") or out.get("msg", ""),
                int(out.get("errno") or 0),
                out.get("path"),
            )
        cls = _ERRORS.get(str(out.get("error")), EngineError)
        err = cls.__new__(cls)
        Exception.__init__(err, out.get("msg", ""))
        if isinstance(err, ContainerNotFound | ContainerExists):
            err.container_id = req["id"]
        raise err
