"""cgroup v1 manager on this host's real hierarchies: every test checks a real effect."""

from __future__ import annotations

import dataclasses
import os
import select
import signal
import time
from pathlib import Path, PurePosixPath

import pytest

from oci.cgroups import (
    CgroupBusy,
    CgroupInvalid,
    CgroupNotFound,
    CgroupUnsupported,
    V1Manager,
    manager_for,
    v1_controllers,
)
from oci.spec import (
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxPids,
    LinuxResources,
)
from tests.root.cgroups.support import Child, leftovers

MiB = 1 << 20


def make(parent: PurePosixPath, name: str = "c1") -> V1Manager:
    m = manager_for(str(parent / name), container_id=name)
    assert isinstance(m, V1Manager)
    m.create()
    return m


def no_swap(m: V1Manager, mem: LinuxMemory) -> LinuxMemory:
    """Also cap memory+swap when the host accounts swap, so the limit cannot be escaped."""
    if (m.dirs["memory"] / "memory.memsw.limit_in_bytes").exists():
        return dataclasses.replace(mem, swap=mem.limit)
    return mem


def wait_until(cond: object, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        time.sleep(0.01)
    return False


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def test_create_add_list_destroy(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    for d in m._unique_dirs():
        assert d.is_dir()
    c = Child("import time; time.sleep(100)")
    children.append(c)
    m.add_pid(c.pid)
    assert m.pids() == [c.pid]
    for ctrl in ("memory", "pids", "freezer", "cpu"):
        assert str(parent / "c1") in Path(f"/proc/{c.pid}/cgroup").read_text()
        assert m.procs_in(ctrl) == [c.pid]
    # destroy refuses while a process is inside, naming it, and keeps the cgroup
    with pytest.raises(CgroupBusy, match=rf"still has processes \['{c.pid}'\]"):
        m.destroy(timeout=0.2)
    assert m.exists()
    c.kill()
    m.destroy()  # retries while the exiting process still pins the cgroup
    assert not m.exists()


def test_cpuset_inherited_on_create(parent: PurePosixPath) -> None:
    m = make(parent)
    cpus = (m.dirs["cpuset"] / "cpuset.cpus").read_text().strip()
    assert cpus == (Path("/sys/fs/cgroup/cpuset/cpuset.cpus").read_text().strip())
    assert (m.dirs["cpuset"] / "cpuset.mems").read_text().strip() != ""


def test_refresh_cpuset_widens_the_chain_to_the_online_cpus(
    parent: PurePosixPath, children: list[Child]
) -> None:
    """After CPU hot-plug (OnlineCPUMem): a cpuset made while fewer CPUs were online (narrowed
    here to CPU 0: the host's own CPUs are never offlined) gets every online CPU, parent first;
    a container's own list is kept. A process inside moves with it."""
    m = make(parent)
    leaf = m.dirs["cpuset"]
    online = Path("/sys/fs/cgroup/cpuset/cpuset.cpus").read_text().strip()
    if online == "0":
        pytest.skip("one CPU: nothing to widen to")
    c = Child("import time; time.sleep(100)")
    children.append(c)
    m.add_pid(c.pid)
    for d in (leaf, leaf.parent):  # a parent is narrowed only once its children are
        (d / "cpuset.cpus").write_text("0")
    assert os.sched_getaffinity(c.pid) == {0}
    m.refresh_cpuset(None)
    assert (leaf.parent / "cpuset.cpus").read_text().strip() == online
    assert (leaf / "cpuset.cpus").read_text().strip() == online
    assert len(os.sched_getaffinity(c.pid)) > 1
    m.refresh_cpuset("1")
    assert (leaf.parent / "cpuset.cpus").read_text().strip() == online
    assert (leaf / "cpuset.cpus").read_text().strip() == "1"
    assert os.sched_getaffinity(c.pid) == {1}


def test_memory_limit_oom_kills_and_notifies(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    m.apply(LinuxResources(memory=no_swap(m, LinuxMemory(limit=32 * MiB))))
    assert (m.dirs["memory"] / "memory.limit_in_bytes").read_text().strip() == str(32 * MiB)
    watcher = m.oom_watcher()
    try:
        assert watcher.read() == 0
        c = Child("b = bytearray(b'x') * (256 << 20)\nprint('survived')")
        children.append(c)
        m.add_pid(c.pid)
        c.go()
        rc, out, _ = c.wait()
        assert rc == -signal.SIGKILL
        assert "survived" not in out
        ready, _, _ = select.select([watcher.fileno()], [], [], 30)
        assert ready, "OOM eventfd did not become readable"
        assert watcher.read() >= 1
        assert watcher.read() == 0  # consumed
        st = m.stats().memory_stats
        # failcnt is what the kernel says (with memsw capped too it may not count here)
        assert st.usage.failcnt == int((m.dirs["memory"] / "memory.failcnt").read_text())
        assert st.usage.limit == 32 * MiB
        assert st.usage.max_usage >= 31 * MiB
        oom_control = (m.dirs["memory"] / "memory.oom_control").read_text()
        assert "oom_kill 1" in oom_control
        m.destroy()
        assert wait_until(lambda: (watcher.read(), watcher.gone)[1])
    finally:
        watcher.close()


def test_pids_limit_stops_forks(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    code = (
        "import os, time\n"
        "n = 0\n"
        "for _ in range(10):\n"
        "    try:\n"
        "        pid = os.fork()\n"
        "    except OSError as e:\n"
        "        print('fork failed', e.errno); break\n"
        "    if pid == 0:\n"
        "        os.closerange(0, 3); time.sleep(100); os._exit(0)\n"
        "    n += 1\n"
        "print('forked', n, flush=True)\n"
    )
    c = Child(code)
    children.append(c)
    m.add_pid(c.pid)
    m.apply(LinuxResources(pids=LinuxPids(limit=4)))
    c.go()
    rc, out, _ = c.wait()
    assert rc == 0
    assert "fork failed 11" in out  # EAGAIN
    assert "forked 3" in out  # the parent plus 3 children reach the limit of 4
    st = m.stats().pids_stats
    assert st == type(st)(current=3, limit=4)
    m.kill_all()
    assert m.pids() == []
    m.apply(LinuxResources(pids=LinuxPids(limit=-1)))
    assert (m.dirs["pids"] / "pids.max").read_text().strip() == "max"


def test_freezer_stops_and_resumes_a_process(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    c = Child("while True: pass")
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert wait_until(lambda: cpu_ticks(c.pid) > 0)
    m.freeze()
    assert m.freezer_state() == "FROZEN"
    before = cpu_ticks(c.pid)
    time.sleep(0.3)
    assert cpu_ticks(c.pid) == before
    m.thaw()
    assert m.freezer_state() == "THAWED"
    assert wait_until(lambda: cpu_ticks(c.pid) > before)


def test_stats_reflect_real_usage(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    code = (
        "import time\n"
        "b = bytearray(b'x') * (40 << 20)\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 0.3: pass\n"
        "print('done', flush=True)\n"
        "time.sleep(100)\n"
    )
    c = Child(code)
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert c.proc.stdout is not None
    assert c.proc.stdout.readline().strip() == "done"
    st = m.stats()
    cpu = st.cpu_stats.cpu_usage
    assert cpu.total_usage >= 250_000_000  # ns
    assert len(cpu.percpu_usage) == os.cpu_count()
    assert sum(cpu.percpu_usage) == pytest.approx(cpu.total_usage, rel=0.05)
    assert cpu.usage_in_usermode + cpu.usage_in_kernelmode > 0
    assert st.memory_stats.usage.usage >= 40 * MiB
    assert st.memory_stats.stats["rss"] >= 40 * MiB
    assert st.memory_stats.use_hierarchy
    assert st.pids_stats.current == 1


def test_cpu_quota_throttles(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    m.apply(
        LinuxResources(cpu=LinuxCPU(shares=256, quota=10_000, period=100_000, cpus="0", mems="0"))
    )
    d = m.dirs["cpu"]
    assert (d / "cpu.cfs_quota_us").read_text().strip() == "10000"
    assert (d / "cpu.cfs_period_us").read_text().strip() == "100000"
    assert (d / "cpu.shares").read_text().strip() == "256"
    assert (m.dirs["cpuset"] / "cpuset.cpus").read_text().strip() == "0"
    c = Child("while True: pass")
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert wait_until(lambda: m.stats().cpu_stats.throttling_data.throttled_periods > 0)
    t = m.stats().cpu_stats.throttling_data
    assert t.periods >= t.throttled_periods > 0
    assert t.throttled_time > 0
    assert os.sched_getaffinity(c.pid) == {0}
    # lowering the period below the quota needs the other order; both orders work
    m.update(LinuxResources(cpu=LinuxCPU(quota=200_000, period=250_000)))
    m.update(LinuxResources(cpu=LinuxCPU(quota=5_000, period=10_000)))
    assert (d / "cpu.cfs_period_us").read_text().strip() == "10000"


def test_memory_update_orders_limit_and_memsw(parent: PurePosixPath) -> None:
    m = make(parent)
    d = m.dirs["memory"]
    if not (d / "memory.memsw.limit_in_bytes").exists():
        pytest.skip("no swap accounting")
    m.apply(LinuxResources(memory=LinuxMemory(limit=64 * MiB, swap=128 * MiB)))
    m.update(LinuxResources(memory=LinuxMemory(limit=256 * MiB, swap=512 * MiB)))  # raise
    assert (d / "memory.memsw.limit_in_bytes").read_text().strip() == str(512 * MiB)
    m.update(LinuxResources(memory=LinuxMemory(limit=16 * MiB, swap=32 * MiB)))  # lower
    assert (d / "memory.limit_in_bytes").read_text().strip() == str(16 * MiB)
    assert (d / "memory.memsw.limit_in_bytes").read_text().strip() == str(32 * MiB)
    m.update(LinuxResources(memory=LinuxMemory(limit=-1)))
    assert int((d / "memory.limit_in_bytes").read_text()) > 1 << 60
    m.update(
        LinuxResources(
            memory=LinuxMemory(reservation=8 * MiB, swappiness=10, disable_oom_killer=True)
        )
    )
    assert (d / "memory.soft_limit_in_bytes").read_text().strip() == str(8 * MiB)
    assert (d / "memory.swappiness").read_text().strip() == "10"
    assert "oom_kill_disable 1" in (d / "memory.oom_control").read_text()


def test_check_before_update_refuses_limit_below_usage(
    parent: PurePosixPath, children: list[Child]
) -> None:
    m = make(parent)
    c = Child(
        "b = bytearray(b'x') * (20 << 20)\nprint('ok', flush=True)\nimport time; time.sleep(100)"
    )
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert c.proc.stdout is not None
    assert c.proc.stdout.readline().strip() == "ok"
    with pytest.raises(CgroupInvalid, match="below the current usage"):
        m.update(LinuxResources(memory=LinuxMemory(limit=4 * MiB, check_before_update=True)))
    assert c.proc.poll() is None  # not OOM-killed: nothing was written


def test_device_rules_are_enforced(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    m.apply(
        LinuxResources(
            devices=(
                LinuxDeviceCgroup(allow=False, access="rwm"),
                LinuxDeviceCgroup(allow=True, type="c", major=1, minor=3, access="rw"),
            )
        )
    )
    assert (m.dirs["devices"] / "devices.list").read_text().split() == ["c", "1:3", "rw"]
    code = (
        "open('/dev/null', 'w').write('x')\n"
        "try:\n"
        "    open('/dev/zero', 'rb')\n"
        "except PermissionError:\n"
        "    print('zero denied')\n"
    )
    c = Child(code)
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    rc, out, err = c.wait()
    assert rc == 0, err
    assert out.strip() == "zero denied"


def test_kill_all_kills_every_process(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    code = (
        "import os, time\n"
        "for _ in range(3):\n"
        "    if os.fork() == 0:\n"
        "        os.fork(); time.sleep(100); os._exit(0)\n"
        "print('forked', flush=True)\n"
        "time.sleep(100)\n"
    )
    c = Child(code)
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    assert c.proc.stdout is not None
    assert c.proc.stdout.readline().strip() == "forked"
    assert wait_until(lambda: len(m.pids()) == 7)
    m.kill_all()
    assert m.pids() == []
    assert m.freezer_state() == "THAWED"
    assert c.proc.wait(timeout=30) == -signal.SIGKILL


def test_kill_all_with_a_catchable_signal(parent: PurePosixPath, children: list[Child]) -> None:
    m = make(parent)
    c = Child("import time; time.sleep(100)")
    children.append(c)
    m.add_pid(c.pid)
    c.go()
    m.kill_all(signal.SIGTERM)
    assert c.proc.wait(timeout=30) == -signal.SIGTERM


def test_invalid_value_names_file_and_errno(parent: PurePosixPath) -> None:
    m = make(parent)
    with pytest.raises(CgroupInvalid) as err:
        m.apply(LinuxResources(cpu=LinuxCPU(cpus="99999")))
    assert "cpuset.cpus" in str(err.value)
    assert str(parent / "c1") in str(err.value)
    assert "ERANGE (Numerical result out of range)" in str(err.value)


def test_unified_refused_on_v1(parent: PurePosixPath) -> None:
    m = make(parent)
    with pytest.raises(CgroupUnsupported, match="needs cgroup v2"):
        m.apply(LinuxResources(unified={"memory.high": "1"}))


def test_missing_controller_is_named(parent: PurePosixPath) -> None:
    m = make(parent)
    if "hugetlb" in m.dirs:
        pytest.skip("hugetlb is mounted as v1 here")
    limits = (LinuxHugepageLimit(page_size="2MB", limit=0),)
    with pytest.raises(CgroupUnsupported, match="hugetlb cgroup controller is not mounted"):
        m.apply(LinuxResources(hugepage_limits=limits))


def test_failed_create_leaves_nothing(parent: PurePosixPath, tmp_path: Path) -> None:
    bad = tmp_path / "not-a-cgroup"
    bad.mkdir()
    bad.chmod(0o500)
    # "zzz" sorts after the real controllers: they are created first, then the bad one fails
    controllers = dict(v1_controllers())
    controllers["zzz"] = Path("/proc/sys")  # mkdir fails there
    m = V1Manager(parent / "a" / "b", controllers=controllers)
    with pytest.raises(Exception, match=r"mkdir /proc/sys/ocispec-test-"):
        m.create()
    assert leftovers(parent.name) == []


def test_add_pid_of_missing_cgroup_is_not_found(parent: PurePosixPath) -> None:
    m = manager_for(str(parent / "never-created"), container_id="x")
    with pytest.raises(CgroupNotFound, match=r"cgroup\.procs: ENOENT"):
        m.add_pid(os.getpid())


def test_destroy_missing_is_noop_and_kill_all_on_missing(parent: PurePosixPath) -> None:
    m = manager_for(str(parent / "gone"), container_id="x")
    m.destroy()
    m.kill_all()
    assert not m.exists()


def test_kata_systemd_form_path(parent: PurePosixPath) -> None:
    m = manager_for(f"{parent.name}.slice:cri-containerd:abc", container_id="abc")
    assert isinstance(m, V1Manager)
    assert m.path == PurePosixPath(f"/{parent.name}.slice/cri-containerd/abc")
    m.create()
    try:
        assert Path(f"/sys/fs/cgroup/memory/{parent.name}.slice/cri-containerd/abc").is_dir()
    finally:
        m.destroy()
        for mount in set(v1_controllers().values()):
            for sub in ("cri-containerd", ""):
                p = mount / f"{parent.name}.slice" / sub
                if p.exists():
                    p.rmdir()
    assert leftovers(f"{parent.name}.slice") == []


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


async def test_oom_watcher_on_an_asyncio_loop_with_oom_killer_disabled(
    parent: PurePosixPath, children: list[Child]
) -> None:
    """With the OOM killer disabled the process stalls under OOM instead of dying; the watcher
    wakes the event loop without blocking it; raising the limit lets the process finish."""
    import asyncio

    m = make(parent)
    m.apply(LinuxResources(memory=no_swap(m, LinuxMemory(limit=32 * MiB, disable_oom_killer=True))))
    watcher = m.oom_watcher()
    loop = asyncio.get_running_loop()
    fired: asyncio.Future[int] = loop.create_future()

    def on_ready() -> None:
        n = watcher.read()
        if n and not fired.done():
            fired.set_result(n)

    loop.add_reader(watcher.fileno(), on_ready)
    try:
        c = Child("b = bytearray(b'x') * (64 << 20)\nprint('finished', flush=True)")
        children.append(c)
        m.add_pid(c.pid)
        c.go()
        assert await asyncio.wait_for(fired, 60) >= 1
        assert "under_oom 1" in (m.dirs["memory"] / "memory.oom_control").read_text()
        assert c.proc.poll() is None  # stalled, not killed
        m.update(LinuxResources(memory=no_swap(m, LinuxMemory(limit=256 * MiB))))
        rc, out, _ = await asyncio.to_thread(c.wait)
        assert (rc, out.strip()) == (0, "finished")
    finally:
        loop.remove_reader(watcher.fileno())
        watcher.close()


def test_oom_watcher_failure_leaks_no_fd(parent: PurePosixPath) -> None:
    m = manager_for(str(parent / "never-created"), container_id="x")
    before = open_fds()
    with pytest.raises(CgroupNotFound, match=r"memory\.oom_control: ENOENT"):
        m.oom_watcher()
    assert open_fds() == before


def test_watcher_close_releases_fds(parent: PurePosixPath) -> None:
    m = make(parent)
    before = open_fds()
    w = m.oom_watcher()
    assert len(open_fds() - before) == 2
    w.close()
    w.close()  # idempotent
    assert open_fds() == before


def test_more_cpu_and_memory_knobs(parent: PurePosixPath, caplog: pytest.LogCaptureFixture) -> None:
    m = make(parent)
    cpu, mem = m.dirs["cpu"], m.dirs["memory"]
    resources = LinuxResources(
        cpu=LinuxCPU(quota=50_000, period=100_000, burst=20_000, idle=1),
        memory=LinuxMemory(kernel_tcp=64 * MiB, kernel=64 * MiB, use_hierarchy=True),
    )
    m.apply(resources)
    assert (cpu / "cpu.cfs_burst_us").read_text().strip() == "20000"
    assert (cpu / "cpu.idle").read_text().strip() == "1"
    assert (mem / "memory.kmem.tcp.limit_in_bytes").read_text().strip() == str(64 * MiB)
    assert (mem / "memory.use_hierarchy").read_text().strip() == "1"
    # memory.kmem.limit_in_bytes is deprecated: refused or ignored, never an error
    if "memory.kernel ignored" not in caplog.text:
        assert (mem / "memory.kmem.limit_in_bytes").exists()


def test_cpuset_parent_created_but_not_filled_by_another_container(
    parent: PurePosixPath, children: list[Child]
) -> None:
    """Two containers sharing a new parent race: one has just made the parent's cpuset dir and
    not yet filled in cpus/mems; the other must fill it, else joining fails with ENOSPC."""
    probe = manager_for(str(parent / "probe"), container_id="probe")
    assert isinstance(probe, V1Manager)
    if "cpuset" not in probe.dirs:
        pytest.skip("no v1 cpuset hierarchy on this host")
    shared = probe.dirs["cpuset"].parent / "shared"
    shared.mkdir(parents=True)  # as the other container left it: cpus and mems still empty
    assert (shared / "cpuset.cpus").read_text().strip() == ""
    m = make(parent, "shared/c2")
    c = Child("import time; time.sleep(100)")
    children.append(c)
    m.add_pid(c.pid)  # ENOSPC before the fix
    assert m.procs_in("cpuset") == [c.pid]
    assert (shared / "cpuset.cpus").read_text().strip() != ""
    c.kill()
    m.destroy()
    os.rmdir(shared)
