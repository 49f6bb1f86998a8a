"""Guest image and boot bench: initrd size, image build time, QEMU start to first answered Check,
the agent's exec-to-listening time inside the guest, and the agent's RSS after a container ran.

    .venv/bin/python bench/boot.py [--rounds 3] [--skip-build]

* initrd size: ``build/kata-agent-py-initrd.img`` (target <= 25 MB).
* image build time: a forced rebuild of the rootfs and the initrd with the kernel and the
  downloads cached (what a change to the agent costs), then a cached run (nothing to do).
* boot: per round a fresh VM (q35, TCG here, PVH vmlinux, virtio-fs share); "to Check" is the
  time from starting QEMU to the first answered grpc.Health/Check on the agent's channel, seen
  from the host.
* exec to listening (target <= 0.5 s under TCG): inside the guest, from the kernel's "Run /init as
  init process" (kernel log timestamp) to the moment the agent's ttrpc channel is open and a
  Check sent by the host is answered from then on: PID 1's phase 0 (agent.boot.init) opens the
  virtio-serial port and answers Check itself until the asyncio server adopts the port with
  what it buffered; "pid1 ready" logs that uptime (``channel_open_uptime``). Without phase 0,
  the "ttrpc server listening" log line (its wall clock converted to uptime with the "pid1
  ready" line's uptime and wall clock). ``exec_to_asyncio_server_s`` is always the latter. The
  PID 1 steps (module loading, mounts, ...) are printed separately.
* RSS (target <= 30 MiB): the agent's VmRSS (/proc/1/status, through the debug console) after
  CreateSandbox and one busybox container that ran to its end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.vm.guest import (  # noqa: E402
    GUEST_SHARED,
    GuestAgent,
    console_run,
    load_image_build,
    shared_storage,
)


def build_times(build: Path) -> tuple[float, float]:
    def run(*extra: str) -> float:
        t0 = time.monotonic()
        subprocess.run(
            [
                sys.executable,
                str(REPO / "image-build" / "build.py"),
                "--out",
                str(build),
                "--no-disk",
                *extra,
            ],
            check=True,
            capture_output=True,
            timeout=900,
        )
        return time.monotonic() - t0

    return run("--force"), run()


def _ts(value: str) -> float:
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC).timestamp()


def guest_startup(console_log: Path) -> dict[str, Any]:
    """exec-to-listening and PID 1 step times from the agent's JSON log lines."""
    ready: dict[str, Any] | None = None
    announce_wall: float | None = None
    for line in console_log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        if rec.get("msg") == "pid1 ready" and ready is None:
            ready = rec
        elif rec.get("msg") == "ttrpc server listening" and announce_wall is None:
            announce_wall = _ts(rec["ts"])
    if ready is None or announce_wall is None:
        raise RuntimeError(f"no 'pid1 ready'/'ttrpc server listening' lines in {console_log}")
    server_uptime = float(ready["uptime"]) + (announce_wall - float(ready["wall"]))
    # PID 1's phase 0 (agent.boot.init) opens the serial channel and answers Check itself
    # before the asyncio server exists: listening starts there when it did.
    opened = ready.get("channel_open_uptime")
    listen_uptime = float(opened) if opened is not None else server_uptime
    return {
        "kernel_to_init_s": float(ready["exec_uptime"]),
        "exec_to_listening_s": listen_uptime - float(ready["exec_uptime"]),
        "exec_to_asyncio_server_s": server_uptime - float(ready["exec_uptime"]),
        # interpreter start-up up to /init's main() (agent.boot.init)
        "exec_to_python_main_s": float(ready.get("main_uptime", ready["exec_uptime"]))
        - float(ready["exec_uptime"]),
        "exec_to_pid1_ready_s": float(ready["uptime"]) - float(ready["exec_uptime"]),
        "pid1_steps_s": ready["steps"],
    }


def one_round(
    vm_mod: Any, manifest: dict[str, Any], with_container: bool, cpus: int = 1
) -> dict[str, Any]:
    import tempfile

    from agent.ctl.container_spec import container_spec
    from agent.rpc.pb import agent_pb2
    from tests.support.rootfs import make_busybox_rootfs

    rundir = Path(tempfile.mkdtemp(prefix="kata-bench-"))
    cfg = vm_mod.VmConfig(
        kernel=Path(manifest["kernel"]),
        initrd=Path(manifest["initrd"]),
        rundir=rundir,
        boot_timeout=240.0,
        cpus=cpus,
    )
    try:
        with vm_mod.Vm(cfg) as vm:
            vm.start()
            to_check = vm.wait_for_agent()
            result: dict[str, Any] = {"qemu_start_to_check_s": to_check}
            # Phase 0 answers Check before the asyncio server (and its log line) exists: wait.
            deadline = time.monotonic() + 120
            while True:
                try:
                    result.update(guest_startup(vm.console_log))
                    break
                except RuntimeError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            if with_container:
                agent = GuestAgent(vm.agent_sock)
                try:
                    agent.call(
                        "CreateSandbox",
                        agent_pb2.CreateSandboxRequest(
                            hostname="bench",
                            sandbox_id=f"bench-{uuid.uuid4().hex[:8]}",
                            storages=[shared_storage(vm.share_mode)],
                        ),
                    )
                    cid = "bench1"
                    make_busybox_rootfs(cfg.shared_dir / cid / "rootfs")
                    spec = container_spec(f"{GUEST_SHARED}/{cid}/rootfs", ["echo", "hi"])
                    agent.call(
                        "CreateContainer",
                        agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec),
                        timeout=180,
                    )
                    agent.call("StartContainer", agent_pb2.StartContainerRequest(container_id=cid))
                    agent.call(
                        "WaitProcess", agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid)
                    )
                    out = console_run(vm, "grep -E '^Vm(RSS|HWM)' /proc/1/status")
                    for line in out.splitlines():
                        if line.startswith(("VmRSS", "VmHWM")):
                            key = "agent_rss_mib" if line.startswith("VmRSS") else "agent_hwm_mib"
                            result[key] = int(line.split()[1]) / 1024
                finally:
                    agent.close()
    finally:
        shutil.rmtree(rundir, ignore_errors=True)
    return result


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--build", type=Path, default=REPO / "build")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-build", action="store_true", help="do not time a forced rebuild")
    args = p.parse_args()
    report: dict[str, Any] = {}
    if not args.skip_build:
        forced, cached = build_times(args.build)
        report["image_build_forced_s"] = round(forced, 1)
        report["image_build_cached_s"] = round(cached, 1)
    manifest = json.loads((args.build / "image.json").read_text())
    report["initrd_mb"] = round(Path(manifest["initrd"]).stat().st_size / 1e6, 2)
    vm_mod = load_image_build("vm")
    rounds = [one_round(vm_mod, manifest, with_container=(i == 0)) for i in range(args.rounds)]
    for key in (
        "qemu_start_to_check_s",
        "kernel_to_init_s",
        "exec_to_listening_s",
        "exec_to_python_main_s",
        "exec_to_asyncio_server_s",
        "exec_to_pid1_ready_s",
    ):
        values = [r[key] for r in rounds]
        report[key] = {
            "median": round(statistics.median(values), 2),
            "min": round(min(values), 2),
            "max": round(max(values), 2),
        }
    report["pid1_steps_s_round1"] = rounds[0]["pid1_steps_s"]
    for key in ("agent_rss_mib", "agent_hwm_mib"):
        if key in rounds[0]:
            report[key] = round(rounds[0][key], 1)
    report["accel"] = "kvm" if vm_mod.kvm_usable() else "tcg"
    print(json.dumps(report, indent=1))
    targets = [
        ("initrd <= 25 MB", report["initrd_mb"] <= 25),
        ("exec to listening <= 0.5 s", report["exec_to_listening_s"]["median"] <= 0.5),
        ("agent RSS <= 30 MiB", report.get("agent_rss_mib", 1e9) <= 30),
    ]
    for name, ok in targets:
        print(f"{'met    ' if ok else 'MISSED '} {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
