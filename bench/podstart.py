"""Pod start through kata-agent-hv: CreateVM to the first output of a container, as the Kata runtime
drives it with ``[hypervisor.remote]``, and the agent's own per-RPC durations from its log.

    .venv/bin/python bench/podstart.py [--rounds 3] [--build DIR [--build DIR2]] [--idle S]
                                       [--append-b WORD] [--json]

One kata-agent-hv per build directory (started once, not timed); each round, for each build in
turn (A/B interleaved when two are given): CreateVM, StartVM (boot, until the agent answers), then
on the agent socket Health.Check, CreateSandbox (no storage, as the runtime sends it to a remote
hypervisor: the multiplexer adds the shared directory), GetGuestDetails (the runtime's next call,
``getAndStoreGuestDetails``), CreateContainer (a busybox rootfs already in the sandbox's shared
mounts directory), StartContainer and ReadStdout until the container's first bytes; then
(untimed) WaitProcess, RemoveContainer, DestroySandbox, StopVM.

``--idle S`` waits S seconds after that first Check before CreateSandbox, as a runtime does when
it has its own work between starting the VM and its first call (a real one does some; against a
remote hypervisor little): the agent's time to load its areas in the background
(``agent.preload_areas``). The wait is not counted in ``total_s`` or CreateSandbox.

Printed per build (medians over rounds, min-max):

* ``host_*`` -- each step as the runtime sees it (ms); ``total_s`` CreateVM to the first output;
* ``agent_*`` -- the same calls' durations inside the guest, from the agent's debug log
  (``agent.log=debug`` on the guest's kernel command line; the log goes to the serial console,
  kept with ``--keep-logs``): how much of each call is the agent's work, and how much the channel
  and the multiplexer; ``agent_phase0_held_ms``: how long the first request phase 0 could not
  answer (CreateSandbox, sent once Check was answered) waited for the asyncio server, before the
  agent's own duration of it starts; ``agent_preload_ms``: the background load of the areas
  (``agent.preload_areas``), when the image does it.

Everything runs under TCG on a machine without KVM: only compare figures taken on the same machine
at the same load (``uptime`` is printed).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ctl.container_spec import container_spec  # noqa: E402
from agent.rpc.client import TtrpcClient  # noqa: E402
from agent.rpc.pb import agent_pb2, health_pb2  # noqa: E402
from agent.rpc.pb import hypervisor_pb2 as pb  # noqa: E402
from agent.rpc.status import RpcError  # noqa: E402
from hv.shared import GUEST_SHARED  # noqa: E402
from tests.support.hv import HvProcess, start_hv  # noqa: E402
from tests.support.rootfs import make_busybox_rootfs  # noqa: E402

STEPS = ("CreateSandbox", "GetGuestDetails", "CreateContainer", "StartContainer")


async def one_round(hv: HvProcess, idle: float = 0.0) -> dict[str, float]:
    sid, cid = f"pod-{uuid.uuid4().hex[:10]}", "c1"
    make_busybox_rootfs(hv.shared_root / sid / "mounts" / cid / "rootfs")
    t: dict[str, float] = {}
    t0 = time.perf_counter()
    resp = await hv.call("CreateVM", pb.CreateVMRequest(id=sid))
    t["create_vm"] = time.perf_counter()
    await hv.call("StartVM", pb.StartVMRequest(id=sid))
    t["start_vm"] = time.perf_counter()
    client = await TtrpcClient.connect(f"unix://{resp.agentSocketPath}", timeout=30)
    try:
        await client.health.Check(health_pb2.CheckRequest(), timeout=60)
        t["check"] = time.perf_counter()
        await asyncio.sleep(idle)  # --idle: a runtime's own work before its first call
        await client.agent.CreateSandbox(
            agent_pb2.CreateSandboxRequest(hostname="pod", sandbox_id=sid), timeout=300
        )
        t["create_sandbox"] = time.perf_counter()
        await client.agent.GetGuestDetails(
            agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True), timeout=300
        )
        t["guest_details"] = time.perf_counter()
        spec = container_spec(f"{GUEST_SHARED}{cid}/rootfs", ["echo", "first output"])
        await client.agent.CreateContainer(
            agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec), timeout=300
        )
        t["create_container"] = time.perf_counter()
        await client.agent.StartContainer(
            agent_pb2.StartContainerRequest(container_id=cid), timeout=300
        )
        t["start_container"] = time.perf_counter()
        out = await client.agent.ReadStdout(
            agent_pb2.ReadStreamRequest(container_id=cid, exec_id=cid, len=4096), timeout=300
        )
        t["first_output"] = time.perf_counter()
        assert out.data.startswith(b"first output"), out.data
        await client.agent.WaitProcess(
            agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid), timeout=300
        )
        await client.agent.RemoveContainer(
            agent_pb2.RemoveContainerRequest(container_id=cid), timeout=300
        )
        with contextlib.suppress(RpcError):  # the reply races with the guest powering off
            await client.agent.DestroySandbox(agent_pb2.DestroySandboxRequest(), timeout=120)
    finally:
        await client.close()
    console_log = hv.state_dir / sid / "console.log"
    agent = agent_durations(await asyncio.to_thread(console_log.read_text, errors="replace"))
    await hv.call("StopVM", pb.StopVMRequest(id=sid))
    await asyncio.to_thread(shutil.rmtree, hv.shared_root / sid, True)
    result = {"total_s": t["first_output"] - t0}
    previous = t0
    for step in (
        "create_vm",
        "start_vm",
        "check",
        "create_sandbox",
        "guest_details",
        "create_container",
    ):
        result[f"host_{step}_ms"] = (t[step] - previous) * 1e3
        previous = t[step]
    result["host_create_sandbox_ms"] -= idle * 1e3  # --idle is nobody's work: not counted
    result["total_s"] -= idle
    result["host_start_container_ms"] = (t["start_container"] - t["create_container"]) * 1e3
    result["host_first_read_ms"] = (t["first_output"] - t["start_container"]) * 1e3
    result["start_vm_s"] = t["start_vm"] - t["create_vm"]
    result.update(agent)
    return result


def agent_durations(console_log: str) -> dict[str, float]:
    """The first call of each timed method, from the agent's "rpc" debug lines (duration_us)."""
    found: dict[str, float] = {}
    for line in console_log.splitlines():
        start = line.find("{")
        if start < 0:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if record.get("msg") == "phase 0 done" and record.get("held_request_ms") is not None:
            found["agent_phase0_held_ms"] = float(record["held_request_ms"])
        if record.get("msg") == "areas preloaded":
            found["agent_preload_ms"] = float(record["ms"])
        if record.get("msg") != "rpc":
            continue
        method = str(record.get("path", "")).rpartition("/")[2]
        key = f"agent_{method}_ms"
        if method in (*STEPS, "ReadStdout") and key not in found:
            found[key] = record["duration_us"] / 1e3
    return found


def summarise(rounds: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = sorted({k for r in rounds for k in r})
    out = {}
    for key in keys:
        values = [r[key] for r in rounds if key in r]
        digits = 2 if key.endswith("_s") else 1
        out[key] = {
            "median": round(statistics.median(values), digits),
            "min": round(min(values), digits),
            "max": round(max(values), digits),
        }
    return out


async def run(
    builds: list[Path],
    rounds: int,
    extra: list[str],
    idle: float = 0.0,
    append_b: tuple[str, ...] = (),
) -> dict[str, Any]:
    """``append_b``: kernel command line words for the second build's guests only."""
    labels, services = [], []
    for i, build in enumerate(builds):
        words = append_b if i == 1 else ()
        appended = [a for w in words for a in ("--append", w)]
        labels.append(" ".join((str(build), *words)))
        services.append(
            start_hv(
                build, "--keep-logs", "--log-rpc", "--append", "agent.log=debug", *appended, *extra
            )
        )
    results: dict[str, list[dict[str, float]]] = {label: [] for label in labels}
    try:
        for i in range(rounds):
            for label, hv in zip(labels, services, strict=True):
                r = await one_round(hv, idle)
                results[label].append(r)
                print(
                    f"round {i + 1} {label}: CreateVM to first output {r['total_s']:.2f} s "
                    f"(StartVM {r['start_vm_s']:.2f} s)",
                    file=sys.stderr,
                )
    finally:
        for hv in services:
            hv.stop()
            hv.remove()
    return {label: summarise(rs) for label, rs in results.items()}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument(
        "--build",
        type=Path,
        action="append",
        help="an image build dir (default build/); twice for A/B rounds",
    )
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--json", action="store_true", help="JSON only")
    p.add_argument(
        "--idle",
        type=float,
        default=0.0,
        help="seconds between the first Check and CreateSandbox (a runtime's own work there; "
        "not counted in the figures): the agent's time to preload",
    )
    p.add_argument(
        "--append-b",
        action="append",
        default=[],
        metavar="WORD",
        help="a guest kernel command line word for the second --build only (the same build twice "
        "with --append-b agent.preload_areas=none: with and without the preload)",
    )
    p.add_argument("--hv-arg", action="append", default=[], help="extra kata-agent-hv argument")
    args = p.parse_args()
    builds = [b.absolute() for b in (args.build or [REPO / "build"])]
    if args.append_b and len(builds) != 2:
        print("error: --append-b needs two --build", file=sys.stderr)
        return 1
    for build in builds:
        if not (build / "image.json").is_file():
            print(f"error: {build}/image.json missing (run `make initrd`)", file=sys.stderr)
            return 1
    load = os.getloadavg()
    report = asyncio.run(run(builds, args.rounds, args.hv_arg, args.idle, tuple(args.append_b)))
    uptime = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout
    report_all: dict[str, Any] = {
        "load_before": [round(x, 2) for x in load],
        "uptime_after": uptime.strip(),
        "rounds": args.rounds,
        "builds": report,
    }
    if args.json:
        print(json.dumps(report_all, indent=1))
        return 0
    print(f"load before: {report_all['load_before']}; after: {report_all['uptime_after']}")
    for build, summary in report.items():
        print(f"\n{build} ({args.rounds} rounds; median (min-max))")
        for key, v in summary.items():
            print(f"  {key:32} {v['median']:>10} ({v['min']}-{v['max']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
