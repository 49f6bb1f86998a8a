"""HardwareService against a fake sysfs tree: CPU/memory onlining, probe, volume stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.devices.handlers import DeviceManager
from agent.devices.lookup import DeviceLookup
from agent.devices.uevent import UeventListener
from agent.errors import Internal, InvalidArgument, NotFound, Unimplemented
from agent.services import hardware
from agent.services.hardware import HardwareService
from agent.storage import StorageManager
from agent.storage.env import StorageEnv
from agent.storage.paths import StorageRoots
from oci.syscalls.fake import RecordingSyscalls


@dataclass
class _Res:
    returncode: int = 0
    stdout: bytes = b""
    stderr: bytes = b""


class Runner:
    def __init__(self, rc: int = 0) -> None:
        self.rc = rc
        self.calls: list[list[str]] = []

    async def __call__(self, argv: Sequence[str], *, timeout: float) -> _Res:  # noqa: ASYNC109
        self.calls.append(list(argv))
        return _Res(self.rc, b"", b"swapon: /x: read swap header failed")


def make(tmp_path: Path, runner: Runner | None = None) -> HardwareService:
    sysfs = tmp_path / "sys"
    sysfs.mkdir(exist_ok=True)
    ul = UeventListener(hotplug_timeout=0.01, sysfs=sysfs)
    look = DeviceLookup(ul, sysfs=sysfs)
    run = runner or Runner()
    env = StorageEnv(
        roots=StorageRoots(tmp_path / "run"),
        sys=RecordingSyscalls(),
        run=run,
        devices=look,
        sysfs=sysfs,
    )
    return HardwareService(
        uevents=ul,
        lookup=look,
        storage=StorageManager(env),
        devices=DeviceManager(look),
        run=run,
        sysfs=sysfs,
        cgroup_root=tmp_path / "cgroup",
    )


def cpus(tmp_path: Path, states: list[str | None]) -> Path:
    base = tmp_path / "sys/devices/system/cpu"
    for i, st in enumerate(states):
        d = base / f"cpu{i}"
        d.mkdir(parents=True)
        if st is not None:
            (d / "online").write_text(st + "\n")
    (base / "cpufreq").mkdir()
    return base


def mem(tmp_path: Path, states: list[str]) -> Path:
    base = tmp_path / "sys/devices/system/memory"
    base.mkdir(parents=True, exist_ok=True)
    for i, st in enumerate(states):
        (base / f"memory{i}").mkdir(parents=True)
        (base / f"memory{i}" / "online").write_text(st + "\n")
    (base / "probe").write_text("")
    return base


async def test_online_cpus_and_memory(tmp_path: Path) -> None:
    base = cpus(tmp_path, [None, "1", "0", "0", "0"])
    mbase = mem(tmp_path, ["1", "0", "0"])
    hw = make(tmp_path)
    called = []

    async def cpuset() -> None:
        called.append(True)

    hw.set_cpuset_updater(cpuset)
    await hw.online_cpu_mem(2, cpu_only=False)
    assert [(base / f"cpu{i}/online").read_text().strip() for i in (2, 3, 4)] == ["1", "1", "0"]
    assert [(mbase / f"memory{i}/online").read_text().strip() for i in range(3)] == ["1"] * 3
    assert called == [True]


async def test_online_cpu_only_leaves_memory(tmp_path: Path) -> None:
    cpus(tmp_path, [None, "0"])
    mbase = mem(tmp_path, ["0"])
    await make(tmp_path).online_cpu_mem(1, cpu_only=True)
    assert (mbase / "memory0/online").read_text().strip() == "0"


async def test_online_cpus_gives_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cpus(tmp_path, [None, "0"])
    monkeypatch.setattr(hardware, "ONLINE_RETRY_DELAY", 0.0)
    with pytest.raises(Internal, match="online 3 CPUs: only 1 came online after 100 tries"):
        await make(tmp_path).online_cpu_mem(3, cpu_only=True)


async def test_mem_hotplug_probe(tmp_path: Path) -> None:
    mbase = mem(tmp_path, [])
    await make(tmp_path).mem_hotplug_by_probe([0x140000000])
    assert (mbase / "probe").read_text() == "0x140000000"


async def test_swap(tmp_path: Path) -> None:
    runner = Runner(rc=255)
    hw = make(tmp_path, runner)
    swapfile = tmp_path / "swap"
    swapfile.write_text("")
    with pytest.raises(Internal, match=r"swapon .* exited with 255: swapon: /x: read swap header"):
        await hw.add_swap_path(str(swapfile))
    assert runner.calls == [["swapon", str(swapfile)]]
    with pytest.raises(NotFound):
        await hw.add_swap_path(str(tmp_path / "none"))
    with pytest.raises(InvalidArgument, match="invalid PCI path"):
        await hw.add_swap([])


async def test_volume_stats(tmp_path: Path) -> None:
    st = await make(tmp_path).volume_stats(str(tmp_path))
    assert st.bytes.total >= st.bytes.available
    assert st.inodes.total >= st.inodes.used


async def test_set_policy_unimplemented(tmp_path: Path) -> None:
    with pytest.raises(Unimplemented):
        await make(tmp_path).set_policy("package agent_policy")


def test_unlimited_inodes_are_reported_as_zero() -> None:
    assert hardware._inodes(-1, -1) == hardware.VolumeUsage(0, 0, 0)
    assert hardware._inodes(100, 30) == hardware.VolumeUsage(total=100, used=70, available=30)


def test_widen_v1_cpusets(tmp_path: Path) -> None:
    root = tmp_path / "cpuset"
    for d, cpus in (("", "0"), ("kata", "0"), ("kata/c1", "0"), ("pinned", "0"), ("other", "0")):
        (root / d).mkdir(parents=True, exist_ok=True)
        (root / d / "cpuset.cpus").write_text(cpus + "\n")
    (root / "pinned" / "cpuset.cpus").write_text("1\n")
    assert hardware.widen_v1_cpusets(root, "0", "0-1") == 4
    assert (root / "kata/c1/cpuset.cpus").read_text() == "0-1"
    assert (root / "pinned/cpuset.cpus").read_text() == "1\n"
    assert hardware.widen_v1_cpusets(root, "0-1", "0-1") == 0
    assert hardware.widen_v1_cpusets(tmp_path / "none", "0", "0-1") == 0


async def test_online_cpus_widens_cpusets_without_updater(tmp_path: Path) -> None:
    base = cpus(tmp_path, [None, "0"])
    (base / "online").write_text("0\n")
    cg = tmp_path / "cgroup" / "cpuset"
    (cg / "c1").mkdir(parents=True)
    (cg / "cpuset.cpus").write_text("0\n")
    (cg / "c1" / "cpuset.cpus").write_text("0\n")
    hw = make(tmp_path)

    real = hw._online_some

    def online_and_update(b: Path, pattern: str, limit: int | None) -> int:
        n = real(b, pattern, limit)
        if n:
            (base / "online").write_text("0-1\n")  # what the kernel reports afterwards
        return n

    hw._online_some = online_and_update  # type: ignore[method-assign,assignment]
    await hw.online_cpu_mem(1, cpu_only=True)
    assert (cg / "c1" / "cpuset.cpus").read_text() == "0-1"
