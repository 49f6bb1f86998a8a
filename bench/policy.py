"""Agent policy benchmark: what a policy costs the agent, without an agent (agent.policy).

Run: ``.venv/bin/python bench/policy.py [--policy FILE] [-n N]`` (needs ``kata-agent-py[policy]``).

The default policy is ``tests/support/policies/genpolicy-style.rego``, written in the manner of the
policies Kata's genpolicy generates (a pod's containers described in ``policy_data``, the OCI
process, mounts, annotations and storages of CreateContainer checked against them, the policy
state recording each container for ExecProcess, CopyFile paths, ReadStream by request default).
Each decision is timed the way the agent takes it (``PolicyPoint.decide``: the request serialised
as the Rust agent does, the engine's answer, AllowRequestsFailingPolicy, the decision log):

* load: compiling the policy (as SetPolicy does, after the same compile in a child process, also
  timed) and a state change (a new data document: the policy is compiled again);
* CreateContainer: a container of the pod, never cached (target <= 5 ms), with its parts: the
  policy input (serialisation) and the engine (input set and evaluation);
* ExecProcess: distinct requests (evaluated) and the same request again (cached);
* CopyFile, ReadStream: ReadStream as the genpolicy-style policy has it (a constant answer, decided
  at load) and as ``read-stream.rego`` has it (input-dependent: the same request each time, as a
  ReadStdout loop asks, cached; and distinct ones, evaluated).

Prints the median and p99 wall time of each and its median CPU time (the figure that holds on a
machine busy with other work). bench/lifecycle.py measures the same policies
end to end (``--policy``, ``--compare-policy``).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ctl.container_spec import container_spec, exec_process  # noqa: E402
from agent.policy import check  # noqa: E402
from agent.policy.engine import CompiledPolicy  # noqa: E402
from agent.policy.point import INITIAL_DATA, PolicyPoint  # noqa: E402
from agent.policy.serialize import request_input  # noqa: E402
from agent.rpc.pb import agent_pb2  # noqa: E402
from tests.support.policy import GENPOLICY_STYLE, POLICIES, pod_annotations  # noqa: E402

RESOLV = (
    "/run/kata-containers/shared/containers/"
    "81e5f43bc8599c5661e66f959ac28df5bfb30da23c5d583f2dcc6f9e0c5186dc-ce23cfeb91e75aaa-resolv.conf"
)


Timings = tuple[list[float], list[float]]  # wall and this thread's CPU time, microseconds


def timed(fn: Callable[[int], object], n: int) -> Timings:
    """``fn(i)`` for i in range(n), each timed (after 5 warm-up calls)."""
    for i in range(5):
        fn(n + i)
    wall, cpu = [], []
    for i in range(n):
        t0, c0 = time.perf_counter(), time.thread_time()
        fn(i)
        wall.append((time.perf_counter() - t0) * 1e6)
        cpu.append((time.thread_time() - c0) * 1e6)
    return wall, cpu


def report(name: str, times: Timings, target: str = "") -> None:
    """Median and p99 of the wall time, and the median CPU time: on a machine shared with other
    work the wall time includes waiting for a CPU, the CPU time does not."""
    wall, cpu = times
    ordered = sorted(wall)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    unit, scale = ("ms", 1e-3) if statistics.median(wall) >= 1000 else ("us", 1.0)
    extra = f", target {target}" if target else ""
    print(
        f"{name:<52} median {statistics.median(wall) * scale:8.2f} {unit}   "
        f"p99 {p99 * scale:8.2f} {unit}   CPU {statistics.median(cpu) * scale:8.2f} {unit}   "
        f"(n={len(wall)}{extra})"
    )


def point_with(policy: CompiledPolicy) -> PolicyPoint:
    point = PolicyPoint()
    point.install(policy, source="bench")
    return point


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--policy", type=Path, default=GENPOLICY_STYLE)
    p.add_argument("-n", type=int, default=300, help="decisions per figure")
    args = p.parse_args()
    n = args.n
    text = args.policy.read_text()
    print(f"policy bench: {args.policy} ({len(text.splitlines())} lines), load {os.getloadavg()}")

    t0 = time.perf_counter()
    done = subprocess.run(check.command(), input=text.encode(), capture_output=True, check=False)
    child_ms = (time.perf_counter() - t0) * 1000
    assert done.returncode == 0, done.stdout
    entrypoints = PolicyPoint().entrypoints()
    report(
        "load: compile + plan analysis + constant answers",
        timed(lambda i: CompiledPolicy(text, INITIAL_DATA, entrypoints), 5),
    )
    policy = CompiledPolicy(text, INITIAL_DATA, entrypoints)
    print(f"{'load: the same in a child process (SetPolicy)':<52} {child_ms:8.1f} ms (once)")
    constant = sorted(e for e in policy.entrypoints if policy.constant(e) is not None)
    print(f"{'':<52} {len(constant)} of {len(policy.entrypoints)} answers constant")

    point = point_with(policy)
    rootfs = "/tmp/kag-bench-abc123/rootfs"

    def create(i: int) -> agent_pb2.CreateContainerRequest:
        spec = container_spec(rootfs, ["sleep", "1000000"], annotations=pod_annotations("box"))
        return agent_pb2.CreateContainerRequest(container_id=f"c{i}", exec_id=f"c{i}", OCI=spec)

    creates = [create(i) for i in range(n + 5)]
    decision = point.decide("CreateContainerRequest", creates[0])
    print(f"{'':<52} CreateContainer allowed: {decision.allowed} {decision.message}")
    report(
        "CreateContainer decision",
        timed(lambda i: point.decide("CreateContainerRequest", creates[i]), n),
        "<= 5 ms",
    )
    report("  of which: the policy input", timed(lambda i: request_input(creates[i]), n))
    inputs = [request_input(r) for r in creates]
    report(
        "  of which: the engine (input and evaluation)",
        timed(lambda i: policy.decide("CreateContainerRequest", lambda: inputs[i]), n),
    )

    answer = point._check("CreateContainerRequest", creates[0])
    data = point._patched("CreateContainerRequest", answer)
    report("state change: the policy with new data", timed(lambda i: policy.with_data(data), 10))
    point = point_with(policy.with_data(data))

    def exec_req(i: int) -> agent_pb2.ExecProcessRequest:
        process = exec_process(["echo", "x"])
        return agent_pb2.ExecProcessRequest(container_id="c0", exec_id=f"e{i}", process=process)

    execs = [exec_req(i) for i in range(n + 5)]
    assert point.decide("ExecProcessRequest", execs[0]).allowed
    report(
        "ExecProcess decision, distinct requests",
        timed(lambda i: point.decide("ExecProcessRequest", execs[i]), n),
    )
    report(
        "ExecProcess decision, the same request (cached)",
        timed(lambda i: point.decide("ExecProcessRequest", execs[0]), n),
    )
    copies = [
        agent_pb2.CopyFileRequest(path=f"{RESOLV}{i}", file_mode=0o100644, file_size=3, data=b"x")
        for i in range(n + 5)
    ]
    assert point.decide("CopyFileRequest", copies[0]).allowed
    report("CopyFile decision", timed(lambda i: point.decide("CopyFileRequest", copies[i]), n))

    read = agent_pb2.ReadStreamRequest(container_id="c0", exec_id="c0", len=32768)
    source = policy.constant("ReadStreamRequest")
    label = "constant" if source is not None else "evaluated"
    report(
        f"ReadStream decision ({label}, this policy)",
        timed(lambda i: point.decide("ReadStreamRequest", read), n * 10),
    )
    dynamic = point_with(
        CompiledPolicy(
            (POLICIES / "read-stream.rego").read_text(),
            INITIAL_DATA,
            PolicyPoint().entrypoints(),
        )
    )
    report(
        "ReadStream decision, input-dependent rule, cached",
        timed(lambda i: dynamic.decide("ReadStreamRequest", read), n * 10),
    )
    reads = [
        agent_pb2.ReadStreamRequest(container_id="c0", exec_id=f"e{i}", len=32768)
        for i in range(n + 5)
    ]
    report(
        "ReadStream decision, input-dependent rule, evaluated",
        timed(lambda i: dynamic.decide("ReadStreamRequest", reads[i]), n),
    )


if __name__ == "__main__":
    main()
