"""RPC benchmarks of the agent: start-up, Check latency, throughput, idle RSS.

    .venv/bin/python bench/rpc.py [--calls 10000] [--starts 10] [--duration 3] [--json]

Each figure is measured against a real agent process (``python -m agent``) on a unix socket, with
a minimal blocking client (pre-encoded frames, no asyncio and no protobuf on the client's hot
path) so the numbers are the agent's, not the client's:

* start-up: from just before ``Popen`` to the first Health.Check reply (the client polls
  connect + Check every 0.5 ms), median and best of ``--starts`` runs; also the time until the
  AgentService answers (two-phase start-up), and, for context, the interpreter floor
  (``python -c 'import asyncio, uvloop'``) measured at the same moment;
* Check round trip: ``--calls`` sequential calls on one connection (after 500 warm-up calls),
  p50/p90/p99/max;
* throughput: 8 concurrent callers for ``--duration`` seconds, both as 8 requests in flight on
  one connection (as the shim multiplexes) and as 8 connections with one request each;
* idle RSS: VmRSS of the agent (what ``ps`` shows, the figure the target is about) after start-up
  has completed (AgentService answers), the runs above, and 2 s idle; for context also its Pss
  (shared library pages divided among the processes mapping them);
* first call of a lazily loaded area: an AgentService area's modules are imported on its first
  call (``agent.rpc.lazy_servicer``); GetGuestDetails' first and second round trip, measured on a
  fresh agent after the idle figure.

Targets (issue 2): start-up <= 80 ms, p50 <= 60 us, p99 <= 300 us, idle RSS <= 25 MiB.

``--preload [AREAS]`` measures instead what loading AgentService areas in the background costs
(``agent.preload_areas``, default ``all``), against an agent that loads them on first call, the
two started alternately for ``--rounds`` rounds: Check round trips on one connection during the
``--window`` seconds after AgentService answers (when the preload runs in a worker thread and
shares the GIL with the loop: p50, p99, max and the call count), the idle RSS 2 s later, then
the first GetGuestDetails.

``--cpu N`` pins the client and the agent (which inherits the affinity) to CPU N. A sequential
round trip between two processes on two CPUs pays two cross-CPU wake-ups; on an idle VM whose
guest halt-polling is off each costs a vCPU exit and re-entry, which moves the Check p50 by a
large factor (docs/performance.md). Pinning measures the agent's own path; run both ways and
report both.
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import signal
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
HEADER = struct.Struct(">IIBB")
CHECK_BODY = b"\x0a\x0bgrpc.Health\x12\x05Check"
PROBE_BODY = b"\x0a\x11grpc.AgentService\x12\x0f__ready_probe__"
CHECK_REPLY = bytes.fromhex("0a0012020801")
# the interpreter floor: asyncio and uvloop (where installed), nothing of the agent
FLOOR = "import asyncio\ntry:\n    import uvloop\nexcept ImportError:\n    pass"
GUEST_DETAILS_BODY = b"\x0a\x11grpc.AgentService\x12\x0fGetGuestDetails"


def frame(stream_id: int, body: bytes) -> bytes:
    return HEADER.pack(len(body), stream_id, 1, 0) + body


def recv_frame(sock: socket.socket) -> tuple[int, bytes]:
    head = recv_exactly(sock, 10)
    length, sid, _, _ = HEADER.unpack(head)
    return sid, recv_exactly(sock, length)


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("agent closed the connection")
        buf += chunk
    return bytes(buf)


def try_call(path: str, body: bytes) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(5)
        try:
            sock.connect(path)
            sock.sendall(frame(1, body))
            recv_frame(sock)
        except OSError:
            return False
    return True


class Agent:
    def __init__(self, workdir: Path, extra: list[str] | None = None) -> None:
        self.sock = str(workdir / "agent.sock")
        argv = [
            sys.executable,
            "-m",
            "agent",
            "--server-addr",
            f"unix://{self.sock}",
            "--cmdline-file",
            "none",
            "--run-dir",
            str(workdir / "run"),
            "--sandbox-ns-dir",
            str(workdir / "ns"),
            "--log-level",
            "warn",
            *(extra or []),
        ]
        self.t0 = time.perf_counter()
        self.proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )

    def wait_for(self, body: bytes, timeout: float = 60) -> float:
        """Seconds from spawn until a call with ``body`` is answered."""
        deadline = time.monotonic() + timeout
        while not try_call(self.sock, body):
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}")
            if time.monotonic() > deadline:
                raise TimeoutError("agent did not answer")
            time.sleep(0.0005)
        return time.perf_counter() - self.t0

    def rss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def pss_kib(self) -> int:
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
        raise RuntimeError("no Pss")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def bench_startup(runs: int) -> dict[str, float]:
    first_check, agent_ready = [], []
    for _ in range(runs):
        workdir = Path(tempfile.mkdtemp(prefix="kab-", dir="/tmp"))
        agent = Agent(workdir)
        try:
            first_check.append(agent.wait_for(CHECK_BODY) * 1000)
            agent_ready.append(agent.wait_for(PROBE_BODY) * 1000)
        finally:
            agent.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    floor = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", FLOOR], check=True)
        floor.append((time.perf_counter() - t0) * 1000)
    return {
        "first_check_ms_median": statistics.median(first_check),
        "first_check_ms_best": min(first_check),
        "agent_service_ready_ms_median": statistics.median(agent_ready),
        "python_import_asyncio_uvloop_ms_median": statistics.median(floor),
    }


def bench_latency(path: str, calls: int) -> dict[str, float]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sid = 1
    samples = []
    for i in range(500 + calls):
        data = frame(sid, CHECK_BODY)
        t0 = time.perf_counter_ns()
        sock.sendall(data)
        got_sid, body = recv_frame(sock)
        t1 = time.perf_counter_ns()
        if got_sid != sid or body != CHECK_REPLY:
            raise RuntimeError(f"unexpected reply {got_sid} {body!r}")
        if i >= 500:
            samples.append((t1 - t0) / 1000)
        sid += 2
    sock.close()
    samples.sort()

    def pct(p: float) -> float:
        return samples[min(len(samples) - 1, int(p / 100 * len(samples)))]

    return {
        "check_rtt_us_p50": pct(50),
        "check_rtt_us_p90": pct(90),
        "check_rtt_us_p99": pct(99),
        "check_rtt_us_max": samples[-1],
        "calls": len(samples),
    }


class _Caller:
    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sid = 1
        self.buf = bytearray()

    def send(self, count: int) -> None:
        out = bytearray()
        for _ in range(count):
            out += frame(self.sid, CHECK_BODY)
            self.sid += 2
        self.sock.sendall(out)

    def receive(self) -> int:
        """Read what is there; returns how many complete replies arrived."""
        self.buf += self.sock.recv(65536)
        replies = 0
        while len(self.buf) >= 10:
            length = HEADER.unpack_from(self.buf)[0]
            if len(self.buf) < 10 + length:
                break
            del self.buf[: 10 + length]
            replies += 1
        return replies


def bench_throughput(path: str, connections: int, in_flight: int, duration: float) -> float:
    """Calls per second with ``connections`` x ``in_flight`` outstanding Checks at all times."""
    sel = selectors.DefaultSelector()
    callers = [_Caller(path) for _ in range(connections)]
    for caller in callers:
        caller.send(in_flight)
        sel.register(caller.sock, selectors.EVENT_READ, caller)
    done = 0
    t0 = time.perf_counter()
    end = t0 + duration
    while time.perf_counter() < end:
        for key, _ in sel.select(timeout=1):
            caller = key.data
            replies = caller.receive()
            done += replies
            if replies:
                caller.send(replies)
    elapsed = time.perf_counter() - t0
    for caller in callers:
        sel.unregister(caller.sock)
        caller.sock.close()
    return done / elapsed


def timed_call(path: str, body: bytes) -> float:
    """Milliseconds for one call on a new connection."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(path)
        t0 = time.perf_counter()
        sock.sendall(frame(1, body))
        _, reply = recv_frame(sock)
        elapsed = (time.perf_counter() - t0) * 1000
    if not reply.startswith(b"\x0a\x00"):  # an empty status: OK
        raise RuntimeError(f"call failed: {reply[:200]!r}")
    return elapsed


def bench_first_area_call() -> dict[str, float]:
    workdir = Path(tempfile.mkdtemp(prefix="kab-", dir="/tmp"))
    agent = Agent(workdir)
    try:
        agent.wait_for(PROBE_BODY)
        time.sleep(0.5)
        first = timed_call(agent.sock, GUEST_DETAILS_BODY)
        second = timed_call(agent.sock, GUEST_DETAILS_BODY)
    finally:
        agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    return {"guest_details_first_call_ms": first, "guest_details_second_call_ms": second}


def bench_check_window(path: str, seconds: float) -> list[float]:
    """Sequential Check round trips (us) on one connection for ``seconds``."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    samples = []
    sid = 1
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter_ns()
        sock.sendall(frame(sid, CHECK_BODY))
        recv_frame(sock)
        samples.append((time.perf_counter_ns() - t0) / 1000)
        sid += 2
    sock.close()
    return samples


def bench_preload(areas: str, rounds: int, window: float) -> dict[str, float]:
    """Lazy and preloading agents, alternately (module docstring)."""
    runs: dict[str, list[dict[str, float]]] = {"lazy": [], "preload": []}
    for i in range(rounds):
        modes = ["lazy", "preload"] if i % 2 == 0 else ["preload", "lazy"]
        for mode in modes:
            workdir = Path(tempfile.mkdtemp(prefix="kab-", dir="/tmp"))
            agent = Agent(workdir, ["--preload-areas", areas if mode == "preload" else "none"])
            try:
                agent.wait_for(PROBE_BODY)
                samples = sorted(bench_check_window(agent.sock, window))
                time.sleep(2)
                rss = agent.rss_kib() / 1024
                first = timed_call(agent.sock, GUEST_DETAILS_BODY)
                runs[mode].append(
                    {
                        "check_us_p50": samples[len(samples) // 2],
                        "check_us_p99": samples[min(len(samples) - 1, int(0.99 * len(samples)))],
                        "check_us_max": samples[-1],
                        "checks_in_window": len(samples),
                        "guest_details_first_call_ms": first,
                        "idle_rss_mib": rss,
                    }
                )
            finally:
                agent.stop()
                shutil.rmtree(workdir, ignore_errors=True)
    return {
        f"{mode}_{key}": statistics.median(r[key] for r in results)
        for mode, results in runs.items()
        for key in results[0]
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10000)
    parser.add_argument("--starts", type=int, default=10)
    parser.add_argument("--duration", type=float, default=3.0)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--cpu", type=int, help="pin the client and the agent to this CPU")
    parser.add_argument(
        "--preload",
        nargs="?",
        const="all",
        metavar="AREAS",
        help="measure background area loading instead (agent.preload_areas; default all)",
    )
    parser.add_argument("--rounds", type=int, default=6, help="--preload: rounds of each")
    parser.add_argument("--window", type=float, default=0.3, help="--preload: seconds of Checks")
    args = parser.parse_args()
    if args.cpu is not None:
        os.sched_setaffinity(0, {args.cpu})

    results: dict[str, float] = {}
    if args.preload:
        results.update(bench_preload(args.preload, args.rounds, args.window))
        results["load_average_1m"] = os.getloadavg()[0]
        print(json.dumps(results, indent=2) if args.json else _table(results, {}))
        return 0
    results.update(bench_startup(args.starts))
    workdir = Path(tempfile.mkdtemp(prefix="kab-", dir="/tmp"))
    agent = Agent(workdir)
    try:
        agent.wait_for(PROBE_BODY)
        results.update(bench_latency(agent.sock, args.calls))
        results["throughput_8_in_flight_1_conn_per_s"] = bench_throughput(
            agent.sock, 1, 8, args.duration
        )
        results["throughput_8_conns_per_s"] = bench_throughput(agent.sock, 8, 1, args.duration)
        time.sleep(2)
        results["idle_rss_mib"] = agent.rss_kib() / 1024
        results["idle_pss_mib"] = agent.pss_kib() / 1024
    finally:
        agent.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    results.update(bench_first_area_call())
    results["load_average_1m"] = os.getloadavg()[0]
    results["pinned_cpu"] = -1 if args.cpu is None else args.cpu

    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    targets = {
        "first_check_ms_median": 80,
        "check_rtt_us_p50": 60,
        "check_rtt_us_p99": 300,
        "idle_rss_mib": 25,
    }
    print(_table(results, targets))
    return 0


def _table(results: Mapping[str, float], targets: Mapping[str, float]) -> str:
    lines = []
    for key, value in results.items():
        target = targets.get(key)
        mark = (
            ""
            if target is None
            else f"  (target <= {target}: {'ok' if value <= target else 'MISSED'})"
        )
        lines.append(f"{key:45s} {value:12.1f}{mark}")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
