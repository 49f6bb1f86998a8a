"""oci.cgroups without root: path semantics, stats parsers, v1/v2 resource translation
(the writes are recorded, the files read for current values live in a temp dir)."""

from __future__ import annotations

import logging
from pathlib import Path, PurePosixPath

import pytest

from oci.cgroups import (
    CgroupBusy,
    CgroupInvalid,
    CgroupMode,
    CgroupNotFound,
    CgroupUnsupported,
    V1Manager,
    V2Manager,
    _base,
    detect_mode,
    fs,
    manager_for,
    resolve_cgroups_path,
    stats,
    v1,
    v1_controllers,
    v2,
)
from oci.spec import (
    LinuxBlockIO,
    LinuxCPU,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxMemory,
    LinuxPids,
    LinuxRdma,
    LinuxResources,
    LinuxThrottleDevice,
    LinuxWeightDevice,
)


@pytest.mark.parametrize(
    ("cgroups_path", "cid", "expected"),
    [
        (None, "c1", "/c1"),
        ("", "c1", "/c1"),
        ("/kata/c1", "x", "/kata/c1"),
        ("kata/c1", "x", "/kata/c1"),
        ("//a//b/", "x", "/a/b"),
        (
            "kubepods-burstable-pod12.slice:cri-containerd:abc",
            "x",
            "/kubepods-burstable-pod12.slice/cri-containerd/abc",
        ),
        ("system.slice:docker:", "x", "/system.slice/docker"),
        ("a:b", "x", "/a:b"),  # not the three-part form: a plain name
    ],
)
def test_resolve_cgroups_path(cgroups_path: str | None, cid: str, expected: str) -> None:
    assert resolve_cgroups_path(cgroups_path, cid) == PurePosixPath(expected)


@pytest.mark.parametrize(
    ("cgroups_path", "cid", "message"),
    [
        ("/a/../b", "x", "must not contain '..'"),
        ("a:..:b", "x", "must not contain '..'"),
        ("/", "x", "names the root cgroup"),
        (None, "a/b", "invalid container id"),
        (None, "..", "invalid container id"),
    ],
)
def test_resolve_cgroups_path_rejects(cgroups_path: str | None, cid: str, message: str) -> None:
    with pytest.raises(CgroupInvalid, match=message):
        resolve_cgroups_path(cgroups_path, cid)


def test_detect_mode_and_v1_controllers(tmp_path: Path) -> None:
    assert detect_mode(tmp_path) is CgroupMode.V1
    for name in ("cpu,cpuacct", "memory", "unified", "systemd", "notacgroup"):
        (tmp_path / name).mkdir()
    for name in ("cpu,cpuacct", "memory", "unified", "systemd"):
        (tmp_path / name / "cgroup.procs").touch()
    (tmp_path / "cpu").symlink_to("cpu,cpuacct")
    ctrls = v1_controllers(tmp_path)
    root = tmp_path.resolve()
    assert ctrls == {
        "cpu": root / "cpu,cpuacct",
        "cpuacct": root / "cpu,cpuacct",
        "memory": root / "memory",
    }
    m1 = V1Manager(PurePosixPath("/k/c"), root=tmp_path)
    assert m1._unique_dirs() == [root / "cpu,cpuacct/k/c", root / "memory/k/c"]
    m = manager_for("/k/c", container_id="c", root=tmp_path)
    assert isinstance(m, V1Manager)
    (tmp_path / "cgroup.controllers").touch()
    assert detect_mode(tmp_path) is CgroupMode.V2
    assert isinstance(manager_for("", container_id="c", root=tmp_path), V2Manager)
    assert isinstance(
        manager_for("", container_id="c", root=tmp_path, mode=CgroupMode.V1), V1Manager
    )


# --- parsers -----------------------------------------------------------------------------------


def test_cpu_stats_v1() -> None:
    st = stats.cpu_stats_v1(
        usage="3000000000\n",
        percpu="1000000000 2000000000 \n",
        cpuacct_stat="user 150\nsystem 50\n",
        cpu_stat="nr_periods 10\nnr_throttled 4\nthrottled_time 123456\n",
    )
    assert st.cpu_usage == stats.CpuUsage(
        total_usage=3_000_000_000,
        percpu_usage=(1_000_000_000, 2_000_000_000),
        usage_in_kernelmode=500_000_000,
        usage_in_usermode=1_500_000_000,
    )
    assert st.throttling_data == stats.ThrottlingData(
        periods=10, throttled_periods=4, throttled_time=123456
    )
    assert stats.cpu_stats_v1(usage="", percpu="", cpuacct_stat="", cpu_stat="") == stats.CpuStats()


def test_cpu_stats_v2() -> None:
    st = stats.cpu_stats_v2(
        "usage_usec 2000\nuser_usec 1500\nsystem_usec 500\n"
        "nr_periods 7\nnr_throttled 3\nthrottled_usec 42\n"
    )
    assert st.cpu_usage == stats.CpuUsage(
        total_usage=2_000_000, usage_in_usermode=1_500_000, usage_in_kernelmode=500_000
    )
    assert st.throttling_data == stats.ThrottlingData(
        periods=7, throttled_periods=3, throttled_time=42_000
    )


def test_parse_blkio_v1() -> None:
    text = "8:0 Read 4096\n8:0 Write 8192\n8:0 Total 12288\n8:16 Read 1\nTotal 12289\n"
    entries = stats.parse_blkio_v1(text)
    assert entries[0] == stats.BlkioStatsEntry(major=8, minor=0, op="Read", value=4096)
    assert len(entries) == 4
    assert stats.parse_blkio_v1("8:0 77\n") == (
        stats.BlkioStatsEntry(major=8, minor=0, op="", value=77),
    )


def test_parse_io_stat_v2() -> None:
    st = stats.parse_io_stat_v2("8:0 rbytes=10 wbytes=20 rios=1 wios=2 dbytes=0 dios=0\n")
    assert stats.BlkioStatsEntry(major=8, minor=0, op="Read", value=10) in (
        st.io_service_bytes_recursive
    )
    assert stats.BlkioStatsEntry(major=8, minor=0, op="Write", value=2) in st.io_serviced_recursive
    assert stats.parse_io_stat_v2("") == stats.BlkioStats()


@pytest.mark.parametrize(
    ("kb", "name"), [(64, "64KB"), (2048, "2MB"), (1048576, "1GB"), (3072, "3MB"), (1000, "1000KB")]
)
def test_page_size_name(kb: int, name: str) -> None:
    assert stats.page_size_name(kb) == name


@pytest.mark.parametrize(("shares", "weight"), [(0, 0), (2, 1), (1024, 39), (262144, 10000)])
def test_shares_to_weight(shares: int, weight: int) -> None:
    assert _base.shares_to_weight(shares) == weight


@pytest.mark.parametrize(("w", "iow"), [(0, 0), (10, 1), (500, 4950), (1000, 10000)])
def test_blkio_weight_to_io_weight(w: int, iow: int) -> None:
    assert _base.blkio_weight_to_io_weight(w) == iow


def test_swap_to_v2() -> None:
    assert v2.swap_to_v2(-1, 100) == "max"
    assert v2.swap_to_v2(300, 100) == "200"
    with pytest.raises(CgroupInvalid, match="lower than the memory limit"):
        v2.swap_to_v2(50, 100)
    with pytest.raises(CgroupInvalid, match="needs a memory limit"):
        v2.swap_to_v2(50, None)


def test_read_helpers(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("max\n")
    assert fs.read_int(tmp_path / "f") == 0
    (tmp_path / "f").write_text("junk\n")
    with pytest.raises(Exception, match="unexpected content 'junk'"):
        fs.read_int(tmp_path / "f")
    with pytest.raises(CgroupNotFound, match=r"read .*/nope: ENOENT \(No such file or directory\)"):
        fs.read_text(tmp_path / "nope")


# --- resource translation --------------------------------------------------------------------


Writes = list[tuple[str, str]]


@pytest.fixture
def writes(monkeypatch: pytest.MonkeyPatch) -> Writes:
    recorded: Writes = []

    def record(path: Path, value: str | int) -> None:
        if not path.parent.exists():
            raise CgroupNotFound(f"write {value} to {path}: ENOENT")
        recorded.append((path.name, str(value)))

    monkeypatch.setattr(v1, "write", record)
    monkeypatch.setattr(v2, "write", record)
    return recorded


def v2_leaf(tmp_path: Path, **files: str) -> V2Manager:
    leaf = tmp_path / "pod" / "c1"
    leaf.mkdir(parents=True)
    for name in (
        "cpu.weight",
        "cpu.max",
        "cpu.max.burst",
        "cpu.idle",
        "cpuset.cpus",
        "cpuset.mems",
        "memory.max",
        "memory.low",
        "memory.swap.max",
        "memory.current",
        "pids.max",
        "io.weight",
        "io.max",
        "hugetlb.2MB.max",
        "memory.high",
    ):
        (leaf / name).write_text(files.get(name.replace(".", "_"), ""))
    return V2Manager(PurePosixPath("/pod/c1"), root=tmp_path)


def test_v2_translation(tmp_path: Path, writes: Writes, caplog: pytest.LogCaptureFixture) -> None:
    m = v2_leaf(tmp_path, cpu_max="max 100000\n", memory_current="1000\n")
    m.apply(
        LinuxResources(
            cpu=LinuxCPU(shares=1024, quota=50000, period=100000, burst=10, cpus="0-1", mems="0"),
            memory=LinuxMemory(
                limit=1 << 30, swap=(1 << 30) + 4096, reservation=1 << 20, swappiness=5
            ),
            pids=LinuxPids(limit=-1),
            block_io=LinuxBlockIO(
                weight=500,
                throttle_read_bps_device=(LinuxThrottleDevice(major=8, minor=0, rate=100),),
                throttle_write_iops_device=(LinuxThrottleDevice(major=8, minor=0, rate=0),),
                weight_device=(LinuxWeightDevice(major=8, minor=0, weight=10),),
            ),
            hugepage_limits=(LinuxHugepageLimit(page_size="2MB", limit=4 << 20),),
            unified={"memory.high": "12345"},
        )
    )
    assert writes == [
        ("cpu.weight", "39"),
        ("cpu.max", "50000 100000"),
        ("cpu.max.burst", "10"),
        ("cpuset.cpus", "0-1"),
        ("cpuset.mems", "0"),
        ("memory.swap.max", "4096"),
        ("memory.max", str(1 << 30)),
        ("memory.low", str(1 << 20)),
        ("pids.max", "max"),
        ("io.weight", "default 4950"),
        ("io.weight", "8:0 1"),
        ("io.max", "8:0 rbps=100"),
        ("io.max", "8:0 wiops=max"),
        ("hugetlb.2MB.max", str(4 << 20)),
        ("memory.high", "12345"),
    ]
    assert "memory.swappiness" in caplog.text


def test_v2_quota_alone_keeps_period(tmp_path: Path, writes: Writes) -> None:
    m = v2_leaf(tmp_path, cpu_max="max 250000\n")
    m.apply(LinuxResources(cpu=LinuxCPU(quota=-1)))
    m.apply(LinuxResources(cpu=LinuxCPU(period=50000)))
    assert writes == [("cpu.max", "max 250000"), ("cpu.max", "max 50000")]


def test_v2_errors(tmp_path: Path, writes: Writes) -> None:
    m = v2_leaf(tmp_path, memory_current="5000\n")
    with pytest.raises(CgroupInvalid, match="below the current usage 5000"):
        m.apply(LinuxResources(memory=LinuxMemory(limit=4096, check_before_update=True)))
    with pytest.raises(CgroupUnsupported, match="realtime"):
        m.apply(LinuxResources(cpu=LinuxCPU(realtime_runtime=1)))
    rdma = {"mlx5": LinuxRdma(hca_handles=1)}
    with pytest.raises(CgroupUnsupported, match=r"rdma\.max does not exist"):
        m.apply(LinuxResources(rdma=rdma))
    with pytest.raises(CgroupNotFound, match=r"unified\.memory\.nope"):
        m.apply(LinuxResources(unified={"memory.nope": "1"}))
    with pytest.raises(CgroupInvalid, match="invalid interface file name"):
        m.apply(LinuxResources(unified={"../x": "1"}))
    assert writes == []


def v1_fake(tmp_path: Path, **files: str) -> V1Manager:
    mounts = {}
    for ctrl in ("cpu", "cpuset", "memory", "pids", "blkio", "devices", "freezer"):
        d = tmp_path / ctrl / "c1"
        d.mkdir(parents=True)
        mounts[ctrl] = tmp_path / ctrl
    for key, content in files.items():
        ctrl, name = key.split("__")
        (tmp_path / ctrl / "c1" / name.replace("_", ".", 1)).write_text(content)
    return V1Manager(PurePosixPath("/c1"), root=tmp_path, controllers=mounts)


def test_v1_memory_raise_writes_memsw_first(tmp_path: Path, writes: Writes) -> None:
    m = v1_fake(
        tmp_path,
        memory__memory_limit_in_bytes="1000\n",
        memory__memory_memsw_limit_in_bytes="2000\n",
    )
    (tmp_path / "memory/c1/memory.memsw.limit_in_bytes").write_text("2000\n")
    m.apply(LinuxResources(memory=LinuxMemory(limit=5000, swap=9000)))
    assert writes == [("memory.memsw.limit_in_bytes", "9000"), ("memory.limit_in_bytes", "5000")]
    writes.clear()
    m.apply(LinuxResources(memory=LinuxMemory(limit=500, swap=900)))
    assert writes == [("memory.limit_in_bytes", "500"), ("memory.memsw.limit_in_bytes", "900")]
    writes.clear()
    m.apply(LinuxResources(memory=LinuxMemory(limit=-1)))
    assert writes == [("memory.memsw.limit_in_bytes", "-1"), ("memory.limit_in_bytes", "-1")]


def test_v1_swap_without_accounting(tmp_path: Path, writes: Writes) -> None:
    m = v1_fake(tmp_path, memory__memory_limit_in_bytes="1000\n")
    with pytest.raises(CgroupUnsupported, match="swap accounting is off"):
        m.apply(LinuxResources(memory=LinuxMemory(limit=5000, swap=9000)))


def test_v1_devices_and_blkio(tmp_path: Path, writes: Writes) -> None:
    m = v1_fake(tmp_path)
    (tmp_path / "blkio/c1/blkio.bfq.weight").touch()
    (tmp_path / "blkio/c1/blkio.bfq.weight_device").touch()
    m.apply(
        LinuxResources(
            devices=(
                LinuxDeviceCgroup(allow=False, access="rwm"),
                LinuxDeviceCgroup(allow=True, type="c", major=1, minor=3, access="rw"),
                LinuxDeviceCgroup(allow=True, type="b", major=8, access="r"),
            ),
            block_io=LinuxBlockIO(
                weight=300,
                weight_device=(LinuxWeightDevice(major=8, minor=0, weight=100),),
                throttle_read_iops_device=(LinuxThrottleDevice(major=8, minor=0, rate=5),),
            ),
            pids=LinuxPids(limit=10),
        )
    )
    assert writes == [
        ("pids.max", "10"),
        ("blkio.bfq.weight", "300"),
        ("blkio.bfq.weight_device", "8:0 100"),
        ("blkio.throttle.read_iops_device", "8:0 5"),
        ("devices.deny", "a"),
        ("devices.allow", "c 1:3 rw"),
        ("devices.allow", "b 8:* r"),
    ]


def test_v1_blkio_without_scheduler_is_named(tmp_path: Path, writes: Writes) -> None:
    m = v1_fake(tmp_path)
    with pytest.raises(CgroupUnsupported, match=r"neither blkio\.weight nor blkio\.bfq\.weight"):
        m.apply(LinuxResources(block_io=LinuxBlockIO(weight=300)))


def test_v1_cpu_period_quota_retry_order(
    tmp_path: Path, writes: Writes, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = v1_fake(tmp_path)
    calls: Writes = []

    def picky(path: Path, value: str | int) -> None:
        calls.append((path.name, str(value)))
        if path.name == "cfs_period_us" or (path.name == "cpu.cfs_period_us" and len(calls) == 1):
            raise CgroupInvalid("EINVAL")

    monkeypatch.setattr(v1, "write", picky)
    m.apply(LinuxResources(cpu=LinuxCPU(quota=1000, period=2000)))
    assert calls == [
        ("cpu.cfs_period_us", "2000"),
        ("cpu.cfs_quota_us", "1000"),
        ("cpu.cfs_period_us", "2000"),
    ]


def test_v1_freeze_timeout_thaws_and_says_so(
    tmp_path: Path, writes: Writes, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = v1_fake(tmp_path)
    monkeypatch.setattr(v1, "read_text", lambda path: "FREEZING\n")
    with pytest.raises(CgroupBusy, match=r"freeze .*/freezer/c1: still FREEZING after 0\.05s"):
        m.freeze(timeout=0.05)
    assert writes[0] == ("freezer.state", "FROZEN")
    assert writes[-1] == ("freezer.state", "THAWED")


def test_v1_kill_all_without_freezing_when_freeze_times_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = v1_fake(tmp_path)
    (tmp_path / "freezer/c1/cgroup.procs").write_text("")
    events: list[str] = []

    def stuck(*, timeout: float) -> None:
        events.append("freeze")
        raise CgroupBusy("still FREEZING")

    monkeypatch.setattr(m, "freeze", stuck)
    monkeypatch.setattr(m, "thaw", lambda: events.append("thaw"))
    monkeypatch.setattr(v1, "signal_all", lambda pids, sig: events.append(f"kill {pids}"))
    m.kill_all(timeout=0.1)
    assert events == ["freeze", "kill []"]  # no thaw: it never froze


def test_v2_freeze_timeout_thaws_and_says_so(
    tmp_path: Path, writes: Writes, monkeypatch: pytest.MonkeyPatch
) -> None:
    m = v2_leaf(tmp_path)
    closed: list[bool] = []

    class NeverFrozen:
        def __init__(self, path: Path) -> None:
            pass

        def read_text(self) -> str:
            return "populated 1\nfrozen 0\n"

        def wait(self, timeout: float) -> bool:
            return False

        def close(self) -> None:
            closed.append(True)

    monkeypatch.setattr(v2, "FileChangeWatcher", NeverFrozen)
    with pytest.raises(CgroupBusy, match=r"freeze .*/pod/c1: not settled after 0\.05s"):
        m.freeze(timeout=0.05)
    assert writes == [("cgroup.freeze", "1"), ("cgroup.freeze", "0")]
    assert closed == [True]


def test_v1_rarely_used_controllers(tmp_path: Path, writes: Writes) -> None:
    from oci.spec import LinuxInterfacePriority, LinuxNetwork

    m = v1_fake(tmp_path)
    for ctrl in ("hugetlb", "net_cls", "net_prio", "rdma"):
        (tmp_path / ctrl / "c1").mkdir(parents=True)
        m.dirs[ctrl] = tmp_path / ctrl / "c1"
    (tmp_path / "blkio/c1/blkio.leaf_weight").touch()
    (tmp_path / "blkio/c1/blkio.leaf_weight_device").touch()
    m.apply(
        LinuxResources(
            cpu=LinuxCPU(realtime_period=1_000_000, realtime_runtime=950_000),
            block_io=LinuxBlockIO(
                leaf_weight=200,
                weight_device=(LinuxWeightDevice(major=8, minor=0, leaf_weight=50),),
            ),
            hugepage_limits=(LinuxHugepageLimit(page_size="1GB", limit=1 << 30),),
            network=LinuxNetwork(
                class_id=0x10001, priorities=(LinuxInterfacePriority(name="eth0", priority=3),)
            ),
            rdma={"mlx5_0": LinuxRdma(hca_handles=2, hca_objects=100)},
        )
    )
    assert writes == [
        ("cpu.rt_period_us", "1000000"),
        ("cpu.rt_runtime_us", "950000"),
        ("blkio.leaf_weight", "200"),
        ("blkio.leaf_weight_device", "8:0 50"),
        ("hugetlb.1GB.limit_in_bytes", str(1 << 30)),
        ("net_cls.classid", str(0x10001)),
        ("net_prio.ifpriomap", "eth0 3"),
        ("rdma.max", "mlx5_0 hca_handle=2 hca_object=100"),
    ]


def test_v1_clamped_shares_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    m = v1_fake(tmp_path)
    monkeypatch.setattr(v1, "write", lambda path, value: None)
    (tmp_path / "cpu/c1/cpu.shares").write_text("262144\n")
    with pytest.raises(CgroupInvalid, match="the kernel clamped 999999 to 262144"):
        m.apply(LinuxResources(cpu=LinuxCPU(shares=999999)))


def test_v2_enables_controllers_down_to_the_parent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: Writes = []
    monkeypatch.setattr(v2, "write", lambda path, value: calls.append((str(path), str(value))))
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    (tmp_path / "cgroup.subtree_control").write_text("cpu\n")
    (tmp_path / "kubepods").mkdir()
    (tmp_path / "kubepods/cgroup.controllers").write_text("cpu memory\n")
    (tmp_path / "kubepods/cgroup.subtree_control").write_text("")
    m = V2Manager(PurePosixPath("/kubepods/c1"), root=tmp_path)
    m.create()
    assert (tmp_path / "kubepods/c1").is_dir()
    assert calls == [
        (f"{tmp_path}/cgroup.subtree_control", "+memory"),
        (f"{tmp_path}/cgroup.subtree_control", "+pids"),
        (f"{tmp_path}/kubepods/cgroup.subtree_control", "+cpu"),
        (f"{tmp_path}/kubepods/cgroup.subtree_control", "+memory"),
    ]


def test_v2_enable_failure_is_logged_not_fatal(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def busy(path: Path, value: str | int) -> None:
        raise CgroupBusy(f"write {value} to {path}: EBUSY")

    monkeypatch.setattr(v2, "write", busy)
    (tmp_path / "cgroup.controllers").write_text("io\n")
    (tmp_path / "cgroup.subtree_control").write_text("")
    V2Manager(PurePosixPath("/c1"), root=tmp_path).create()
    assert "cannot enable the io controller" in caplog.text


def test_v2_stats_from_files(tmp_path: Path) -> None:
    m = v2_leaf(tmp_path)
    d = m.dir
    files = {
        "cpu.stat": "usage_usec 10\nuser_usec 6\nsystem_usec 4\n",
        "memory.current": "4096\n",
        "memory.peak": "8192\n",
        "memory.max": "max\n",
        "memory.events": "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        "memory.stat": "anon 1024\nfile 2048\nkernel 512\n",
        "memory.swap.current": "100\n",
        "memory.swap.max": "1000\n",
        "pids.current": "2\n",
        "pids.max": "max\n",
        "io.stat": "8:0 rbytes=1 wbytes=2 rios=3 wios=4\n",
        "hugetlb.2MB.current": "0\n",
        "hugetlb.2MB.events": "max 5\n",
        "hugetlb.2MB.max": "max\n",
    }
    for name, text in files.items():
        (d / name).write_text(text)
    st = m.stats()
    assert st.cpu_stats.cpu_usage.total_usage == 10_000
    mem = st.memory_stats
    assert mem.usage == stats.MemoryData(usage=4096, max_usage=8192, failcnt=3, limit=0)
    assert mem.swap_usage.usage == 4196
    assert mem.swap_usage.limit == 1000
    assert mem.cache == 2048
    assert mem.kernel_usage.usage == 512
    assert mem.stats["anon"] == 1024
    assert st.pids_stats == stats.PidsStats(current=2, limit=0)
    assert len(st.blkio_stats.io_service_bytes_recursive) == 2
    assert st.hugetlb_stats == {"2MB": stats.HugetlbStats(usage=0, max_usage=0, failcnt=5)}


def test_v2_ignored_fields_are_logged(
    tmp_path: Path, writes: Writes, caplog: pytest.LogCaptureFixture
) -> None:
    from oci.spec import LinuxNetwork

    caplog.set_level(logging.INFO, logger="oci.cgroups")
    m = v2_leaf(tmp_path)
    (m.dir / "io.bfq.weight").write_text("")
    m.apply(
        LinuxResources(
            memory=LinuxMemory(kernel=1, disable_oom_killer=True),
            network=LinuxNetwork(class_id=1),
            block_io=LinuxBlockIO(weight=100, leaf_weight=100),
            devices=(LinuxDeviceCgroup(allow=False, access="rwm"),),
            cpu=LinuxCPU(idle=1),
        )
    )
    assert ("io.bfq.weight", "100") in writes  # bfq takes the v1 scale as is
    assert ("cpu.idle", "1") in writes
    for what in (
        "memory.kernel/kernelTCP",
        "memory.disableOOMKiller",
        "network (net_cls/net_prio)",
        "blockIO leaf weights",
    ):
        assert what in caplog.text
    assert "device cgroup rules are not enforced on cgroup v2" in caplog.text


def test_v1_refresh_cpuset_writes_the_chain_parents_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    top = tmp_path / "cpuset"
    (top / "pod" / "c1").mkdir(parents=True)
    (top / "cpuset.cpus").write_text("0-3\n")
    for d in (top / "pod", top / "pod" / "c1"):
        (d / "cpuset.cpus").write_text("0\n")
    written: list[tuple[str, str]] = []
    monkeypatch.setattr(
        v1, "write", lambda path, value: written.append((str(path.relative_to(top)), value))
    )
    m = V1Manager(PurePosixPath("/pod/c1"), root=tmp_path, controllers={"cpuset": top})
    m.refresh_cpuset(None)
    assert written == [("pod/cpuset.cpus", "0-3"), ("pod/c1/cpuset.cpus", "0-3")]
    written.clear()
    m.refresh_cpuset("2")
    assert written == [("pod/cpuset.cpus", "0-3"), ("pod/c1/cpuset.cpus", "2")]
    written.clear()
    # no cpuset hierarchy, or the cgroup is gone: nothing to do
    V1Manager(PurePosixPath("/pod/c1"), root=tmp_path, controllers={}).refresh_cpuset(None)
    V1Manager(PurePosixPath("/gone"), root=tmp_path, controllers={"cpuset": top}).refresh_cpuset(
        None
    )
    assert written == []


def test_v2_refresh_cpuset_rewrites_only_an_own_list(tmp_path: Path, writes: Writes) -> None:
    m = v2_leaf(tmp_path)
    m.refresh_cpuset(None)
    assert writes == []
    m.refresh_cpuset("0-1")
    assert writes == [("cpuset.cpus", "0-1")]


@pytest.mark.parametrize(
    ("name", "text", "frozen"),
    [
        ("freezer.state", "FROZEN\n", True),
        ("freezer.state", "FREEZING\n", False),
        ("freezer.state", "THAWED\n", False),
        ("cgroup.events", "populated 1\nfrozen 1\n", True),
        ("cgroup.events", "populated 1\nfrozen 0\n", False),
    ],
)
def test_frozen_from_the_freezer_file_alone(
    tmp_path: Path, name: str, text: str, frozen: bool
) -> None:
    from oci.cgroups import frozen as is_frozen

    f = tmp_path / name
    f.write_text(text)
    assert is_frozen(str(f)) is frozen
    assert is_frozen(str(tmp_path / "gone" / name)) is False
    assert is_frozen("") is False
