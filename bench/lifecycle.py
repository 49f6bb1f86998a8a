"""Lifecycle benchmark: a real agent (private mount namespace, temp state dirs) over ttrpc.

Run as root on the host: ``.venv/bin/python bench/lifecycle.py [--runs N] [--execs N]``.

1. Container cycle: CreateContainer + StartContainer + WaitProcess + RemoveContainer of a busybox
   ``true`` (the shim's sequence; its outputs are read to EOF before the wait, as the shim does).
   Target: median <= 30 ms.
2. Exec latency: ExecProcess of ``echo x`` in a running container, timed to the first byte
   returned by ReadStdout (the read is issued as soon as ExecProcess returns, as the shim does).
   Target: median <= 10 ms.
3. ReadStdout throughput: a container writes 256 MiB to stdout (``dd bs=1M``: busybox's
   ``head -c`` is slower than the target); the client reads it with the shim's ``len`` of
   32 KiB (and with 1 MiB for comparison), ``--throughput-runs`` times (3; the median run is
   printed, then every run). Target: >= 300 MiB/s. Also printed: the CPU time the
   agent and this client spent per MiB (load-independent, unlike the rate on a shared machine),
   the number of replies and their mean size.

The client (this process) stands in for the Go shim: it runs on uvloop (``--asyncio-loop`` for
asyncio's own loop) and with glibc malloc told not to mmap/unmap every 1 MiB reply buffer
(``--no-tune-malloc`` to leave it): with fresh pages for each reply the page faults cost this
Python client more than the copies, a cost the shim's allocator does not have. Phase 3 reads with
`ShimStreamReader`, a lean synchronous client on its own connection: the shim's ``io.Copy`` costs a
few microseconds of Go per ReadStdout, an asyncio client far more Python than the agent spends,
which made phase 3 measure the client more than the agent (docs/performance.md). It still does
what the shim does (one ReadStdout of ``len`` at a time, the next sent when the reply is in;
ReadStderr parked meanwhile; every reply decoded with protobuf, its status checked, its bytes
counted; see its docstring).

``--cpu N`` pins this client and the agent, and so the container processes (they inherit the
agent's affinity), to CPU N, as ``bench/rpc.py --cpu`` does. On a VM whose idle vCPUs halt, each
wake-up of a process on the other, idle CPU costs the waker: phase 3 unpinned pays two per
ReadStdout (client -> agent -> client) plus one per 64 KiB (agent -> writer), which inflates the
agent's CPU per MiB and lowers the rate (docs/performance.md). Pinned, the figure is the agent's
own path; one CPU is also what Kata's default guest has (``default_vcpus = 1``: agent and
container share it). Run both ways and report both.

The agent's run dir (bundles, engine state) is on tmpfs (/dev/shm), as /run/kata-containers is in
the guest; ``--disk-run-dir`` keeps the test support's default on /tmp.

Agent policy (agent.policy): ``--policy FILE`` sets FILE with SetPolicy before CreateSandbox, as
the shim does; ``--pod-annotations`` gives each container the CRI annotations of a Kubernetes pod
(``tests/support/policy.py``), which ``tests/support/policies/genpolicy-style.rego`` (the realistic
policy) checks. ``--compare-policy FILE`` runs phases 1 and 2 on two agents at once, one without
a policy and one with FILE, interleaved in rounds (the order swapped each round), and prints both
medians and their ratio: the cost of the policy on a shared machine whose speed drifts. Target
with the allow-all policy: cycle and exec within +5% of no policy.

Prints median and p99 (and min) per phase. Keep runs short while developing (``--quick``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ctl.container_spec import container_spec, exec_process  # noqa: E402
from agent.rpc import framing  # noqa: E402
from agent.rpc.pb import agent_pb2, oci_pb2, request_pb2  # noqa: E402
from tests.support.agent import AgentProcess, remove_workdir, start_agent  # noqa: E402
from tests.support.policy import pod_annotations  # noqa: E402
from tests.support.rootfs import make_busybox_rootfs  # noqa: E402

PRIVATE_MNT = ["unshare", "--mount", "--propagation", "private"]
SHM = "/dev/shm"


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def report(name: str, ms: list[float], target: str) -> None:
    print(
        f"{name:<44} median {statistics.median(ms):7.2f} ms   p99 {pct(ms, 99):7.2f} ms   "
        f"min {min(ms):6.2f} ms   (n={len(ms)}, target {target})"
    )


async def drain(
    a: object, cid: str, eid: str, method: str, length: int = 32768, calls: list[int] | None = None
) -> int:
    call = getattr(a, method)
    total = 0
    while True:
        resp = await call(agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=length))
        if calls is not None:
            calls.append(len(resp.data))
        if not resp.data:
            return total
        total += len(resp.data)


Spec = Callable[[str, list[str], str], oci_pb2.Spec]


def spec_maker(rootfs: Path, cg: str, pod: bool) -> Spec:
    """The spec of a container (``name``: its container name in the pod, for the annotations)."""

    def spec(cid: str, argv: list[str], name: str) -> oci_pb2.Spec:
        annotations = pod_annotations(name) if pod else None
        return container_spec(
            str(rootfs), argv, cgroups_path=f"/{cg}/{cid}", annotations=annotations
        )

    return spec


async def start_sandbox(a: Any, policy: str | None) -> None:
    """SetPolicy (when given) then CreateSandbox, in the shim's order."""
    if policy is not None:
        await a.SetPolicy(agent_pb2.SetPolicyRequest(policy=policy), timeout=120)
    await a.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="bench", sandbox_id="b"))


async def cycles(a: Any, spec: Spec, first: int, n: int) -> list[float]:
    """Phase 1: ``n`` container cycles (ids run<first>...), each timed in ms."""
    times = []
    for i in range(first, first + n):
        cid = f"run{i}"
        t0 = time.perf_counter()
        await a.CreateContainer(
            agent_pb2.CreateContainerRequest(
                container_id=cid, exec_id=cid, OCI=spec(cid, ["true"], "cycle")
            )
        )
        await a.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
        await asyncio.gather(drain(a, cid, cid, "ReadStdout"), drain(a, cid, cid, "ReadStderr"))
        await a.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
        await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid))
        times.append((time.perf_counter() - t0) * 1000)
    return times


async def start_box(a: Any, spec: Spec) -> None:
    await a.CreateContainer(
        agent_pb2.CreateContainerRequest(
            container_id="box", exec_id="box", OCI=spec("box", ["sleep", "1000000"], "box")
        )
    )
    await a.StartContainer(agent_pb2.StartContainerRequest(container_id="box"))


async def execs(a: Any, first: int, n: int) -> list[float]:
    """Phase 2: ``n`` execs in "box" (ids e<first>...), each timed to the first byte in ms."""
    times = []
    for i in range(first, first + n):
        eid = f"e{i}"
        t0 = time.perf_counter()
        await a.ExecProcess(
            agent_pb2.ExecProcessRequest(
                container_id="box", exec_id=eid, process=exec_process(["echo", "x"])
            )
        )
        err = asyncio.create_task(drain(a, "box", eid, "ReadStderr"))
        resp = await a.ReadStdout(
            agent_pb2.ReadStreamRequest(container_id="box", exec_id=eid, len=32768)
        )
        t1 = time.perf_counter()
        assert resp.data == b"x\n", resp.data
        await drain(a, "box", eid, "ReadStdout")
        await err
        await a.WaitProcess(agent_pb2.WaitProcessRequest(container_id="box", exec_id=eid))
        times.append((t1 - t0) * 1000)
    return times


async def stop_box(a: Any) -> None:
    await a.SignalProcess(agent_pb2.SignalProcessRequest(container_id="box", exec_id="", signal=9))
    await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="box"))


def start_bench_agent(args: argparse.Namespace) -> tuple[AgentProcess, Path | None]:
    extra = ["--container-pipe-size", str(args.pipe_size)] if args.pipe_size else []
    # In the guest the state root /run/kata-containers is on tmpfs: put it on tmpfs here too
    # (the test support's default is on /tmp, a disk here: slower per bundle).
    run_dir = None if args.disk_run_dir else Path(tempfile.mkdtemp(prefix="kag-bench-", dir=SHM))
    if run_dir is not None:
        extra += ["--run-dir", str(run_dir)]
    return start_agent(prefix=PRIVATE_MNT, log_level=args.log_level, args=extra), run_dir


async def bench(args: argparse.Namespace) -> None:
    agent, run_dir = start_bench_agent(args)
    tmp = Path(tempfile.mkdtemp(prefix="kag-bench-"))
    rootfs = make_busybox_rootfs(tmp / "rootfs")
    cg = f"kag-bench-{uuid.uuid4().hex[:8]}"
    try:
        async with await agent.client() as c:
            a = c.agent
            await start_sandbox(a, args.policy.read_text() if args.policy else None)
            spec = spec_maker(rootfs, cg, args.pod_annotations)

            # 1. container cycle
            n = 0 if args.only_throughput else args.warmup + args.runs
            cpu0 = tree_cpu_seconds(agent.pid), time.process_time()
            cycle = (await cycles(a, spec, 0, n))[args.warmup :]
            cycle_cpu = per_op_cpu(cpu0, agent.pid, n)

            # 2. exec to first byte
            await start_box(a, spec)
            n = 0 if args.only_throughput else args.warmup + args.execs
            cpu0 = tree_cpu_seconds(agent.pid), time.process_time()
            first_byte = (await execs(a, 0, n))[args.warmup :]
            exec_cpu = per_op_cpu(cpu0, agent.pid, n)

            # 3. ReadStdout throughput
            size = args.mib << 20
            mib = size / (1 << 20)
            rates: dict[int, list[float]] = {}
            cpu: dict[int, list[tuple[float, float]]] = {}
            replies: dict[int, list[tuple[int, float]]] = {}
            reader = ShimStreamReader(agent.address)
            for length in (32768, 1 << 20):
                for run in range(args.throughput_runs):
                    cid = f"big{length}-{run}"
                    argv = [
                        "dd",
                        "if=/dev/zero",
                        f"bs={args.bs}K",
                        f"count={size // (args.bs << 10)}",
                    ]
                    await a.CreateContainer(
                        agent_pb2.CreateContainerRequest(
                            container_id=cid, exec_id=cid, OCI=spec(cid, argv, "big")
                        )
                    )
                    await a.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
                    t0 = time.perf_counter()
                    c0, a0 = time.process_time(), cpu_seconds(agent.pid)
                    got, sizes = reader.copy(cid, cid, length)  # blocks the loop: nothing else runs
                    dt = time.perf_counter() - t0
                    cpu.setdefault(length, []).append(
                        (
                            (cpu_seconds(agent.pid) - a0) * 1000 / mib,
                            (time.process_time() - c0) * 1000 / mib,
                        )
                    )
                    replies.setdefault(length, []).append(
                        (len(sizes), statistics.mean(sizes) / 1024)
                    )
                    assert got == size, (got, size)
                    await a.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
                    await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid))
                    rates.setdefault(length, []).append(size / dt / (1 << 20))

            reader.close()
            await stop_box(a)

        policy = f", policy {args.policy}" if args.policy else ""
        print(
            f"lifecycle bench (agent pid {agent.pid}, {args.runs} cycles, {args.execs} execs"
            f"{policy})"
        )
        if cycle:
            report("Create+Start+Wait+Remove (busybox true)", cycle, "<= 30 ms")
            print(f"{'':<44} CPU per cycle: {cycle_cpu}")
            report("ExecProcess to first output byte", first_byte, "<= 10 ms")
            print(f"{'':<44} CPU per exec (to EOF and wait): {exec_cpu}")
        for length, runs in rates.items():
            i = runs.index(statistics.median_low(runs))  # the median run's CPU and replies
            print(
                f"{'ReadStdout throughput, len=' + str(length):<44} {runs[i]:7.1f} MiB/s "
                f"({args.mib} MiB, pipe {args.pipe_size or 'default'}, "
                f"{cpus_label()}; target >= 300 MiB/s)"
            )
            print(
                f"{'':<44} CPU per MiB: agent {cpu[length][i][0]:.2f} ms, "
                f"client {cpu[length][i][1]:.2f} ms; {replies[length][i][0]} replies, "
                f"mean {replies[length][i][1]:.1f} KiB"
            )
            if len(runs) > 1:
                each = ", ".join(
                    f"{r:.1f} (agent {c[0]:.2f} ms/MiB)"
                    for r, c in zip(runs, cpu[length], strict=True)
                )
                print(f"{'':<44} median of {len(runs)} runs: {each}")
    finally:
        agent.stop()
        if args.keep_log:
            import shutil as _sh

            _sh.copy(agent.log_path, "/tmp/lifecycle-bench-agent.log")
            print("agent log: /tmp/lifecycle-bench-agent.log")
        remove_workdir(agent.workdir)
        import shutil

        shutil.rmtree(tmp, ignore_errors=True)
        if run_dir is not None:
            shutil.rmtree(run_dir, ignore_errors=True)
        remove_cgroups(cg)


async def compare(args: argparse.Namespace) -> None:
    """Phases 1 and 2 on an agent without a policy (A) and one with ``--compare-policy`` (B),
    interleaved in rounds."""
    agents = [start_bench_agent(args), start_bench_agent(args)]
    tmp = Path(tempfile.mkdtemp(prefix="kag-bench-"))
    rootfs = make_busybox_rootfs(tmp / "rootfs")
    cgs = [f"kag-bench-{uuid.uuid4().hex[:8]}" for _ in agents]
    per_round_cycles = max(1, args.runs // args.rounds)
    per_round_execs = max(1, args.execs // args.rounds)
    results: list[dict[str, list[float]]] = [{"cycle": [], "exec": []} for _ in agents]
    try:
        clients = [await agent.client() for agent, _ in agents]
        specs = [spec_maker(rootfs, cg, args.pod_annotations) for cg in cgs]
        policy = args.compare_policy.read_text()
        for i, client in enumerate(clients):
            await start_sandbox(client.agent, policy if i else None)
            await cycles(client.agent, specs[i], 10_000, args.warmup)
            await start_box(client.agent, specs[i])
            await execs(client.agent, 10_000, args.warmup)
        for r in range(args.rounds):
            order = (0, 1) if r % 2 == 0 else (1, 0)
            for i in order:
                a = clients[i].agent
                results[i]["cycle"] += await cycles(
                    a, specs[i], r * per_round_cycles, per_round_cycles
                )
                results[i]["exec"] += await execs(a, r * per_round_execs, per_round_execs)
        for client in clients:
            await stop_box(client.agent)
            await client.close()
    finally:
        import shutil

        for (agent, run_dir), cg in zip(agents, cgs, strict=True):
            agent.stop()
            remove_workdir(agent.workdir)
            if run_dir is not None:
                shutil.rmtree(run_dir, ignore_errors=True)
            remove_cgroups(cg)
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        f"policy A/B: A no policy, B {args.compare_policy}; {args.rounds} interleaved rounds, "
        f"{per_round_cycles} cycles and {per_round_execs} execs per round and agent"
    )
    for phase, label in (
        ("cycle", "Create+Start+Wait+Remove"),
        ("exec", "ExecProcess to first byte"),
    ):
        a_ms = statistics.median(results[0][phase])
        b_ms = statistics.median(results[1][phase])
        print(
            f"{label:<44} median A {a_ms:7.2f} ms   B {b_ms:7.2f} ms   B/A {b_ms / a_ms:5.3f}   "
            f"(n={len(results[1][phase])}, target B/A <= 1.05)"
        )


class ShimStreamReader:
    """A lean synchronous ttrpc client for the throughput phase, standing in for the Go shim.

    The shim copies a process's output with ``io.Copy`` (a 32 KiB buffer): one ReadStdout of
    ``len`` 32768 at a time per stream, the next sent when the previous reply is in; its per-call
    cost is a few microseconds of Go. An asyncio client spends more Python per call than the
    agent's own time, so the rate would measure the client. This one does what the shim
    does with as little Python as it takes: a blocking unix socket, request frames built from a
    serialized ``ttrpc.Request`` (stream ids odd and increasing), replies received with
    ``recv_into`` into one reused buffer, each reply decoded with protobuf (``ttrpc.Response``,
    then ``ReadStreamResponse``: the two copies ``proto.Unmarshal`` makes in the shim), its status
    checked and its bytes counted. ReadStderr is parked at the same time, as the shim's stderr
    goroutine does, and re-sent after each non-empty reply.
    """

    def __init__(self, address: str) -> None:
        import socket

        assert address.startswith("unix://"), address
        path = address[len("unix://") :]
        self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._sock.connect("\0" + path[1:] if path.startswith("@") else path)
        self._buf = bytearray(framing.MAX_MESSAGE + framing.HEADER_SIZE)
        self._view = memoryview(self._buf)
        self._start = self._end = 0
        self._next_id = 1
        self._requests: dict[tuple[str, str, str, int], bytes] = {}

    def close(self) -> None:
        self._view.release()
        self._sock.close()

    def send(self, method: str, cid: str, eid: str, length: int) -> int:
        key = (method, cid, eid, length)
        body = self._requests.get(key)
        if body is None:  # the shim's ttrpc client marshals the same bytes every call
            payload = agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=length)
            body = self._requests[key] = request_pb2.Request(
                service="grpc.AgentService", method=method, payload=payload.SerializeToString()
            ).SerializeToString()
        sid, self._next_id = self._next_id, self._next_id + 2
        self._sock.sendall(framing.encode(sid, framing.TYPE_REQUEST, body))
        return sid

    def receive(self) -> tuple[int, bytes]:
        """The next reply frame: (stream id, ReadStreamResponse.data)."""
        head = framing.HEADER_SIZE
        while True:
            avail = self._end - self._start
            if avail >= head:
                length, sid, typ, _ = framing.HEADER.unpack_from(self._buf, self._start)
                if avail >= head + length:
                    body = self._view[self._start + head : self._start + head + length]
                    self._start += head + length
                    if self._start == self._end:
                        self._start = self._end = 0
                    assert typ == framing.TYPE_RESPONSE, typ
                    resp = request_pb2.Response.FromString(body)  # type: ignore[arg-type]
                    if resp.status.code:
                        raise RuntimeError(f"stream {sid}: {resp.status.message}")
                    return sid, agent_pb2.ReadStreamResponse.FromString(resp.payload).data
            if self._start and len(self._buf) - self._end < framing.MAX_MESSAGE:
                self._buf[: self._end - self._start] = self._buf[self._start : self._end]
                self._end -= self._start
                self._start = 0
            n = self._sock.recv_into(self._view[self._end :])
            if not n:
                raise ConnectionError("the agent closed the connection")
            self._end += n

    def copy(self, cid: str, eid: str, length: int) -> tuple[int, list[int]]:
        """Read stdout to EOF with ``length`` per call while stderr is parked; (bytes, reply
        sizes)."""
        out = self.send("ReadStdout", cid, eid, length)
        err = self.send("ReadStderr", cid, eid, 32768)
        total = 0
        sizes: list[int] = []
        while out or err:
            sid, data = self.receive()
            if sid == out:
                sizes.append(len(data))
                total += len(data)
                out = self.send("ReadStdout", cid, eid, length) if data else 0
            elif sid == err:
                err = self.send("ReadStderr", cid, eid, 32768) if data else 0
            else:
                raise RuntimeError(f"reply on unexpected stream {sid}")
        return total, sizes


def cpus_label() -> str:
    """The CPUs this process (and so the agent) may run on (``--cpu``, taskset), or unpinned."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) >= (os.cpu_count() or 1):
        return "unpinned"
    return f"CPU {','.join(map(str, cpus))}"


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def tree_cpu_seconds(agent_pid: int) -> float:
    """CPU time of the agent and everything it started: its own, its reaped children's (the
    container processes it adopts), and its live children's with theirs (the engine spawner,
    which reaps its workers, which reap stage-1). Load-independent, unlike wall time."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    kids = Path(f"/proc/{agent_pid}/task/{agent_pid}/children").read_text().split()
    for pid in [agent_pid, *(int(k) for k in kids)]:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        total += sum(int(f) for f in fields[11:15]) / tick  # utime stime cutime cstime
    return total


def per_op_cpu(start: tuple[float, float], agent_pid: int, n: int) -> str:
    agent_s = tree_cpu_seconds(agent_pid) - start[0]
    client_s = time.process_time() - start[1]
    return (
        f"agent+engine+containers {agent_s * 1000 / max(n, 1):.2f} ms, "
        f"client {client_s * 1000 / max(n, 1):.2f} ms"
    )


def remove_cgroups(name: str) -> None:
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / name
        if d.is_dir():
            for sub in sorted(d.glob("*"), reverse=True):
                if sub.is_dir():
                    sub.rmdir()
            d.rmdir()


def tune_malloc() -> None:
    """Keep glibc from serving (and returning) every 1 MiB reply buffer with a fresh mmap: the
    page faults on fresh memory cost this Python client more than the copies themselves. The
    client stands in for the Go shim, whose allocator reuses its memory (module docstring)."""
    import ctypes

    libc = ctypes.CDLL(None)
    m_trim_threshold, m_mmap_threshold = -1, -3
    libc.mallopt(m_mmap_threshold, 8 << 20)
    libc.mallopt(m_trim_threshold, 16 << 20)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--execs", type=int, default=200)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--mib", type=int, default=256)
    p.add_argument("--quick", action="store_true", help="10 cycles, 20 execs, 64 MiB")
    p.add_argument("--log-level", default="warn", help="the agent's log level")
    p.add_argument(
        "--pipe-size", type=int, default=0, help="agent.container_pipe_size (0: the default)"
    )
    p.add_argument("--only-throughput", action="store_true", help="skip phases 1 and 2")
    p.add_argument("--bs", type=int, default=1024, help="the writer's block size in KiB")
    p.add_argument(
        "--cpu", type=int, help="pin this client, the agent and its containers to this CPU"
    )
    p.add_argument(
        "--throughput-runs", type=int, default=3, help="runs per len in phase 3 (the median)"
    )
    p.add_argument("--keep-log", action="store_true", help="print the agent's log path")
    p.add_argument(
        "--no-tune-malloc", action="store_true", help="leave the client's glibc malloc as it is"
    )
    p.add_argument(
        "--asyncio-loop",
        action="store_true",
        help="run the client on asyncio's default loop instead of uvloop (as the agent uses)",
    )
    p.add_argument("--policy", type=Path, help="set this agent policy (SetPolicy) first")
    p.add_argument(
        "--pod-annotations",
        action="store_true",
        help="CRI pod annotations on each container (tests/support/policies/genpolicy-style.rego)",
    )
    p.add_argument(
        "--compare-policy",
        type=Path,
        metavar="FILE",
        help="phases 1-2 on agents without and with this policy, interleaved (A/B)",
    )
    p.add_argument("--rounds", type=int, default=10, help="rounds of --compare-policy")
    p.add_argument(
        "--disk-run-dir",
        action="store_true",
        help="keep the agent's run dir on /tmp (disk) instead of tmpfs like the guest's /run",
    )
    args = p.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})  # inherited by the agent and its children
    if not args.no_tune_malloc:
        tune_malloc()
    if args.quick:
        args.runs, args.execs, args.mib = 10, 20, 64
    factory = None
    if not args.asyncio_loop:
        try:
            import uvloop

            factory = uvloop.new_event_loop
        except ImportError:
            pass
    with asyncio.Runner(loop_factory=factory) as runner:
        runner.run(compare(args) if args.compare_policy else bench(args))


if __name__ == "__main__":
    main()
