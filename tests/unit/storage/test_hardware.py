"""HardwareService against a fake sysfs tree: CPU/memory onlining, probe, volume stats."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest

from agent.devices.handlers import DeviceManager
from agent.devices.lookup import DeviceLookup
from agent.devices.uevent import UeventListener
from agent.errors import FailedPrecondition, Internal, InvalidArgument, NotFound
from agent.services import hardware
from agent.services.hardware import HardwareService
from agent.storage import StorageManager
from agent.storage.env import StorageEnv
from agent.storage.model import Storage
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

    async def __call__(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float,  # noqa: ASYNC109
    ) -> _Res:
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
    )


def cpus(tmp_path: Path, states: list[str | None], possible: int | None = None) -> Path:
    """A fake /sys/devices/system/cpu: ``states[i]`` is cpuN's online file (None: cpu0's case,
    no file, always online). ``online`` and ``present``/``possible`` as the kernel keeps them
    (see `KernelCpus`)."""
    base = tmp_path / "sys/devices/system/cpu"
    for i, st in enumerate(states):
        d = base / f"cpu{i}"
        d.mkdir(parents=True)
        if st is not None:
            (d / "online").write_text(st + "\n")
    (base / "cpufreq").mkdir()
    n = len(states) if possible is None else possible
    (base / "possible").write_text(f"0-{n - 1}\n" if n > 1 else "0\n")
    (base / "present").write_text(f"0-{len(states) - 1}\n" if len(states) > 1 else "0\n")
    KernelCpus(base).sync()
    return base


class KernelCpus:
    """What the kernel does with the `online` list: recomputed from the cpuN/online files."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def sync(self) -> None:
        on = []
        for d in sorted(self.base.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
            f = d / "online"
            if not f.exists() or f.read_text().strip() == "1":
                on.append(d.name[3:])
        (self.base / "online").write_text(",".join(on) + "\n")


def kernel_onlines(hw: HardwareService, base: Path) -> None:
    """After each onlining pass the kernel's `online` list follows (a fake sysfs does not)."""
    real = hw._online_some

    def online_some(b: Path, pattern: str, limit: int | None) -> int:
        n = real(b, pattern, limit)
        KernelCpus(base).sync()
        return n

    hw._online_some = online_some  # type: ignore[method-assign,assignment]


def mem(tmp_path: Path, states: list[str]) -> Path:
    base = tmp_path / "sys/devices/system/memory"
    base.mkdir(parents=True, exist_ok=True)
    for i, st in enumerate(states):
        (base / f"memory{i}").mkdir(parents=True)
        (base / f"memory{i}" / "online").write_text(st + "\n")
    (base / "probe").write_text("")
    return base


async def test_online_cpus_up_to_the_total_and_memory(tmp_path: Path) -> None:
    """nb_cpus is the number that must be online afterwards (the Go runtime sends the new
    total): with 2 online and 4 asked for, two more."""
    base = cpus(tmp_path, [None, "1", "0", "0", "0"])
    mbase = mem(tmp_path, ["1", "0", "0"])
    hw = make(tmp_path)
    kernel_onlines(hw, base)
    called = []

    async def cpuset() -> None:
        called.append(True)

    hw.set_cpuset_updater(cpuset)
    await hw.online_cpu_mem(4, cpu_only=False)
    assert [(base / f"cpu{i}/online").read_text().strip() for i in (2, 3, 4)] == ["1", "1", "0"]
    assert (base / "online").read_text().strip() == "0,1,2,3"
    assert [(mbase / f"memory{i}/online").read_text().strip() for i in range(3)] == ["1"] * 3
    assert called == [True]


async def test_online_cpus_already_reached_returns_at_once(tmp_path: Path) -> None:
    """The issue's case: 2 online, nb_cpus=2: nothing to online (no retry loop), and the
    cpusets are still re-applied (some VMMs online hot-plugged CPUs themselves)."""
    base = cpus(tmp_path, [None, "1", "0"])
    hw = make(tmp_path)
    passes: list[int | None] = []
    hw._online_some = lambda b, p, limit: passes.append(limit) or 0  # type: ignore[method-assign,assignment,func-returns-value]
    called = []

    async def cpuset() -> None:
        called.append(True)

    hw.set_cpuset_updater(cpuset)
    await hw.online_cpu_mem(2, cpu_only=True)
    await hw.online_cpu_mem(1, cpu_only=True)
    assert passes == []
    assert (base / "cpu2/online").read_text().strip() == "0"
    assert called == [True, True]


async def test_online_cpu_only_leaves_memory(tmp_path: Path) -> None:
    base = cpus(tmp_path, [None, "0"])
    mbase = mem(tmp_path, ["0"])
    hw = make(tmp_path)
    kernel_onlines(hw, base)
    await hw.online_cpu_mem(2, cpu_only=True)
    assert (base / "cpu1/online").read_text().strip() == "1"
    assert (mbase / "memory0/online").read_text().strip() == "0"


async def test_memory_only(tmp_path: Path) -> None:
    """nb_cpus 0: memory blocks only, no cpuset work (the Go runtime's memory hot-plug)."""
    cpus(tmp_path, [None, "0"])
    mbase = mem(tmp_path, ["0", "1"])
    hw = make(tmp_path)
    called = []

    async def cpuset() -> None:
        called.append(True)

    hw.set_cpuset_updater(cpuset)
    await hw.online_cpu_mem(0, cpu_only=False)
    assert (mbase / "memory0/online").read_text().strip() == "1"
    assert called == []


async def test_more_cpus_than_the_guest_can_have_fails_at_once(tmp_path: Path) -> None:
    cpus(tmp_path, [None, "0"], possible=2)
    hw = make(tmp_path)
    passes: list[int | None] = []
    hw._online_some = lambda b, p, limit: passes.append(limit) or 0  # type: ignore[method-assign,assignment,func-returns-value]
    with pytest.raises(InvalidArgument, match=r"online 3 CPUs: the guest can have at most 2 "):
        await hw.online_cpu_mem(3, cpu_only=True)
    assert passes == []  # not a single onlining pass, so no retry either


async def test_hot_plugged_cpus_still_arriving_are_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Possible but not present yet (the VMM plugged it just before the call): retried, and
    onlined once the guest kernel has added it; if it never comes, INTERNAL after the retries."""
    base = cpus(tmp_path, [None], possible=2)
    monkeypatch.setattr(hardware, "ONLINE_RETRY_DELAY", 0.0)
    hw = make(tmp_path)
    real = hw._online_some
    passes = []

    def plug_on_third_pass(b: Path, pattern: str, limit: int | None) -> int:
        passes.append(limit)
        if len(passes) == 3:  # the guest kernel adds the hot-plugged CPU, offline
            (base / "cpu1").mkdir()
            (base / "cpu1" / "online").write_text("0\n")
        n = real(b, pattern, limit)
        KernelCpus(base).sync()
        return n

    hw._online_some = plug_on_third_pass  # type: ignore[method-assign,assignment]
    await hw.online_cpu_mem(2, cpu_only=True)
    assert (base / "cpu1/online").read_text().strip() == "1"
    assert passes == [1, 1, 1]

    (base / "cpu1/online").write_text("0\n")
    KernelCpus(base).sync()
    hw._online_some = lambda b, p, limit: 0  # type: ignore[method-assign,assignment]  # never comes online
    with pytest.raises(Internal, match=r"2 CPUs: still 1 online after 0s \(present CPUs 0\)"):
        await hw.online_cpu_mem(2, cpu_only=True)


def test_cpu_count() -> None:
    assert hardware.cpu_count("0") == 1
    assert hardware.cpu_count("0-3,6\n") == 5
    assert hardware.cpu_count("0,2,4-5") == 4
    assert hardware.cpu_count("") == 0


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


async def test_volume_stats_only_of_storages(tmp_path: Path) -> None:
    hw = make(tmp_path)
    vol = str(tmp_path / "run" / "sandbox" / "local-vol")
    await hw.storage.add_storages([Storage(driver="local", mount_point=vol)], "c1")
    st = await hw.volume_stats(vol)
    assert st.bytes.total >= st.bytes.available
    assert st.inodes.total >= st.inodes.used
    for path in (str(tmp_path), "", "relative", "/", str(tmp_path / "run" / "sandbox")):
        with pytest.raises(InvalidArgument, match="volume_guest_path: "):
            await hw.volume_stats(path)
    with pytest.raises(InvalidArgument, match="volume_guest_path: "):
        await hw.resize_volume("", 0)  # used to resolve to / and resize the root disk
    with pytest.raises(FailedPrecondition, match="local storages are not block devices"):
        await hw.resize_volume(vol, 0)


def test_unlimited_inodes_are_reported_as_zero() -> None:
    assert hardware._inodes(-1, -1) == hardware.VolumeUsage(0, 0, 0)
    assert hardware._inodes(100, 30) == hardware.VolumeUsage(total=100, used=70, available=30)


async def test_mem_agent_is_disabled(tmp_path: Path) -> None:
    with pytest.raises(Internal, match=r"^mem-agent is disabled$"):
        await make(tmp_path).mem_agent_configure()
