"""oci.engine: the in-guest container engine (runc's job, in Python).

Public API
==========

Synchronous core — ``oci.engine.Engine`` (used by ``kata-oci`` and inside the spawner)::

    eng = Engine(root="/run/kata-oci")                 # state dir: <root>/<id>/state.json
    eng.create(cid, bundle, stdio=(0, 1, 2) | None, console_socket=fd | None,
               pid_file=None, no_pivot=False, preserve_fds=0) -> Launched(pid)
    eng.start(cid)                  # releases the init (exec.fifo); returns once it exec'd
    eng.exec(cid, process: oci.spec.Process, stdio=..., console_socket=...) -> Launched(pid)
    eng.kill(cid, signal.SIGTERM, all_processes=False)
    eng.delete(cid, force=False)                       # processes, cgroup, state, poststop
    eng.state(cid) -> dict (runc state JSON) / eng.containers() / eng.pids(cid)
    eng.pause(cid) / eng.resume(cid) / eng.update(cid, resources) / eng.stats(cid)

* Every method blocks until done (create: until the init is ready and waiting for start;
  exec: until the process is about to execve). Not thread-safe: one call at a time, from a
  single-threaded process — it forks. **The agent must not call it in its own process**; it
  uses ``oci.engine.spawner`` (below).
* Pids are in the caller's PID namespace. The container process is NOT a child of the engine:
  stage-1 forks it and exits, so the kernel reparents it to the nearest subreaper. The caller
  must be PID 1 or a child subreaper (``PR_SET_CHILD_SUBREAPER``) and reap it itself
  (agent: ``reaper.adopt(pid)``; kata-oci run/exec: waitpid). Its exit may be reaped before
  the caller learns the pid only for exec'd processes that exit immediately: keep orphan
  statuses (agent.reaper does) and adopt.
* Errors (``oci.engine.errors``): ``ContainerNotFound``, ``ContainerExists``,
  ``InvalidArgument`` (bad spec/bundle, unknown capability/syscall/namespace),
  ``InvalidState`` (wrong status), ``InitError`` (``.step``, ``.errno``, ``.path``: a failure
  inside container set-up, e.g. "mount /proc: mount: Permission denied"), ``HookError``.
  A failed create leaves nothing behind (no process, cgroup or state dir; mounts live only in
  the container's mount namespace, which dies with it).

For the agent (asyncio, never forks) — ``oci.engine.spawner``::

    argv = spawner.spawner_argv(fd)     # start ONCE at agent start-up via agent.spawn, with
                                        # child fd 3 = one end of socket.socketpair(AF_UNIX,
                                        # SOCK_SEQPACKET); keep the other end
    client = spawner.SpawnerClient(sock)             # asyncio; one request at a time per call
    r = await client.create(cid, bundle, root, stdio=(in, out, err) | None, terminal=...)
        -> Created(pid, console_fd | None)           # console_fd: the pty master (caller owns)
    await client.start(cid, root); await client.exec(cid, root, process, stdio=..)
    await client.kill(...); await client.delete(...); await client.state(...) ...

  Each request is served by a worker the spawner forks (~1-2 ms): it runs ``Engine`` and
  replies with pids and fds (SCM_RIGHTS). Container processes get reparented to the agent
  (it is PID 1/subreaper), never to the spawner; the spawner only reaps its own workers.
"""

from .errors import (
    ContainerExists,
    ContainerNotFound,
    EngineError,
    HookError,
    InitError,
    InvalidArgument,
    InvalidState,
)
from .launcher import Engine, Launched

__all__ = [
    "ContainerExists",
    "ContainerNotFound",
    "Engine",
    "EngineError",
    "HookError",
    "InitError",
    "InvalidArgument",
    "InvalidState",
    "Launched",
]
