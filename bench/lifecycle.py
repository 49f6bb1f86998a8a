"""Lifecycle benchmark: a real agent (private mount namespace, temp state dirs) over ttrpc.

Run as root on the host: ``.venv/bin/python bench/lifecycle.py [--runs N] [--execs N]``.

1. Container cycle: CreateContainer + StartContainer + WaitProcess + RemoveContainer of a busybox
   ``true`` (the shim's sequence; its outputs are read to EOF before the wait, as the shim does).
   Target: median <= 30 ms.
2. Exec latency: ExecProcess of ``echo x`` in a running container, timed to the first byte
   returned by ReadStdout (the read is issued as soon as ExecProcess returns, as the shim does).
   Target: median <= 10 ms.
3. ReadStdout throughput: a container writes 256 MiB to stdout (``dd bs=1M``; busybox's
   ``head -c`` alone caps near 190 MiB/s here); the client reads it with the shim's ``len`` of
   32 KiB (and with 1 MiB for comparison). Target: >= 300 MiB/s. Also printed: the CPU time the
   agent and this client spent per MiB (load-independent, unlike the rate on a shared machine),
   the number of replies and their mean size.

The client (this process) stands in for the Go shim: it runs on uvloop (``--asyncio-loop`` for
asyncio's own loop) and with glibc malloc told not to mmap/unmap every 1 MiB reply buffer
(``--no-tune-malloc`` to leave it): with fresh pages for each reply the page faults cost this
Python client more than the copies, a cost the shim's allocator does not have.

The agent's run dir (bundles, engine state) is on tmpfs (/dev/shm), as /run/kata-containers is in
the guest; ``--disk-run-dir`` keeps the test support's default on /tmp.

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
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ctl.container_spec import container_spec, exec_process  # noqa: E402
from agent.rpc.pb import agent_pb2, oci_pb2  # noqa: E402
from tests.support.agent import remove_workdir, start_agent  # noqa: E402
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


async def bench(args: argparse.Namespace) -> None:
    extra = ["--container-pipe-size", str(args.pipe_size)] if args.pipe_size else []
    # In the guest the state root /run/kata-containers is on tmpfs: put it on tmpfs here too
    # (the test support's default is on /tmp, here an ext4 disk: +1.3 ms per bundle alone).
    run_dir = None if args.disk_run_dir else Path(tempfile.mkdtemp(prefix="kag-bench-", dir=SHM))
    if run_dir is not None:
        extra += ["--run-dir", str(run_dir)]
    agent = start_agent(prefix=PRIVATE_MNT, log_level=args.log_level, args=extra)
    tmp = Path(tempfile.mkdtemp(prefix="kag-bench-"))
    rootfs = make_busybox_rootfs(tmp / "rootfs")
    cg = f"kag-bench-{uuid.uuid4().hex[:8]}"
    try:
        async with await agent.client() as c:
            a = c.agent
            await a.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="bench", sandbox_id="b"))

            def spec(cid: str, argv: list[str]) -> oci_pb2.Spec:
                return container_spec(str(rootfs), argv, cgroups_path=f"/{cg}/{cid}")

            # 1. container cycle
            cycle: list[float] = []
            for i in range(0 if args.only_throughput else args.warmup + args.runs):
                cid = f"run{i}"
                t0 = time.perf_counter()
                await a.CreateContainer(
                    agent_pb2.CreateContainerRequest(
                        container_id=cid, exec_id=cid, OCI=spec(cid, ["true"])
                    )
                )
                await a.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
                await asyncio.gather(
                    drain(a, cid, cid, "ReadStdout"), drain(a, cid, cid, "ReadStderr")
                )
                await a.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
                await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid))
                if i >= args.warmup:
                    cycle.append((time.perf_counter() - t0) * 1000)

            # 2. exec to first byte
            await a.CreateContainer(
                agent_pb2.CreateContainerRequest(
                    container_id="box", exec_id="box", OCI=spec("box", ["sleep", "1000000"])
                )
            )
            await a.StartContainer(agent_pb2.StartContainerRequest(container_id="box"))
            first_byte: list[float] = []
            for i in range(0 if args.only_throughput else args.warmup + args.execs):
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
                if i >= args.warmup:
                    first_byte.append((t1 - t0) * 1000)

            # 3. ReadStdout throughput
            size = args.mib << 20
            rates: dict[int, float] = {}
            cpu: dict[int, tuple[float, float]] = {}
            replies: dict[int, tuple[int, float]] = {}
            for length in (32768, 1 << 20):
                cid = f"big{length}"
                await a.CreateContainer(
                    agent_pb2.CreateContainerRequest(
                        container_id=cid,
                        exec_id=cid,
                        OCI=spec(
                            cid,
                            [
                                "dd",
                                "if=/dev/zero",
                                f"bs={args.bs}K",
                                f"count={size // (args.bs << 10)}",
                            ],
                        ),
                    )
                )
                await a.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))
                t0 = time.perf_counter()
                c0, a0 = time.process_time(), cpu_seconds(agent.pid)
                sizes: list[int] = []
                got, _ = await asyncio.gather(
                    drain(a, cid, cid, "ReadStdout", length, sizes),
                    drain(a, cid, cid, "ReadStderr"),
                )
                replies[length] = (len(sizes), statistics.mean(sizes) / 1024)
                dt = time.perf_counter() - t0
                mib = size / (1 << 20)
                cpu[length] = (
                    (cpu_seconds(agent.pid) - a0) * 1000 / mib,
                    (time.process_time() - c0) * 1000 / mib,
                )
                assert got == size, (got, size)
                await a.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))
                await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid))
                rates[length] = size / dt / (1 << 20)

            await a.SignalProcess(
                agent_pb2.SignalProcessRequest(container_id="box", exec_id="", signal=9)
            )
            await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="box"))

        print(f"lifecycle bench (agent pid {agent.pid}, {args.runs} cycles, {args.execs} execs)")
        if cycle:
            report("Create+Start+Wait+Remove (busybox true)", cycle, "<= 30 ms")
            report("ExecProcess to first output byte", first_byte, "<= 10 ms")
        for length, rate in rates.items():
            print(
                f"{'ReadStdout throughput, len=' + str(length):<44} {rate:7.1f} MiB/s "
                f"({args.mib} MiB, pipe {args.pipe_size or 'default'}; target >= 300 MiB/s)"
            )
            print(
                f"{'':<44} CPU per MiB: agent {cpu[length][0]:.2f} ms, "
                f"client {cpu[length][1]:.2f} ms; {replies[length][0]} replies, "
                f"mean {replies[length][1]:.1f} KiB"
            )
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


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (/proc/PID/stat fields 14 and 15)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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
    p.add_argument("--keep-log", action="store_true", help="print the agent's log path")
    p.add_argument(
        "--no-tune-malloc", action="store_true", help="leave the client's glibc malloc as it is"
    )
    p.add_argument(
        "--asyncio-loop",
        action="store_true",
        help="run the client on asyncio's default loop instead of uvloop (as the agent uses)",
    )
    p.add_argument(
        "--disk-run-dir",
        action="store_true",
        help="keep the agent's run dir on /tmp (disk) instead of tmpfs like the guest's /run",
    )
    args = p.parse_args()
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
        runner.run(bench(args))


if __name__ == "__main__":
    main()
