"""Hot-plug in a real guest (QEMU, TCG here): devices added through QMP after the agent is up.

The VM is the image engineer's `image-build/vm.py` `Vm`, with three additions made by a subclass:
a QMP socket, two PCIe root ports (hot-plug slots; on q35 nothing else can take a hot-plugged
device) and memory hot-plug slots. PCI paths: the root ports sit in slots 0x10 and 0x11 of
bus 00, so a device plugged into them has the PCI path `10/00` / `11/00`.

* virtio-blk by PCI path: `CreateSandbox` with a `blk` storage `10/00` mounts the disk (the
  agent waits for its uevent); the volume is written through the guest and read back.
* swap on a virtio-blk disk by PCI path (`AddSwap`), checked in /proc/swaps.
* a virtio-net NIC found by PCI path (`UpdateInterface` with `devicePath`).
* memory hot-plug (pc-dimm): the agent's uevent listener onlines the new memory blocks.
* a 9p share (a VM of its own with `share_mode="9p"`) as a container's rootfs.
* a vCPU added through QMP, onlined by `OnlineCPUMem`.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.rpc.pb import agent_pb2, csi_pb2, oci_pb2, types_pb2

REPO = Path(__file__).resolve().parents[2]
BUILD = REPO / "build"

pytestmark = pytest.mark.vm


def _vm_module() -> Any:
    spec = importlib.util.spec_from_file_location("kata_image_vm", REPO / "image-build" / "vm.py")
    assert spec is not None
    assert spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules["kata_image_vm"] = mod
    spec.loader.exec_module(mod)
    return mod


class Qmp:
    """A minimal QMP client (one command at a time; events are skipped)."""

    def __init__(self, path: Path, timeout: float = 60.0) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(timeout)
        self.sock.connect(str(path))
        self.file = self.sock.makefile("rwb")
        self._read()  # greeting
        self.cmd("qmp_capabilities")

    def _read(self) -> dict[str, Any]:
        line = self.file.readline()
        if not line:
            raise ConnectionError("QMP closed")
        return dict(json.loads(line))

    def cmd(self, name: str, **args: Any) -> Any:
        msg: dict[str, Any] = {"execute": name}
        if args:
            msg["arguments"] = args
        self.file.write(json.dumps(msg).encode() + b"\n")
        self.file.flush()
        while True:
            reply = self._read()
            if "event" in reply:
                continue
            if "error" in reply:
                raise RuntimeError(f"QMP {name}: {reply['error']}")
            return reply.get("return")

    def close(self) -> None:
        self.file.close()
        self.sock.close()


class Console:
    """The agent's debug console (a shell on a pty), for looking at the guest from inside."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(5)
        self.sock.connect(str(path))
        self.run("stty -echo 2>/dev/null; true", timeout=60)

    def run(self, cmd: str, timeout: float = 60.0) -> str:
        tag = uuid.uuid4().hex[:8]
        # the marker is produced by the shell (arithmetic), so the echoed command never matches
        self.sock.sendall(f"{cmd}; echo @{tag}@$((1+1))@\n".encode())
        want = f"@{tag}@2@".encode()
        buf = b""
        deadline = time.monotonic() + timeout
        while want not in buf:
            if time.monotonic() > deadline:
                raise TimeoutError(f"guest command {cmd!r}: no answer; got {buf[-500:]!r}")
            with contextlib.suppress(TimeoutError):
                chunk = self.sock.recv(65536)
                if not chunk:
                    raise ConnectionError("debug console closed")
                buf += chunk
        out = buf[: buf.index(want)].decode(errors="replace")
        lines = [ln for ln in out.replace("\r", "").splitlines() if f"@{tag}@" not in ln]
        return "\n".join(lines)

    def close(self) -> None:
        self.sock.close()


def _image() -> tuple[Path, Path]:
    """The kernel and initrd of `make initrd` (for bench/storage.py; the tests use the tier's
    `guest_image` fixture, which builds them)."""
    manifest = BUILD / "image.json"
    if not manifest.is_file():
        pytest.skip(f"no guest image ({manifest} missing): run `make initrd` first")
    info = json.loads(manifest.read_text())
    return Path(info["kernel"]), Path(info["initrd"])


@pytest.fixture(scope="module")
def hotplug_vm(guest_image: dict[str, Any]) -> Iterator[Any]:
    """A VM of its own (QMP and hot-plug slots), from the tier's cached image build."""
    if subprocess.run(["which", "qemu-system-x86_64"], capture_output=True).returncode != 0:
        pytest.skip("qemu-system-x86_64 is not installed")
    vmmod = _vm_module()
    kernel, initrd = Path(guest_image["kernel"]), Path(guest_image["initrd"])
    rundir = Path(f"/tmp/khp-{uuid.uuid4().hex[:6]}")  # unix socket paths must stay short

    class HotplugVm(vmmod.Vm):  # type: ignore[name-defined,misc]
        def qemu_argv(self) -> list[str]:
            argv: list[str] = list(super().qemu_argv())
            i = argv.index("-m")
            argv[i + 1] = f"{self.config.memory_mb}M,slots=4,maxmem=2G"
            i = argv.index("-smp")
            argv[i + 1] = f"{self.config.cpus},maxcpus={self.config.cpus + 1}"
            argv += [
                "-qmp",
                f"unix:{self.config.rundir / 'qmp.sock'},server=on,wait=off",
                "-device",
                "pcie-root-port,id=hp0,bus=pcie.0,chassis=10,addr=0x10",
                "-device",
                "pcie-root-port,id=hp1,bus=pcie.0,chassis=11,addr=0x11",
                "-device",
                "pcie-root-port,id=hp2,bus=pcie.0,chassis=12,addr=0x12",
                "-device",
                "pcie-root-port,id=hp3,bus=pcie.0,chassis=13,addr=0x13",
            ]
            return argv

    cfg = vmmod.VmConfig(kernel=kernel, initrd=initrd, rundir=rundir, memory_mb=512, cpus=1)
    vm = HotplugVm(cfg)
    try:
        vm.start()
        vm.wait_for_agent(timeout=180)
        yield vm
    finally:
        vm.stop()
        subprocess.run(["rm", "-rf", str(rundir)], check=False)


@pytest.fixture(scope="module")
def qmp(hotplug_vm: Any) -> Iterator[Qmp]:
    q = Qmp(hotplug_vm.config.rundir / "qmp.sock")
    yield q
    q.close()


@pytest.fixture(scope="module")
def console(hotplug_vm: Any) -> Iterator[Console]:
    c = Console(hotplug_vm.console_sock)
    yield c
    c.close()


@pytest.fixture(scope="module")
def hp_agent(hotplug_vm: Any) -> Iterator[Any]:
    """One connection for the module (a virtio-serial channel carries one connection well)."""
    from tests.vm.guest import GuestAgent

    conn = GuestAgent(hotplug_vm.agent_sock)
    yield conn
    conn.close()


def _disk(path: Path, size_mib: int, *, swap: bool = False, ext4: bool = False) -> Path:
    with path.open("wb") as f:
        f.truncate(size_mib << 20)
    if swap:
        subprocess.run(["mkswap", str(path)], check=True, capture_output=True)
    if ext4:
        subprocess.run(["mkfs.ext4", "-q", "-F", str(path)], check=True, capture_output=True)
    return path


def _plug_disk(qmp: Qmp, img: Path, name: str, port: str) -> None:
    qmp.cmd(
        "blockdev-add",
        **{"node-name": name, "driver": "raw", "file": {"driver": "file", "filename": str(img)}},
    )
    qmp.cmd("device_add", driver="virtio-blk-pci", drive=name, id=f"dev-{name}", bus=port)


def test_virtio_blk_by_pci_path_mounted_as_volume(
    hotplug_vm: Any, hp_agent: Any, qmp: Qmp, console: Console, tmp_path: Path
) -> None:
    """The Kata flow: CreateSandbox mounts the virtio-fs share (kataShared) and the hot-plugged
    disk found by PCI path; a container whose rootfs is on the share writes into the volume."""
    from agent.ctl.container_spec import container_spec
    from tests.support.rootfs import make_busybox_rootfs
    from tests.vm.guest import shared_storage

    cid = "hpc1"
    make_busybox_rootfs(hotplug_vm.config.shared_dir / cid / "rootfs")
    img = _disk(tmp_path / "vol.img", 64, ext4=True)  # the guest image has no mkfs.ext4
    shared = "/run/kata-containers/shared/containers/"
    mp = "/run/kata-containers/sandbox/storage/vol0"
    share_type = "virtiofs" if hotplug_vm.share_mode == "virtio-fs" else "9p"
    share = shared_storage(hotplug_vm.share_mode)
    vol = agent_pb2.Storage(driver="blk", source="10/00", fstype="ext4", mount_point=mp)
    _plug_disk(qmp, img, "vol0", "hp0")  # after the agent is up: a real hot-plug
    hp_agent.call(
        "CreateSandbox",
        agent_pb2.CreateSandboxRequest(hostname="hp", sandbox_id="hp", storages=[share, vol]),
    )
    stats = hp_agent.call("GetVolumeStats", agent_pb2.VolumeStatsRequest(volume_guest_path=mp))
    total = next(u.total for u in stats.usage if u.unit == csi_pb2.VolumeUsage.BYTES)
    assert 50 << 20 < total <= 64 << 20
    spec = container_spec(f"{shared}{cid}/rootfs", ["sh", "-c", "echo from-container > /data/f"])
    spec.Mounts.append(
        oci_pb2.Mount(destination="/data", source=mp, type="bind", options=["rbind", "rw"])
    )
    hp_agent.call(
        "CreateContainer", agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec)
    )
    hp_agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=cid))
    done = hp_agent.call("WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
    assert done.status == 0
    hp_agent.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id=cid))
    mounts = console.run("cat /proc/mounts")
    assert f" {shared.rstrip('/')} {share_type} " in mounts
    assert any(ln.startswith("/dev/vd") and f" {mp} ext4 " in ln for ln in mounts.splitlines())
    assert console.run(f"cat {mp}/f").strip().endswith("from-container")


def _nr(console: Console, path: str) -> int:
    out = console.run(f"echo NR=$(cat {path})")
    return int(out.rsplit("NR=", 1)[1].split()[0])


def test_hugetlbfs_ephemeral_volume(hp_agent: Any, console: Console) -> None:
    """hugetlbfs emptyDir: the pages are reserved (all or nothing) and the mount has the size.
    Runs after the sandbox test above (same VM, whose rootfs share it reuses)."""
    from agent.ctl.container_spec import container_spec
    from agent.rpc.status import Code, RpcError

    shared = "/run/kata-containers/shared/containers/"
    nr = "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
    before = _nr(console, nr)
    mp = "/run/kata-containers/sandbox/ephemeral/huge"
    hp = agent_pb2.Storage(
        driver="ephemeral",
        source="nodev",
        fstype="hugetlbfs",
        mount_point=mp,
        options=["pagesize=2097152,size=8388608"],
    )
    spec = container_spec(f"{shared}hpc1/rootfs", ["true"])
    hp_agent.call(
        "CreateContainer",
        agent_pb2.CreateContainerRequest(
            container_id="hpc2", exec_id="hpc2", OCI=spec, storages=[hp]
        ),
    )
    assert _nr(console, nr) == before + 4
    stats = hp_agent.call("GetVolumeStats", agent_pb2.VolumeStatsRequest(volume_guest_path=mp))
    assert next(u.total for u in stats.usage if u.unit == csi_pb2.VolumeUsage.BYTES) == 8 << 20
    hp_agent.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="hpc2"))
    assert _nr(console, nr) == before
    # far more than the guest has: refused, and the pool is left as it was
    greedy = agent_pb2.Storage(
        driver="ephemeral",
        source="nodev",
        fstype="hugetlbfs",
        mount_point=mp + "2",
        options=["pagesize=2097152", "size=4294967296"],
    )
    with pytest.raises(RpcError) as info:
        hp_agent.call(
            "CreateContainer",
            agent_pb2.CreateContainerRequest(
                container_id="hpc3", exec_id="hpc3", OCI=spec, storages=[greedy]
            ),
        )
    assert info.value.code == Code.RESOURCE_EXHAUSTED
    assert "of 2048 huge pages" in info.value.message
    assert _nr(console, nr) == before
    assert mp + "2" not in console.run("cat /proc/mounts")


def test_create_filesystem_on_raw_hotplugged_disk(
    hp_agent: Any, qmp: Qmp, console: Console, tmp_path: Path
) -> None:
    """`create_filesystem` on a blank disk (mkfs.ext4, or busybox mke2fs where the guest has no
    e2fsprogs), mounted as a container volume the container writes to."""
    from agent.ctl.container_spec import container_spec

    img = _disk(tmp_path / "raw.img", 64)
    _plug_disk(qmp, img, "raw0", "hp3")
    mp = "/run/kata-containers/sandbox/storage/raw0"
    vol = agent_pb2.Storage(
        driver="blk",
        source="13/00",
        fstype="ext4",
        mount_point=mp,
        driver_options=["create_filesystem"],
    )
    spec = container_spec(
        "/run/kata-containers/shared/containers/hpc1/rootfs",
        ["sh", "-c", "echo fresh > /data/f"],
    )
    spec.Mounts.append(
        oci_pb2.Mount(destination="/data", source=mp, type="bind", options=["rbind", "rw"])
    )
    hp_agent.call(
        "CreateContainer",
        agent_pb2.CreateContainerRequest(
            container_id="hpc4", exec_id="hpc4", OCI=spec, storages=[vol]
        ),
    )
    hp_agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id="hpc4"))
    done = hp_agent.call(
        "WaitProcess", agent_pb2.WaitProcessRequest(container_id="hpc4", exec_id="hpc4")
    )
    assert done.status == 0
    assert any(f" {mp} ext4 " in ln for ln in console.run("cat /proc/mounts").splitlines())
    assert console.run(f"cat {mp}/f").strip().endswith("fresh")
    hp_agent.call("RemoveContainer", agent_pb2.RemoveContainerRequest(container_id="hpc4"))
    assert f" {mp} " not in console.run("cat /proc/mounts")


def test_swap_on_hotplugged_disk(hp_agent: Any, qmp: Qmp, console: Console, tmp_path: Path) -> None:
    img = _disk(tmp_path / "swap.img", 32, swap=True)
    _plug_disk(qmp, img, "swap0", "hp1")
    hp_agent.call("AddSwap", agent_pb2.AddSwapRequest(PCIPath=[0x11, 0x00]))
    swaps = console.run("cat /proc/swaps")
    assert "/dev/vd" in swaps, swaps


def test_hotplugged_nic_found_by_pci_path(hp_agent: Any, qmp: Qmp, console: Console) -> None:
    qmp.cmd("netdev_add", type="user", id="hpnet0", restrict=True)
    qmp.cmd(
        "device_add",
        driver="virtio-net-pci",
        netdev="hpnet0",
        id="hpnic0",
        bus="hp2",
        mac="52:54:00:12:34:99",
    )
    iface = types_pb2.Interface(
        device="",
        name="hpeth0",
        hwAddr="52:54:00:12:34:99",
        mtu=1500,
        devicePath="12/00",
        IPAddresses=[
            types_pb2.IPAddress(family=types_pb2.IPFamily.v4, address="10.9.8.7", mask="24")
        ],
    )
    got = hp_agent.call("UpdateInterface", agent_pb2.UpdateInterfaceRequest(interface=iface))
    assert got.name == "hpeth0"
    out = console.run("ip -o addr show hpeth0")
    assert "10.9.8.7/24" in out


def _online_blocks(console: Console) -> tuple[int, int]:
    out = console.run("cat /sys/devices/system/memory/memory*/online | tr -d '\\n'; echo")
    bits = out.strip().splitlines()[-1]
    return bits.count("1"), bits.count("0")


def test_memory_hotplug_onlined(hotplug_vm: Any, qmp: Qmp, console: Console) -> None:
    before_on, _ = _online_blocks(console)
    qmp.cmd("object-add", **{"qom-type": "memory-backend-ram", "id": "hpmem0", "size": 256 << 20})
    qmp.cmd("device_add", driver="pc-dimm", id="hpdimm0", memdev="hpmem0")
    deadline = time.monotonic() + 60
    on, off = _online_blocks(console)
    while time.monotonic() < deadline and (on <= before_on or off):
        time.sleep(0.5)
        on, off = _online_blocks(console)
    assert on >= before_on + 2, (before_on, on, off)
    assert off == 0


def test_9p_share_as_container_rootfs(guest_image: dict[str, Any]) -> None:
    """The `9p` driver (dropped by the Rust agent, still offered by the Go runtime's
    shared_fs = virtio-9p): the share is mounted with trans=virtio and serves a container rootfs."""
    from agent.ctl.container_spec import container_spec
    from tests.support.rootfs import make_busybox_rootfs
    from tests.vm.guest import GuestAgent

    vmmod = _vm_module()
    rundir = Path(f"/tmp/k9p-{uuid.uuid4().hex[:6]}")
    cfg = vmmod.VmConfig(
        kernel=Path(guest_image["kernel"]),
        initrd=Path(guest_image["initrd"]),
        rundir=rundir,
        share_mode="9p",
    )
    vm = vmmod.Vm(cfg)
    try:
        vm.start()
        vm.wait_for_agent(timeout=180)
        make_busybox_rootfs(cfg.shared_dir / "c9p" / "rootfs")
        (cfg.shared_dir / "c9p" / "rootfs" / "hello").write_text("over 9p\n")
        shared = "/run/kata-containers/shared/containers/"
        share = agent_pb2.Storage(driver="9p", source="kataShared", fstype="9p", mount_point=shared)
        conn = GuestAgent(vm.agent_sock)
        try:
            conn.call(
                "CreateSandbox",
                agent_pb2.CreateSandboxRequest(hostname="p9", sandbox_id="p9", storages=[share]),
            )
            spec = container_spec(f"{shared}c9p/rootfs", ["sh", "-c", "cat /hello > /out"])
            conn.call(
                "CreateContainer",
                agent_pb2.CreateContainerRequest(container_id="c9p", exec_id="c9p", OCI=spec),
            )
            conn.call("StartContainer", agent_pb2.StartContainerRequest(container_id="c9p"))
            done = conn.call(
                "WaitProcess", agent_pb2.WaitProcessRequest(container_id="c9p", exec_id="c9p")
            )
            assert done.status == 0
        finally:
            conn.close()
        console = Console(vm.console_sock)
        try:
            mounts = console.run("cat /proc/mounts")
        finally:
            console.close()
        line = next(ln for ln in mounts.splitlines() if f" {shared.rstrip('/')} 9p " in ln)
        assert "trans=virtio" in line
        # the container wrote through the share: the host sees it
        assert (cfg.shared_dir / "c9p" / "rootfs" / "out").read_text() == "over 9p\n"
    finally:
        vm.stop()
        subprocess.run(["rm", "-rf", str(rundir)], check=False)


def test_cpu_hotplug_onlined_by_online_cpu_mem(hp_agent: Any, qmp: Qmp, console: Console) -> None:
    """A vCPU added through QMP arrives offline (no udev in the guest); OnlineCPUMem with the
    new total (what the Go runtime sends) onlines it. Offlined in the guest, it is brought back
    by the same total; asked again, nothing is left to do; more than maxcpus is refused."""
    from agent.rpc.status import Code, RpcError

    slots = [c for c in qmp.cmd("query-hotpluggable-cpus") if "qom-path" not in c]
    assert slots, "no free vCPU slot (maxcpus)"
    props = dict(slots[0]["props"])
    qmp.cmd("device_add", driver=slots[0]["type"], id="hpcpu1", **props)
    deadline = time.monotonic() + 60
    while "cpu1" not in console.run("ls /sys/devices/system/cpu/"):
        assert time.monotonic() < deadline, "the guest never saw the new vCPU"
        time.sleep(0.5)
    total = agent_pb2.OnlineCPUMemRequest(nb_cpus=2, cpu_only=True)
    hp_agent.call("OnlineCPUMem", total)
    assert _nr(console, "/sys/devices/system/cpu/cpu1/online") == 1
    assert console.run("cat /sys/devices/system/cpu/online").strip().endswith("0-1")
    console.run("echo 0 > /sys/devices/system/cpu/cpu1/online")
    assert _nr(console, "/sys/devices/system/cpu/cpu1/online") == 0
    hp_agent.call("OnlineCPUMem", total)
    assert _nr(console, "/sys/devices/system/cpu/cpu1/online") == 1
    hp_agent.call("OnlineCPUMem", total)  # already online: nothing to do
    hp_agent.call("OnlineCPUMem", agent_pb2.OnlineCPUMemRequest(nb_cpus=1, cpu_only=True))
    assert console.run("cat /sys/devices/system/cpu/online").strip().endswith("0-1")
    with pytest.raises(RpcError) as info:
        hp_agent.call("OnlineCPUMem", agent_pb2.OnlineCPUMemRequest(nb_cpus=3, cpu_only=True))
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "the guest can have at most 2" in info.value.message
