"""agent.spawn + agent.reaper with real child processes (no root needed)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from agent import spawn
from agent.errors import DeadlineExceeded, Internal
from agent.reaper import ExitStatus, Reaper, install

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))


async def test_run_collects_stdout_stderr_and_status() -> None:
    done = await spawn.run(["sh", "-c", "echo out; echo err >&2; exit 3"], timeout=30)
    assert done.returncode == 3
    assert done.stdout == b"out\n"
    assert done.stderr == b"err\n"
    with pytest.raises(Internal, match=r"mount the thing: sh exited with status 3: err"):
        done.check("mount the thing")


async def test_run_feeds_large_input() -> None:
    data = os.urandom(1 << 20)
    done = await spawn.run(["cat"], input=data, timeout=30)
    assert done.check().stdout == data


async def test_run_child_ignoring_stdin_is_not_an_error() -> None:
    done = await spawn.run(["true"], input=b"x" * (1 << 20), timeout=30)
    assert done.returncode == 0


async def test_run_timeout_kills_child() -> None:
    with pytest.raises(DeadlineExceeded, match=r"sleep: did not finish within 0.2s"):
        await spawn.run(["sleep", "60"], timeout=0.2)


async def test_run_missing_program_names_it() -> None:
    with pytest.raises(spawn.SpawnError, match="no-such-program-xyz: executable not found") as info:
        await spawn.run(["no-such-program-xyz"], timeout=5)
    assert info.value.errno == 2


async def test_run_caps_output() -> None:
    done = await spawn.run(["head", "-c", "100000", "/dev/zero"], timeout=30, max_output=1000)
    assert done.stdout == b"\0" * 1000


async def test_run_resets_sigpipe_in_child() -> None:
    # Python ignores SIGPIPE; a child must get the default disposition back.
    done = await spawn.run(["sh", "-c", "grep SigIgn /proc/self/status"], timeout=30)
    ign = int(done.stdout.split()[1], 16)
    assert not ign & (1 << (signal.SIGPIPE - 1))


def _inheritable_fds() -> set[int]:
    """fds this test process itself inherited without close-on-exec (the agent marks them
    close-on-exec at start-up with spawn.close_inherited_fds_on_exec)."""
    import fcntl

    fds = set()
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        try:
            if not fcntl.fcntl(fd, fcntl.F_GETFD) & fcntl.FD_CLOEXEC:
                fds.add(fd)
        except OSError:
            pass
    return fds - {0, 1, 2}


async def test_run_gets_only_planned_fds_and_no_fd_leak() -> None:
    before = set(os.listdir("/proc/self/fd"))
    done = await spawn.run(["sh", "-c", "exec ls /proc/self/fd"], timeout=30)
    fds = {int(x) for x in done.stdout.split()}
    # 0, 1, 2, the fds this process inherited itself (flock's lock, say) and the one fd ls
    # reads the directory with: the lowest free one, which an inherited fd may have pushed up
    inherited = _inheritable_fds()
    assert {0, 1, 2} <= fds
    assert len(fds - inherited - {0, 1, 2}) == 1, (fds, inherited)
    assert set(os.listdir("/proc/self/fd")) == before


INHERITED_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from agent import spawn

    async def main():
        changed = spawn.close_inherited_fds_on_exec()
        assert int(sys.argv[1]) in changed, changed
        done = await spawn.run(["sh", "-c", "exec ls /proc/self/fd"], timeout=30)
        print(done.stdout.decode().split())

    asyncio.run(main())
    """
)


def test_fds_inherited_by_the_agent_do_not_reach_children() -> None:
    r, w = os.pipe()
    try:
        done = subprocess.run(
            [sys.executable, "-c", INHERITED_SCRIPT, str(w)],
            capture_output=True,
            timeout=60,
            check=False,
            pass_fds=(w,),
            cwd=ROOT,
        )
    finally:
        os.close(r)
        os.close(w)
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().strip() == "['0', '1', '2', '3']"


async def test_spawn_fd_plan_with_swapped_fds() -> None:
    r1, w1 = os.pipe()
    r2, w2 = os.pipe()
    try:
        # The child's fd 1 is pipe 2 and its fd 3 is pipe 1: dup order must not matter.
        child = spawn.spawn(["sh", "-c", "echo one >&3; echo two"], fds={1: w2, 3: w1, 2: None})
        os.close(w1)
        os.close(w2)
        status = await child.wait()
        assert status == ExitStatus(child.pid, 0, None)
        assert os.read(r1, 100) == b"one\n"
        assert os.read(r2, 100) == b"two\n"
    finally:
        for fd in (r1, r2):
            os.close(fd)


async def test_child_signal_and_no_signal_after_reap() -> None:
    child = spawn.spawn(["sleep", "60"])
    assert child.send_signal(signal.SIGTERM)
    status = await child.wait()
    assert status.signal == signal.SIGTERM
    assert status.returncode == -signal.SIGTERM
    assert status.shell_code == 128 + signal.SIGTERM
    assert "SIGTERM" in status.describe()
    assert not child.kill()  # already reaped: never signals a reused pid


async def test_many_concurrent_children_none_lost() -> None:
    children = [spawn.spawn(["sh", "-c", f"exit {i % 7}"]) for i in range(50)]
    statuses = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 60)
    assert [s.code for s in statuses] == [i % 7 for i in range(50)]


async def test_wait_cancellation_does_not_lose_status() -> None:
    child = spawn.spawn(["sh", "-c", "sleep 0.2; exit 5"])
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(child.wait(), 0.01)
    assert (await child.wait()).code == 5


async def test_reap_all_mode_delivers_registered_and_reaps_orphans() -> None:
    loop = asyncio.get_running_loop()
    reaper = Reaper(reap_all=True)
    reaper.start(loop)
    try:
        # The shell starts a background child and exits: that child is not ours to register.
        # (Not a subreaper here, so the orphan goes to init; we only check our own pids.)
        children = [spawn.spawn(["sh", "-c", f"exit {i}"], reaper=reaper) for i in range(20)]
        statuses = await asyncio.wait_for(asyncio.gather(*(c.wait() for c in children)), 60)
        assert [s.code for s in statuses] == list(range(20))
        assert reaper.pending == 0
    finally:
        reaper.close()


SUBREAPER_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from agent import spawn
    from agent.reaper import Reaper, install

    async def main():
        loop = asyncio.get_running_loop()
        reaper = Reaper(reap_all=True)
        reaper.start(loop, subreaper=True)
        install(reaper, loop)
        # sh forks a grandchild that outlives it; as subreaper we inherit and reap it.
        done = await spawn.run(["sh", "-c", "sleep 0.5 >/dev/null 2>&1 & echo $!"], timeout=30)
        orphan = int(done.stdout)
        status = await asyncio.wait_for(reaper.adopt(orphan), 30)
        print(json.dumps({"orphan_code": status.code, "orphans": reaper.orphans_reaped}))

    if sys.argv[1] == "uvloop":
        import uvloop
        uvloop.run(main())
    else:
        asyncio.run(main())
    """
)


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_subreaper_adopts_reparented_grandchild(loop: str) -> None:
    import json

    done = subprocess.run(
        [sys.executable, "-c", SUBREAPER_SCRIPT, loop],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"orphan_code": 0, "orphans": 0}


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, sys
    from agent import spawn
    from agent.reaper import Reaper, install

    async def main():
        loop = asyncio.get_running_loop()
        reaper = Reaper(reap_all=True)
        reaper.start(loop, subreaper=True)
        install(reaper, loop)
        await spawn.run(["sh", "-c", "sleep 0.1 &"], timeout=30)
        for _ in range(300):
            if reaper.orphans_reaped:
                break
            await asyncio.sleep(0.05)
        # an exit reaped as an orphan is still handed to a late adopt()
        print(json.dumps({"orphans": reaper.orphans_reaped}))

    asyncio.run(main())
    """
)


def test_orphan_is_reaped_and_counted() -> None:
    import json

    done = subprocess.run(
        [sys.executable, "-c", ORPHAN_SCRIPT],
        capture_output=True,
        timeout=60,
        check=False,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout) == {"orphans": 1}


async def test_install_rejects_second_reaper() -> None:
    loop = asyncio.get_running_loop()
    first = Reaper(reap_all=False)
    first.start(loop)
    install(first, loop)
    try:
        with pytest.raises(RuntimeError, match="another reaper"):
            install(Reaper(reap_all=False), loop)
    finally:
        first.close()
