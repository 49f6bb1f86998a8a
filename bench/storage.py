"""Storage/uevent benchmark (run as root on the host: `.venv/bin/python bench/storage.py`).

1. Hot-plug to mounted: a loop device plays the hot-plugged disk (no VM needed). Per round:
   start waiting for the device by name, then LOOP_CTL_ADD a fresh index and LOOP_SET_FD a
   pre-formatted ext4 image (the kernel's `add` uevent is what a QMP device_add produces in a
   guest), then mount it as a `blk` storage through the StorageManager. Reported: time from the
   plug to the uevent reaching the waiter, and from the plug to the storage being mounted.
2. uevent listener CPU: a child process writes "change" 1,000 times to the uevent file of a
   loop device this script created; the agent's listener (in this process, alone on its loop)
   receives them. Reported: CPU time of this process over the burst, per event, and events seen.

3. `--vm N`: QMP `device_add` of a virtio-blk disk into a booted guest (QEMU; TCG here), N boots.
   Per boot: CreateSandbox (virtio-fs share), then per hot-plug slot, as the shim does: QMP
   device_add of a virtio-blk disk, then at once a CreateContainer whose `blk` storage names its
   PCI path. From the agent's log (guest clock; offset to the host clock from the agent's
   "serial connection up" record of our connection): device_add → the block `add` uevent, and
   device_add → "storage mounted"; plus the agent's own request → mounted time. Needs a current
   `make initrd` (the image carries this checkout's agent).

Everything runs under a private bind-mounted temporary run_dir; devices and mounts are removed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import os
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent import spawn
from agent.devices.uevent import Match
from agent.services.hardware import HardwareService
from agent.storage.model import Storage
from oci.syscalls import consts as c
from oci.syscalls.linux import LinuxSyscalls

LOOP_CTL_ADD = 0x4C80
LOOP_CTL_REMOVE = 0x4C81
LOOP_SET_FD = 0x4C00
LOOP_CLR_FD = 0x4C01


def fresh_index(start: int) -> int:
    used = {int(p.name[4:]) for p in Path("/sys/class/block").glob("loop[0-9]*")}
    idx = max(start, max(used | {0}) + 1)
    while idx in used:
        idx += 1
    return idx


def plug(ctl: int, idx: int, image: Path) -> None:
    fcntl.ioctl(ctl, LOOP_CTL_ADD, idx)
    dev = f"/dev/loop{idx}"
    for _ in range(2000):  # devtmpfs creates the node asynchronously
        if os.path.exists(dev):
            break
        time.sleep(0.0005)
    fd = os.open(dev, os.O_RDWR | os.O_CLOEXEC)
    img = os.open(image, os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, LOOP_SET_FD, img)
    finally:
        os.close(img)
        os.close(fd)


def unplug(ctl: int, idx: int) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(f"/dev/loop{idx}", os.O_RDWR | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, LOOP_CLR_FD, 0)
        finally:
            os.close(fd)
    for _ in range(200):
        try:
            fcntl.ioctl(ctl, LOOP_CTL_REMOVE, idx)
            return
        except OSError:
            time.sleep(0.01)


def _by_name(name: str) -> Match:
    return Match(lambda e: e.subsystem == "block" and e.devname == name, name)


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, round(q * (len(xs) - 1)))]


async def bench_hotplug(hw: HardwareService, run_dir: Path, image: Path, rounds: int) -> None:
    ctl = os.open("/dev/loop-control", os.O_RDWR | os.O_CLOEXEC)
    to_event: list[float] = []
    to_mounted: list[float] = []
    idx = fresh_index(200)
    try:
        for i in range(rounds):
            idx = fresh_index(idx + 1)
            name = f"loop{idx}"
            waiter = asyncio.create_task(hw.uevents.wait_for(_by_name(name)))
            await asyncio.sleep(0)
            t0 = time.perf_counter()
            plugging = asyncio.create_task(asyncio.to_thread(plug, ctl, idx, image))
            ev = await waiter
            t_ev = time.perf_counter()
            await plugging  # the disk has its medium (a guest disk is complete at `add`)
            vol = Storage(
                driver="blk",
                source=f"/dev/{ev.devname}",
                fstype="ext4",
                mount_point=str(run_dir / "sandbox" / "storage" / f"v{i}"),
            )
            await hw.storage.add_storages([vol], f"c{i}")
            t1 = time.perf_counter()
            to_event.append(t_ev - t0)
            to_mounted.append(t1 - t0)
            await hw.storage.release(f"c{i}")
            await asyncio.to_thread(unplug, ctl, idx)
    finally:
        os.close(ctl)
    ms = 1000.0
    print(
        f"hot-plug (loop device) -> uevent seen: median {statistics.median(to_event) * ms:.2f} ms"
        f"  p90 {pct(to_event, 0.9) * ms:.2f} ms  ({rounds} rounds)"
    )
    print(
        f"hot-plug (loop device) -> blk mounted: median {statistics.median(to_mounted) * ms:.2f} ms"
        f"  p90 {pct(to_mounted, 0.9) * ms:.2f} ms  max {max(to_mounted) * ms:.2f} ms"
    )


async def bench_uevent_cpu(hw: HardwareService, tmp: Path, count: int) -> None:
    img = tmp / "burst.img"
    with img.open("wb") as f:
        f.truncate(1 << 20)
    attached = await spawn.run(["losetup", "--find", "--show", str(img)], timeout=60)
    dev = attached.check("losetup").stdout.decode().strip()
    name = Path(dev).name
    seen = 0
    done = asyncio.Event()

    def on_event(ev: object) -> None:
        nonlocal seen
        if getattr(ev, "devname", "") == name and getattr(ev, "action", "") == "change":
            seen += 1
            if seen >= count:
                done.set()

    hw.uevents.add_listener(on_event)
    try:
        await asyncio.sleep(1.0)  # let the attach's own change events pass
        seen = 0
        received0 = hw.uevents.received
        r0 = resource.getrusage(resource.RUSAGE_SELF)
        t0 = time.perf_counter()
        script = (
            f"i=0; while [ $i -lt {count} ]; do "
            f"echo change > /sys/block/{name}/uevent; i=$((i+1)); done"
        )
        writer = await spawn.run(["sh", "-c", script], timeout=120)
        writer.check("uevent burst writer")
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(30):
                await done.wait()
        t1 = time.perf_counter()
        r1 = resource.getrusage(resource.RUSAGE_SELF)
        seen_at_end, received = seen, hw.uevents.received - received0
    finally:
        await spawn.run(["losetup", "-d", dev], timeout=60)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    print(
        f"uevent burst: {seen_at_end}/{count} change events of {name} seen "
        f"({received} uevents received in all) in {t1 - t0:.2f} s wall"
    )
    print(
        f"uevent listener CPU over the burst: {cpu * 1000:.1f} ms "
        f"({cpu / max(seen_at_end, 1) * 1e6:.1f} us per event; "
        f"user {r1.ru_utime - r0.ru_utime:.3f} s, sys {r1.ru_stime - r0.ru_stime:.3f} s)"
    )


def _guest_ts(text: str) -> float:
    import datetime

    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


PORTS = 3  # hot-plug root ports per boot: one round each


async def bench_vm(boots: int) -> None:
    import json
    import uuid

    from agent.ctl.container_spec import container_spec
    from agent.rpc.client import TtrpcClient
    from agent.rpc.pb import agent_pb2
    from tests.support.rootfs import make_busybox_rootfs
    from tests.vm import test_hotplug as hp

    vmmod = hp._vm_module()
    if not hp.BUILD.joinpath("image.json").is_file():
        print("vm: no guest image (run `make initrd`); skipped")
        return
    kernel, initrd = hp._image()

    class HotplugVm(vmmod.Vm):  # type: ignore[name-defined,misc]
        def qemu_argv(self) -> list[str]:
            argv: list[str] = list(super().qemu_argv())
            argv += ["-qmp", f"unix:{self.config.rundir / 'qmp.sock'},server=on,wait=off"]
            for p in range(PORTS):
                argv += [
                    "-device",
                    f"pcie-root-port,id=hp{p},bus=pcie.0,chassis={10 + p},addr=0x{0x10 + p:x}",
                ]
            return argv

    to_uevent: list[float] = []
    to_mounted: list[float] = []
    in_agent: list[float] = []
    shared = "/run/kata-containers/shared/containers/"
    for _ in range(boots):
        rundir = Path(f"/tmp/kbs-{uuid.uuid4().hex[:6]}")
        vm = HotplugVm(vmmod.VmConfig(kernel=kernel, initrd=initrd, rundir=rundir))
        try:
            vm.start()
            vm.wait_for_agent(timeout=180)
            make_busybox_rootfs(vm.config.shared_dir / "rootfs")
            qmp = hp.Qmp(rundir / "qmp.sock")
            t_conn = time.time()  # the agent logs "serial connection up": the clock offset
            client = await TtrpcClient.connect(f"unix://{vm.agent_sock}", timeout=30)
            for _ in range(50):  # the boot-time health probe's stream may still be in flight
                try:
                    await asyncio.wait_for(
                        client.agent.GetGuestDetails(agent_pb2.GuestDetailsRequest(), timeout=5), 6
                    )
                    break
                except Exception:
                    await asyncio.sleep(0.1)
            share_type = "virtiofs" if vm.share_mode == "virtio-fs" else "9p"
            share = agent_pb2.Storage(
                driver="virtio-fs" if share_type == "virtiofs" else "9p",
                source="kataShared",
                fstype=share_type,
                mount_point=shared,
            )
            plugs: dict[str, float] = {}
            try:
                await client.agent.CreateSandbox(
                    agent_pb2.CreateSandboxRequest(hostname="b", sandbox_id="b", storages=[share]),
                    timeout=120,
                )
                for p in range(PORTS):
                    img = rundir / f"d{p}.img"
                    hp._disk(img, 64, ext4=True)
                    mp = f"/run/kata-containers/sandbox/storage/bench{p}"
                    vol = agent_pb2.Storage(
                        driver="blk", source=f"{0x10 + p:02x}/00", fstype="ext4", mount_point=mp
                    )
                    cid = f"bench{p}"
                    spec = container_spec(f"{shared}rootfs", ["true"])
                    t0 = time.time()
                    await asyncio.to_thread(hp._plug_disk, qmp, img, f"bench{p}", f"hp{p}")
                    # as the shim does: hot-plug first, then the request that uses the disk
                    await client.agent.CreateContainer(
                        agent_pb2.CreateContainerRequest(
                            container_id=cid, exec_id=cid, OCI=spec, storages=[vol]
                        ),
                        timeout=120,
                    )
                    plugs[f"bench{p}"] = t0
                    await client.agent.RemoveContainer(
                        agent_pb2.RemoveContainerRequest(container_id=cid), timeout=120
                    )
            finally:
                await client.close()
                qmp.close()
            records = [
                json.loads(line)
                for line in vm.console_log.read_text(errors="replace").splitlines()
                if line.startswith("{")
            ]
            # our client's connection: the last one the agent saw before the sandbox was made
            created = next(i for i, r in enumerate(records) if r.get("msg") == "sandbox created")
            ours = [r for r in records[:created] if r.get("msg") == "serial connection up"][-1]
            offset = _guest_ts(ours["ts"]) - t_conn
            for r in records:
                if r.get("msg") == "storage mounted":
                    name = next((n for n in plugs if n in r.get("storage", "")), None)
                    if name is not None:
                        to_mounted.append(_guest_ts(r["ts"]) - (plugs[name] + offset))
                        in_agent.append(float(r.get("seconds", 0.0)))
                elif r.get("msg") == "uevent" and r.get("action") == "add":
                    dp = r.get("devpath", "")
                    for p in range(PORTS):  # the whole disk behind root port p
                        behind = f"/0000:00:{0x10 + p:02x}.0/" in dp
                        whole_disk = dp.rsplit("/", 2)[-2] == "block"
                        if behind and whole_disk and f"bench{p}" in plugs:
                            t0 = plugs[f"bench{p}"] + offset
                            to_uevent.append(_guest_ts(r["ts"]) - t0)
        finally:
            vm.stop()
            shutil.rmtree(rundir, ignore_errors=True)
    ms = 1000.0

    def fmt(xs: list[float]) -> str:
        if not xs:
            return "n/a"
        return f"median {statistics.median(xs) * ms:.0f} ms, all {[round(x * ms) for x in xs]}"

    n = f"vm ({len(to_mounted)} hot-plugs in {boots} boot(s), TCG)"
    print(f"{n}: device_add -> block uevent at the agent: {fmt(to_uevent)}")
    print(f"{n}: device_add -> blk storage mounted:       {fmt(to_mounted)}")
    print(f"{n}: storage request -> mounted in the agent: {fmt(in_agent)}")


async def main(args: argparse.Namespace) -> None:
    if args.vm:
        await bench_vm(args.vm)
    tmp = Path(tempfile.mkdtemp(prefix="bench-storage-"))
    run_dir = tmp / "run"
    run_dir.mkdir()
    sc = LinuxSyscalls()
    sc.mount(str(run_dir), str(run_dir), None, c.MS_BIND)
    sc.mount(None, str(run_dir), None, c.MS_PRIVATE)
    hw = HardwareService.build(run_dir=run_dir, hotplug_timeout=10, syscalls=sc, run=spawn.run)
    await hw.start()
    try:
        image = tmp / "disk.img"
        with image.open("wb") as f:
            f.truncate(64 << 20)
        (await spawn.run(["mkfs.ext4", "-q", "-F", str(image)], timeout=60)).check("mkfs")
        await bench_hotplug(hw, run_dir, image, args.rounds)
        await bench_uevent_cpu(hw, tmp, args.events)
    finally:
        with contextlib.suppress(Exception):
            await hw.storage.release_all()
        await hw.stop()
        sc.umount2(str(run_dir), c.MNT_DETACH)
        await asyncio.to_thread(shutil.rmtree, tmp, True)


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--events", type=int, default=1000)
    p.add_argument("--vm", type=int, default=0, help="also boot the guest this many times")
    asyncio.run(main(p.parse_args()))
