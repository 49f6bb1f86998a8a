"""The engine's spawner: how a process that must never fork (the asyncio agent) runs containers.

The agent starts this process ONCE, at start-up, through its own spawner/reaper, and talks to it
with ``oci.engine.client.SpawnerClient`` (the protocol: ``oci.engine.wire``)::

    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    child_proc = spawn(spawner_argv(3), fds={3: child.fileno()})   # agent.spawn
    child.close()
    client = SpawnerClient(parent, root="/run/kata-containers/oci")

Each request carries a fresh socketpair end (SCM_RIGHTS) for its reply plus the fds it needs
(the process's stdio). The spawner, a warm single-threaded Python with the engine imported,
forks one worker per request (ahead of the request: see ``_Pool``); the worker runs the
synchronous ``Engine`` call, writes one reply, then exits. Requests are therefore served
concurrently, and a slow create never blocks an exec. An exec request carries the process
already planned by the client: the worker, a fresh fork, would pay a copy-on-write fault for
every page the spec decoder touches.

Container processes are reparented to the agent (PID 1 / subreaper) when their first parent
exits — the engine's stage-1 (create), or for exec the worker itself, which joins the
container's namespaces and forks the process directly (``Engine.exec(in_caller=True)``), then
replies and exits — never to the spawner, so the agent's single reaper gets every exit status
(``reaper.adopt(pid)``). The spawner only reaps its own workers. It exits when the agent's end
of the socket closes, and it has PR_SET_PDEATHSIG=SIGKILL.

The spawner keeps its heap small, because every fork copies its page tables and the worker and
the container process copy each page they touch: the asyncio client lives in another module.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gc
import json
import os
import select
import signal
import socket
from typing import Any

from oci import spec as ocispec
from oci.cgroups import CgroupLayout, probe_layout
from oci.syscalls import consts, libc, libseccomp

from . import launch, plan, state
from .errors import InvalidArgument
from .facade import Engine
from .inplace import is_lean
from .process import plan_process
from .wire import MAX_FDS, error_to_wire, plan_from_wire, plan_to_wire

# ---------------------------------------------------------------------------------------------
# server side (runs in the spawner process; plain blocking code)


def main(fd: int) -> None:
    libc.prctl(consts.PR_SET_PDEATHSIG, signal.SIGKILL)
    sock = socket.socket(fileno=fd)
    serve(sock)


def serve(sock: socket.socket) -> None:
    """Serve requests on ``sock`` until it is closed by the other side."""
    sample_plan = _warm_up()
    # Workers are short-lived forks: keep the collector away from the imported state so that
    # neither a collection nor its bookkeeping dirties shared pages (copy-on-write faults).
    gc.collect()
    gc.freeze()

    signal.signal(signal.SIGCHLD, signal.SIG_DFL)
    _Pool(sock, sample_plan).run()


class _Pool:
    """Workers forked ahead of the requests, each waiting for one on the socket itself, so a
    fork (page tables, the child's first copy-on-write faults, scheduling) is never on a
    request's path. Each worker has a note pipe: "t" when it has taken a request, "q"
    when it saw the socket close (we exit), EOF when it exits (done, or died).

    Two wait while nothing runs; while a request runs, one: the replacement of a worker that
    took a request is forked when it has finished (its pipe's EOF), not when it starts, where
    the fork would compete with the request for the CPU (and may preempt it).
    A worker that takes a request when no other one waits has its replacement forked at once,
    so a burst of concurrent requests is served as before."""

    IDLE_TARGET = 2

    def __init__(self, sock: socket.socket, sample_plan: str) -> None:
        self.sock = sock
        self.sample_plan = sample_plan  # for the workers' rehearsal (``_rehearse``)
        # The cgroup hierarchy layout, probed here (before a fork, off every request's path),
        # not in each worker; again before each fork until something is mounted (the agent
        # may mount cgroupfs after it started the spawner).
        self.cgroup_layout: CgroupLayout | None = None
        self.idle: set[int] = set()  # note fds of the workers waiting for a request
        self.busy: set[int] = set()  # note fds of the workers serving one

    def run(self) -> None:
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
        if self.cgroup_layout is None:
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
                data, fds, _, _ = socket.recv_fds(sock, 65536, MAX_FDS)
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
    fds, decoding the request, a reply socket, encoding the reply, and an exec's planning from
    its process plan (``sample_plan``, made by ``_warm_up``) and a state record. The first run
    of code in a fork copies every page it writes (reference counts): here, not on a request's
    path."""
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    try:
        socket.send_fds(a, [b'{"op": "x", "id": "y", "root": "/"}'], [a.fileno(), b.fileno()])
        data, fds, _, _ = socket.recv_fds(b, 65536, MAX_FDS)
        json.loads(data)
        for fd in fds:
            reply = socket.socket(fileno=fd)
            reply.close()
        a.send(json.dumps({"ok": True, "pid": 1}).encode())
        b.recv(65536)
    finally:
        a.close()
        b.close()
    if sample_plan:  # an exec's planning, as Engine.exec_planned does it
        record = state.Record(**json.loads(_SAMPLE_RECORD))
        process = plan.exec_process(
            record.config, plan_from_wire(json.loads(sample_plan)), init_caps=True
        )
        cfg, joins = plan.exec_config(
            "x", "/", 1, [], process, stdio=(0, 1, 2), console_socket=None, preserve_fds=0
        )
        with contextlib.ExitStack() as opened:
            ns_join = launch.open_namespaces(joins, opened)
        is_lean(dataclasses.replace(cfg, ns_join=ns_join, cgroup_join=()))


# A state record as ``_rehearse`` reads one.
_SAMPLE_RECORD = state.Record(
    id="x", pid=0, pid_start=0, bundle="/", rootfs="/", created="", config={}
).to_json()


def _warm_up() -> str:
    """Exercise once what a worker needs, so each fork starts warm (caches filled, the seccomp
    library loaded). Returns a process plan as exec requests carry it."""
    with contextlib.suppress(OSError):
        libseccomp.resolve_syscall("read")  # loads libseccomp.so.2 once
    caps = ("CAP_CHOWN", "CAP_KILL")
    sample = ocispec.Process(
        args=("true",),
        cwd="/",
        env=("PATH=/bin",),
        capabilities=ocispec.LinuxCapabilities(bounding=caps, effective=caps, permitted=caps),
    )
    sample_plan = json.dumps(plan_to_wire(plan_process(sample, None)))
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
    except Exception as err:
        out = error_to_wire(err)
    reply.send(json.dumps(out).encode())


def _handle(
    req: dict[str, Any], fds: list[int], cgroup_layout: CgroupLayout | None = None
) -> dict[str, Any]:
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
    if op == "pause":
        eng.pause(cid)
        return {}
    if op == "resume":
        eng.resume(cid)
        return {}
    if op == "update":
        eng.update(cid, ocispec.decode(ocispec.LinuxResources, req["resources"])[0])
        return {}
    if op == "stats":
        return {"stats": eng.stats(cid)}
    raise InvalidArgument(f"spawner: unknown operation {op!r}")
