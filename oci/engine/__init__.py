"""oci.engine: the in-guest container engine (runc's job, in Python).

The modules, by concept (youki's libcontainer split):

* ``facade``: ``Engine``, the synchronous API, one short method per verb (below);
* ``status``: the lifecycle, which verb is legal in which ``oci.spec.Status``;
* ``state``: the state record on disk; ``errors``: the engine's errors, by meaning;
* ``plan`` and ``process``: spec → the init's configuration (pure; bad names fail here);
* ``launch``: fork stage-1 and walk the sync protocol (``sync``); start's fifo walk;
* ``init``: stage-1 and the container init's ordered steps (``rootfs`` does the mounts);
  ``inplace``: exec from a disposable caller;
* ``cgroup``: the engine's use of ``oci.cgroups``; ``hooks``: OCI hooks and their state;
* ``spawner`` (the agent's warm engine process), ``client`` (its asyncio client), ``wire``.

Import the module you need: the agent's process loads ``client`` and ``errors``, and
``facade`` only for its first in-thread start or delete (below).

Synchronous core: ``oci.engine.facade.Engine`` (used by ``kata-oci`` and in the spawner)::

    eng = Engine(root="/run/kata-oci")                 # state dir: <root>/<id>/state.json
    eng.create(cid, bundle, stdio=(0, 1, 2) | None, console_socket=fd | None,
               pid_file=None, no_pivot=False, preserve_fds=0) -> Launched(pid)
    eng.start(cid)                  # releases the init (exec.fifo); returns once it exec'd
    eng.exec(cid, process: oci.spec.Process, stdio=..., console_socket=...) -> Launched(pid)
    eng.kill(cid, signal.SIGTERM, all_processes=False)
    eng.delete(cid, force=False)                       # processes, cgroup, state, poststop
    eng.state(cid) -> dict (runc state JSON) / eng.containers() / eng.pids(cid)
    eng.pause(cid) / eng.resume(cid) / eng.update(cid, resources) / eng.stats(cid)
    eng.oom_watcher(cid) -> oci.cgroups.OomWatcher      # fileno()/read()/close()

* Every method blocks until done (create: until the init is set up and waiting for start;
  start and exec: until the process has exec'd the container's program). Not thread-safe:
  one call at a time, from a single-threaded process — it forks. **The agent must not call
  it in its own process**; it uses the spawner (below). Exception: ``start`` and ``delete``
  of a container without poststart / poststop hooks neither fork nor change the calling
  process; the agent runs them in a thread (``agent.sandbox.oci_runtime``).
* Terminal: either ``console_socket`` (runc's way: the init makes the pty inside the
  container and sends the master over it) or a pty slave made by the caller passed as
  ``stdio`` with ``process.terminal`` set (the agent's way: it keeps the master).
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

For the agent (asyncio, never forks): ``oci.engine.client.SpawnerClient`` over the spawner::

    client = SpawnerClient(parent, root=state_root)   # asyncio, many tasks at once
    pid = await client.create(cid, bundle, stdio=(in, out, err) | None, no_pivot=False)
    await client.start(cid)
    pid = await client.exec(cid, process: oci.spec.Process, stdio=(in, out, err) | None)
    await client.kill(cid, sig, all_processes=False); await client.delete(cid, force=False)
    await client.state(cid) / pids(cid) / pause(cid) / resume(cid) / update(cid, res) /
    stats(cid)

  Each request is served by a worker the spawner forks: it runs ``Engine`` and replies (the
  caller's stdio fds travel to it with SCM_RIGHTS; the caller closes its copies of the child
  ends afterwards). Requests run concurrently. Container processes get reparented to the agent
  (PID 1/subreaper), never to the spawner or a worker; the spawner only reaps its own workers.
  It exits when ``parent`` is closed.
"""
