"""The lifecycle services over fakes (engine, storage, helper runner, recording syscalls)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    Internal,
    InvalidArgument,
    NotFound,
    Unavailable,
)
from agent.sandbox import ContainerStatus, Sandbox
from agent.sandbox.bundle import Bundles
from agent.services.containers import ContainerService, CreateContainer, LifecycleSettings
from agent.services.processes import ProcessService
from agent.services.sandbox import CreateSandbox, KernelModule, SandboxService
from agent.services.stdio import StdioService
from agent.storage import Storage
from oci.spec import Linux, LinuxMemory, LinuxNamespace, LinuxResources, Process, Root, Spec
from oci.syscalls.fake import RecordingSyscalls
from tests.unit.lifecycle.fakes import FakeEngine, FakeProc, FakeRunner, FakeStorage


@dataclass
class World:
    root: Path
    sandbox: Sandbox
    engine: FakeEngine
    storage: FakeStorage
    runner: FakeRunner
    sys: RecordingSyscalls
    settings: LifecycleSettings
    containers: ContainerService
    processes: ProcessService
    stdio: StdioService
    sandbox_svc: SandboxService

    def spec(self, *, terminal: bool = False, args: tuple[str, ...] = ("sh",)) -> Spec:
        return Spec(
            process=Process(terminal=terminal, args=args, cwd="/"),
            root=Root(path=str(self.root)),
            linux=Linux(
                namespaces=(
                    LinuxNamespace(type="ipc"),
                    LinuxNamespace(type="uts"),
                    LinuxNamespace(type="mount"),
                )
            ),
        )


@pytest.fixture
async def world(tmp_path: Path) -> World:
    root = tmp_path / "rootfs"
    root.mkdir()
    resolv = tmp_path / "resolv.conf"
    resolv.write_text("nameserver 127.0.0.53\n")
    settings = LifecycleSettings(
        run_dir=tmp_path / "run",
        sandbox_ns_dir=tmp_path / "ns",
        guest_resolv_conf=resolv,
        kill_timeout=1.0,
    )
    sandbox = Sandbox()
    engine = FakeEngine()
    storage = FakeStorage()
    runner = FakeRunner()
    sys_ = RecordingSyscalls()
    containers = ContainerService(
        sandbox=sandbox,
        engine=engine,
        storage=storage,
        bundles=Bundles(settings.run_dir, sys_),
        settings=settings,
    )
    return World(
        root=root,
        sandbox=sandbox,
        engine=engine,
        storage=storage,
        runner=runner,
        sys=sys_,
        settings=settings,
        containers=containers,
        processes=ProcessService(sandbox=sandbox, settings=settings),
        stdio=StdioService(sandbox=sandbox),
        sandbox_svc=SandboxService(
            sandbox=sandbox,
            containers=containers,
            storage=storage,
            runner=runner,
            syscalls=sys_,
            settings=settings,
        ),
    )


async def ready(w: World) -> None:
    await w.sandbox_svc.create(CreateSandbox(hostname="pod", sandbox_id="sb1"))


async def read_all(w: World, cid: str, eid: str, *, err: bool = False) -> bytes:
    out = b""
    while True:
        read = w.stdio.read_stderr if err else w.stdio.read_stdout
        data = await asyncio.wait_for(read(cid, eid, 32768), 10)
        if not data:
            return out
        out += data


async def test_create_sandbox_sets_namespaces_dns_and_storages(world: World) -> None:
    w = world
    await w.sandbox_svc.create(
        CreateSandbox(
            hostname="pod-1",
            sandbox_id="sb1",
            dns=("nameserver 10.0.0.1", "search x", ""),
            storages=(Storage(driver="ephemeral", mount_point="/run/shm", source="shm"),),
            kernel_modules=(KernelModule("e1000e", ("EEE=1",)),),
        )
    )
    assert w.sandbox.id == "sb1"
    assert w.sandbox.ipc_ns == w.settings.sandbox_ns_dir / "ipc"
    helper = [c for c in w.runner.calls if c[2].endswith("nshelper.py")]
    assert helper
    assert helper[0][-1] == "pod-1"
    assert ["modprobe", "-v", "e1000e", "EEE=1"] in w.runner.calls
    assert w.storage.refs == {"/run/shm": [""]}
    resolv = w.settings.run_dir / "sandbox" / "resolv.conf"
    assert resolv.read_text() == "nameserver 10.0.0.1\nsearch x\n"
    assert str(w.settings.guest_resolv_conf) in w.sys.mounts
    with pytest.raises(AlreadyExists):
        await ready(w)


async def test_create_sandbox_failure_undoes(world: World) -> None:
    w = world
    w.storage.fail = True
    with pytest.raises(Internal, match="mount failed"):
        await w.sandbox_svc.create(
            CreateSandbox(hostname="h", storages=(Storage(driver="local", mount_point="/x"),))
        )
    with pytest.raises(FailedPrecondition, match="CreateSandbox must be called first"):
        await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    w.storage.fail = False
    await ready(w)


async def test_bad_kernel_module(world: World) -> None:
    w = world
    with pytest.raises(InvalidArgument, match="empty name"):
        await w.sandbox_svc.create(CreateSandbox(kernel_modules=(KernelModule(""),)))
    w.runner.returncode = 1
    with pytest.raises(Internal, match="load kernel module nope: modprobe exited with status 1"):
        await w.sandbox_svc.create(CreateSandbox(kernel_modules=(KernelModule("nope"),)))


async def test_container_output_and_exit(world: World) -> None:
    w = world
    await ready(w)
    st = (Storage(driver="virtio-fs", mount_point="/run/shared"),)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec(), storages=st))
    rt = w.engine.runtimes["c1"]
    assert rt.spec is not None
    assert rt.spec.linux is not None
    ns = {n.type: n.path for n in rt.spec.linux.namespaces}
    assert ns == {
        "ipc": str(w.settings.sandbox_ns_dir / "ipc"),
        "uts": str(w.settings.sandbox_ns_dir / "uts"),
        "mount": None,
        "pid": None,
    }
    assert rt.spec.root is not None
    assert rt.spec.root.path == str(w.settings.run_dir / "c1" / "rootfs")
    assert rt.spec.linux.cgroups_path is None  # resolved by oci.cgroups
    assert w.sys.mounts[str(w.settings.run_dir / "c1" / "rootfs")][0] == str(w.root)
    assert w.sandbox.get_container("c1").status is ContainerStatus.CREATED
    await w.containers.start("c1")
    assert rt.started
    assert rt.init is not None
    rt.init.write(b"hello ")
    rt.init.write(b"oops", err=True)
    rt.init.write(b"world")
    rt.init.finish(3)
    assert await read_all(w, "c1", "c1") == b"hello world"
    assert await read_all(w, "c1", "") == b""
    assert await read_all(w, "c1", "c1", err=True) == b"oops"
    assert await w.processes.wait("c1", "c1") == 3
    assert w.sandbox.get_container("c1").status is ContainerStatus.STOPPED
    with pytest.raises(NotFound, match="container c1: init process not found"):
        await w.processes.wait("c1", "c1")
    with pytest.raises(NotFound):
        await w.stdio.read_stdout("c1", "c1", 10)
    await w.containers.remove("c1")
    assert rt.destroyed
    assert w.storage.refs == {}
    assert not (w.settings.run_dir / "c1").exists()
    with pytest.raises(NotFound, match="container c1 not found"):
        await w.containers.remove("c1")


async def test_second_container_joins_first_pid_namespace(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="pause", spec=w.spec()))
    await w.containers.create(
        CreateContainer(container_id="app", spec=w.spec(), sandbox_pidns=True)
    )
    await w.containers.create(CreateContainer(container_id="own", spec=w.spec()))
    pause = w.engine.runtimes["pause"].init
    assert pause is not None

    def pidns(cid: str) -> str | None:
        spec = w.engine.runtimes[cid].spec
        assert spec is not None
        assert spec.linux is not None
        return next(n.path for n in spec.linux.namespaces if n.type == "pid")

    assert pidns("pause") is None
    assert pidns("app") == f"/proc/{pause.pid}/ns/pid"
    assert pidns("own") is None
    await w.sandbox_svc.destroy()


async def test_bad_container_inputs(world: World) -> None:
    w = world
    await ready(w)
    with pytest.raises(InvalidArgument, match="invalid container id"):
        await w.containers.create(CreateContainer(container_id="../x", spec=w.spec()))
    with pytest.raises(InvalidArgument, match="no OCI spec"):
        await w.containers.create(CreateContainer(container_id="c1", spec=None))
    with pytest.raises(
        InvalidArgument, match=r"invalid OCI spec: process\.args: must not be empty"
    ):
        await w.containers.create(CreateContainer(container_id="c1", spec=w.spec(args=())))
    with pytest.raises(NotFound, match="container nope not found"):
        await w.containers.start("nope")
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    with pytest.raises(AlreadyExists, match="container c1 already exists"):
        await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    await w.containers.start("c1")
    with pytest.raises(FailedPrecondition, match="cannot start: it is running"):
        await w.containers.start("c1")
    with pytest.raises(FailedPrecondition, match="cannot resume: it is running"):
        await w.containers.resume("c1")
    # engine rejects a spec: nothing is left behind, the id is free again
    w.engine.fail_create = InvalidArgument("linux.namespaces[0].type: unknown namespace")
    fds = set(os.listdir("/proc/self/fd"))
    st = (Storage(driver="local", mount_point="/m"),)
    with pytest.raises(InvalidArgument, match="unknown namespace"):
        await w.containers.create(CreateContainer(container_id="c2", spec=w.spec(), storages=st))
    assert set(os.listdir("/proc/self/fd")) == fds
    assert not (w.settings.run_dir / "c2").exists()
    assert "/m" not in w.storage.refs
    w.engine.fail_create = None
    await w.containers.create(CreateContainer(container_id="c2", spec=w.spec()))


async def test_concurrent_create_same_id(world: World) -> None:
    w = world
    await ready(w)
    results = await asyncio.gather(
        *(w.containers.create(CreateContainer(container_id="c1", spec=w.spec())) for _ in range(3)),
        return_exceptions=True,
    )
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, AlreadyExists) for r in results if r is not None)


async def test_remove_running_container_kills_it(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    await w.containers.start("c1")
    waiter = asyncio.create_task(w.processes.wait("c1", "c1"))
    await w.containers.remove("c1")
    assert await waiter == 137
    assert len(w.sandbox) == 0


async def test_remove_timeout(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    rt = w.engine.runtimes["c1"]
    gate = asyncio.Event()
    orig = rt.destroy

    async def slow() -> None:
        await gate.wait()
        await orig()

    rt.destroy = slow  # type: ignore[method-assign]
    with pytest.raises(DeadlineExceeded, match="ETIME"):
        await w.containers.remove("c1", timeout=0.05)
    gate.set()
    await w.containers.close()
    assert len(w.sandbox) == 0


async def test_exec_stdin_echo_signal_wait(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    with pytest.raises(FailedPrecondition, match="is created, not running"):
        await w.processes.exec("c1", "e1", Process(args=("cat",), cwd="/"))
    await w.containers.start("c1")
    await w.processes.exec("c1", "e1", Process(args=("cat",), cwd="/"))
    with pytest.raises(AlreadyExists, match="exec id e1 already exists"):
        await w.processes.exec("c1", "e1", Process(args=("cat",), cwd="/"))
    with pytest.raises(InvalidArgument, match="exec id is empty"):
        await w.processes.exec("c1", "", Process(args=("cat",), cwd="/"))
    proc = w.engine.runtimes["c1"].execs["e1"]
    assert await w.stdio.write_stdin("c1", "e1", b"ping") == 4
    os.set_blocking(proc.stdin, True)
    assert os.read(proc.stdin, 10) == b"ping"
    w.stdio.close_stdin("c1", "e1")
    assert os.read(proc.stdin, 10) == b""
    with pytest.raises(Unavailable, match="no tty"):
        w.stdio.tty_resize("c1", "e1", 10, 10)
    with pytest.raises(NotFound, match="process e9 not found"):
        await w.processes.signal("c1", "e9", 15)
    with pytest.raises(InvalidArgument, match="invalid signal number 0"):
        await w.processes.signal("c1", "e1", 0)
    proc.finish(0)
    await asyncio.sleep(0)
    with pytest.raises(NotFound, match="ESRCH: No such process"):
        await w.processes.signal("c1", "e1", 15)
    assert await w.processes.wait("c1", "e1") == 0
    with pytest.raises(NotFound):
        await w.processes.wait("c1", "e1")
    await w.processes.signal("c1", "", signal.SIGKILL)
    assert w.engine.runtimes["c1"].killed_all == [9]


async def running_exec(w: World) -> FakeProc:
    """A sandbox, a started container c1 and an exec e1 in it: the exec's fake process."""
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    await w.containers.start("c1")
    await w.processes.exec("c1", "e1", Process(args=("cat",), cwd="/"))
    return w.engine.runtimes["c1"].execs["e1"]


async def test_output_outlives_wait_in_every_order(world: World) -> None:
    """WaitProcess first, then the reads (long-poll and the RPC server's synchronous variant):
    every byte, then NOT_FOUND once both outputs returned EOF; a second wait is NOT_FOUND."""
    w = world
    proc = await running_exec(w)
    proc.write(b"o" * 5000)
    proc.write(b"e" * 10, err=True)
    proc.finish(0)
    assert await w.processes.wait("c1", "e1") == 0
    with pytest.raises(NotFound, match="process e1 not found \\(already waited for\\)"):
        await w.processes.wait("c1", "e1")
    got = b""
    while parts := w.stdio.try_read_stdout_parts("c1", "e1", 1024):
        got += b"".join(parts)
    assert got == b"o" * 5000
    w.stdio.close_stdin("c1", "e1")  # after the exit and the wait: still allowed
    assert await read_all(w, "c1", "e1", err=True) == b"e" * 10
    with pytest.raises(NotFound, match="process e1 not found"):
        await w.stdio.read_stdout("c1", "e1", 10)
    # the wait can also come last, and the exec id is free again after it
    await w.processes.exec("c1", "e1", Process(args=("cat",), cwd="/"))
    proc = w.engine.runtimes["c1"].execs["e1"]
    reader = asyncio.create_task(read_all(w, "c1", "e1"))
    proc.write(b"again")
    proc.finish(5)
    assert await read_all(w, "c1", "e1", err=True) == b""
    assert await reader == b"again"
    assert await w.processes.wait("c1", "e1") == 5
    with pytest.raises(NotFound):
        await w.stdio.read_stdout("c1", "e1", 10)
    await w.containers.remove("c1")


async def test_remove_releases_output_nobody_read(world: World) -> None:
    w = world
    proc = await running_exec(w)
    proc.write(b"unread")
    proc.finish(0)
    assert await w.processes.wait("c1", "e1") == 0
    process = w.sandbox.get_process("c1", "e1")
    assert not process.io.drained
    await w.containers.remove("c1")
    assert process.io.drained


async def test_refresh_cpusets_tries_every_container(world: World) -> None:
    w = world
    await ready(w)
    for cid in ("c1", "c2", "c3"):
        await w.containers.create(CreateContainer(container_id=cid, spec=w.spec()))
    w.engine.runtimes["c2"].fail_cpuset = True
    with pytest.raises(Internal, match=r"^container c2: cpuset: EINVAL$"):
        await w.containers.refresh_cpusets()
    assert [w.engine.runtimes[c].cpuset_refreshes for c in ("c1", "c2", "c3")] == [1, 0, 1]


async def test_signal_real_process_and_sigterm_upgrade(world: World) -> None:
    """SIGTERM to an init that does not handle it becomes SIGKILL (checked on a real child)."""
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    await w.containers.start("c1")
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])  # noqa: ASYNC220
    try:
        init = w.sandbox.get_process("c1", "c1")
        init.pid = child.pid  # point the entry at a real process
        await w.processes.signal("c1", "", signal.SIGTERM)
        assert child.wait(10) == -signal.SIGKILL
    finally:
        child.kill()
        child.wait()


async def test_tty_exec_resize(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    await w.containers.start("c1")
    await w.processes.exec("c1", "t1", Process(terminal=True, args=("sh",), cwd="/"))
    w.stdio.tty_resize("c1", "t1", 40, 100)
    proc = w.engine.runtimes["c1"].execs["t1"]
    proc.write(b"prompt$ ")
    assert await w.stdio.read_stdout("c1", "t1", 100) == b"prompt$ "
    proc.finish(0)
    assert await read_all(w, "c1", "t1") == b""
    assert await w.processes.wait("c1", "t1") == 0


async def test_pause_resume_update_stats(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    await w.containers.start("c1")
    await w.containers.pause("c1")
    assert w.sandbox.get_container("c1").status is ContainerStatus.PAUSED
    with pytest.raises(FailedPrecondition, match="cannot pause: it is paused"):
        await w.containers.pause("c1")
    await w.containers.resume("c1")
    assert w.sandbox.get_container("c1").status is ContainerStatus.RUNNING
    res = LinuxResources(memory=LinuxMemory(limit=1 << 20))
    await w.containers.update("c1", res)
    assert w.engine.runtimes["c1"].updates == [res]
    with pytest.raises(InvalidArgument):
        await w.containers.update("c1", None)
    stats, _ = await w.containers.stats("c1")
    assert stats.memory_stats.usage.usage == 1234


async def test_oom_events_and_destroy(world: World) -> None:
    w = world
    await ready(w)
    await w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    pending = asyncio.create_task(w.sandbox_svc.get_oom_event())
    await asyncio.sleep(0)
    for cb in w.engine.runtimes["c1"].oom_callbacks:
        cb()
    assert await asyncio.wait_for(pending, 5) == "c1"
    pending = asyncio.create_task(w.sandbox_svc.get_oom_event())
    await asyncio.sleep(0)
    await w.sandbox_svc.destroy()
    with pytest.raises(Internal, match="sandbox destroyed"):
        await pending
    assert w.sandbox_svc.shutdown_requested.is_set()
    assert w.storage.released_all
    assert len(w.sandbox) == 0
    assert list(w.settings.run_dir.iterdir()) == []
    await w.sandbox_svc.destroy()  # idempotent
    with pytest.raises(FailedPrecondition, match="destroyed"):
        await w.containers.create(CreateContainer(container_id="c2", spec=w.spec()))


async def test_create_and_exec_finish_even_if_the_caller_goes_away(world: World) -> None:
    w = world
    await ready(w)
    gate = asyncio.Event()
    create = w.engine.create

    async def slow_create(**kw: object) -> object:
        await gate.wait()
        return await create(**kw)  # type: ignore[arg-type]

    w.engine.create = slow_create  # type: ignore[assignment,method-assign]
    caller = asyncio.create_task(
        w.containers.create(CreateContainer(container_id="c1", spec=w.spec()))
    )
    await asyncio.sleep(0.01)
    caller.cancel()
    with pytest.raises(asyncio.CancelledError):
        await caller
    gate.set()
    await w.containers.close()
    # Not half-done and untracked: the container is recorded (and removable).
    assert w.sandbox.get_container("c1").status is ContainerStatus.CREATED
    await w.containers.remove("c1")
    assert w.engine.runtimes["c1"].destroyed


async def test_concurrent_create_sandbox(world: World) -> None:
    results = await asyncio.gather(
        world.sandbox_svc.create(CreateSandbox(hostname="a")),
        world.sandbox_svc.create(CreateSandbox(hostname="b")),
        return_exceptions=True,
    )
    assert results[0] is None
    assert isinstance(results[1], AlreadyExists)
    assert world.sandbox.hostname == "a"
