"""Soak bench: does anything leak over many containers and execs, and what do stalled
connections cost? A real agent (private mount namespace, run dir on tmpfs) over ttrpc.

Run as root on the host: ``.venv/bin/python bench/soak.py [--cycles N] [--execs N] [--stalled N]``.

1. Soak (default 1,000 container cycles and 1,000 execs): after a warm-up (20 of each, so
   lazily imported modules and caches are in place), the agent's fds, RSS, threads, mounts,
   cgroup directories of the test's cgroup parent and live processes are read; then
   ``--cycles`` CreateContainer + StartContainer + read to EOF + WaitProcess + RemoveContainer
   of a busybox ``true``, and ``--execs`` ExecProcess + read to EOF + WaitProcess of ``echo x``
   in one running container; then the same figures again. Prints each delta against its target:
   fds, mounts, cgroups and processes 0, threads 0, RSS within +1 MiB.
2. Stalled connections (``--stalled N``, default 64; 0 skips): N connections each announce a
   4 MiB frame and stop 17 bytes short of it. Prints the agent's RSS before and after (once it
   has stopped reading them), the bound the configuration promises (frame memory + N x (the
   per-connection allowance + one read)), whether Health.Check still answers on a connection
   opened before, and how many stalled connections the agent evicted. ``--frame-memory`` sets
   the agent's budget (default: the agent's default); ``--compare`` runs the same with a budget
   of 4 GiB (in effect none: the agent's behaviour before the limits) for a before/after pair.

Figures depend on the machine's load: note ``uptime`` with them.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from agent.ctl.container_spec import container_spec, exec_process  # noqa: E402
from agent.rpc import framing  # noqa: E402
from agent.rpc.pb import agent_pb2, oci_pb2  # noqa: E402
from agent.rpc.server import FRAME_ALLOWANCE  # noqa: E402
from tests.root.lifecycle.conftest import live_descendants  # noqa: E402
from tests.support.agent import check_on, remove_workdir, start_agent  # noqa: E402
from tests.support.rootfs import make_busybox_rootfs  # noqa: E402

PRIVATE_MNT = ["unshare", "--mount", "--propagation", "private"]
SHM = "/dev/shm"
READ_CHUNK = 256 << 10  # the most one read of a connection hands the agent (asyncio, uvloop)


def status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def cgroup_dirs(parent: str) -> int:
    count = 0
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / parent
        if d.is_dir():
            count += sum(1 for p in d.rglob("*") if p.is_dir()) + 1
    return count


def snapshot(pid: int, cg: str) -> dict[str, int]:
    return {
        "fds": len(os.listdir(f"/proc/{pid}/fd")),
        "rss_kib": status_kib(pid, "VmRSS"),
        "threads": status_kib(pid, "Threads"),
        "mounts": len(Path(f"/proc/{pid}/mountinfo").read_text().splitlines()),
        "cgroups": cgroup_dirs(cg),
        "processes": len(live_descendants(pid)),
    }


async def drain(a: object, cid: str, eid: str, method: str) -> None:
    call = getattr(a, method)
    while True:
        resp = await call(agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=32768))
        if not resp.data:
            return


async def cycle(a: object, spec: oci_pb2.Spec, cid: str) -> None:
    c: object = a
    await c.CreateContainer(  # type: ignore[attr-defined]
        agent_pb2.CreateContainerRequest(container_id=cid, exec_id=cid, OCI=spec)
    )
    await c.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))  # type: ignore[attr-defined]
    await asyncio.gather(drain(a, cid, cid, "ReadStdout"), drain(a, cid, cid, "ReadStderr"))
    await c.WaitProcess(agent_pb2.WaitProcessRequest(container_id=cid, exec_id=cid))  # type: ignore[attr-defined]
    await c.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id=cid))  # type: ignore[attr-defined]


async def one_exec(a: object, eid: str) -> None:
    c: object = a
    await c.ExecProcess(  # type: ignore[attr-defined]
        agent_pb2.ExecProcessRequest(
            container_id="box", exec_id=eid, process=exec_process(["echo", "x"])
        )
    )
    await asyncio.gather(drain(a, "box", eid, "ReadStdout"), drain(a, "box", eid, "ReadStderr"))
    await c.WaitProcess(agent_pb2.WaitProcessRequest(container_id="box", exec_id=eid))  # type: ignore[attr-defined]


async def soak(args: argparse.Namespace) -> bool:
    run_dir = Path(tempfile.mkdtemp(prefix="kag-soak-", dir=SHM))
    agent = start_agent(prefix=PRIVATE_MNT, log_level="warn", args=["--run-dir", str(run_dir)])
    tmp = Path(tempfile.mkdtemp(prefix="kag-soak-"))
    rootfs = make_busybox_rootfs(tmp / "rootfs")
    cg = f"kag-soak-{uuid.uuid4().hex[:8]}"
    ok = True
    try:
        async with await agent.client() as c:
            a = c.agent
            await a.CreateSandbox(agent_pb2.CreateSandboxRequest(hostname="soak", sandbox_id="s"))

            def spec(cid: str, argv: list[str]) -> oci_pb2.Spec:
                return container_spec(str(rootfs), argv, cgroups_path=f"/{cg}/{cid}")

            await a.CreateContainer(
                agent_pb2.CreateContainerRequest(
                    container_id="box", exec_id="box", OCI=spec("box", ["sleep", "1000000"])
                )
            )
            await a.StartContainer(agent_pb2.StartContainerRequest(container_id="box"))
            for i in range(20):
                await cycle(a, spec(f"w{i}", ["true"]), f"w{i}")
                await one_exec(a, f"w{i}")
            await asyncio.sleep(1)
            before = snapshot(agent.pid, cg)
            started = time.monotonic()
            for i in range(args.cycles):
                await cycle(a, spec(f"c{i}", ["true"]), f"c{i}")
            cycles_s = time.monotonic() - started
            started = time.monotonic()
            for i in range(args.execs):
                await one_exec(a, f"e{i}")
            execs_s = time.monotonic() - started
            await asyncio.sleep(1)  # let exited processes be reaped, timers fire
            after = snapshot(agent.pid, cg)
            await a.RemoveContainer(agent_pb2.RemoveContainerRequest(container_id="box"))
        print(
            f"soak: {args.cycles} container cycles in {cycles_s:.1f} s, "
            f"{args.execs} execs in {execs_s:.1f} s; load {os.getloadavg()[0]:.2f}"
        )
        targets = {
            "fds": 0,
            "threads": 0,
            "mounts": 0,
            "cgroups": 0,
            "processes": 0,
            "rss_kib": 1024,
        }
        for key, limit in targets.items():
            delta = after[key] - before[key]
            verdict = "ok" if delta <= limit else "OVER"
            ok &= delta <= limit
            unit = " KiB" if key == "rss_kib" else ""
            print(
                f"  {key:<10} before {before[key]:>8}{unit}  after {after[key]:>8}{unit}  "
                f"delta {delta:+d}{unit}  (target <= {limit:+d}{unit}) {verdict}"
            )
    finally:
        agent.stop()
        remove_workdir(agent.workdir)
        cleanup(run_dir, cg)
    return ok


def cleanup(run_dir: Path, cg: str) -> None:
    with contextlib.suppress(OSError):
        os.rmdir(run_dir)
    for top in Path("/sys/fs/cgroup").iterdir():
        d = top / cg
        if d.is_dir():
            for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                with contextlib.suppress(OSError):
                    sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()


def _stall(sock: socket.socket) -> None:
    """Announce a 4 MiB frame and send all but 17 bytes of it, as far as the agent reads."""
    length = 4 << 20
    sock.sendall(framing.HEADER.pack(length, 1, framing.TYPE_REQUEST, 0))
    sock.setblocking(False)
    chunk = b"\0" * (256 << 10)
    left = length - 17
    idle_since = time.monotonic()
    while left and time.monotonic() - idle_since < 0.5:
        try:
            n = sock.send(chunk[: min(len(chunk), left)])
            left -= n
            idle_since = time.monotonic()
        except BlockingIOError:
            time.sleep(0.005)
        except OSError:
            return  # evicted
    sock.setblocking(True)


def stalled(n: int, frame_memory: str | None, label: str) -> None:
    extra = ["--idle-frame-timeout", "600"]
    if frame_memory:
        extra += ["--frame-memory-limit", frame_memory]
    agent = start_agent(prefix=PRIVATE_MNT, log_level="warn", args=extra)
    socks: list[socket.socket] = []
    try:
        assert agent.socket_path is not None
        live = socket.socket(socket.AF_UNIX)
        live.settimeout(30)
        live.connect(str(agent.socket_path))
        socks.append(live)
        check_on(live)
        time.sleep(0.5)
        before = status_kib(agent.pid, "VmRSS")
        for _ in range(n):
            s = socket.socket(socket.AF_UNIX)
            s.settimeout(30)
            s.connect(str(agent.socket_path))
            socks.append(s)
            _stall(s)
        time.sleep(3)  # the agent reads what the budget allows, evictions settle
        after = status_kib(agent.pid, "VmRSS")
        alive = check_on(live)
        evicted = sum(
            1
            for r in agent.logs()
            if str(r.get("msg", "")).startswith("closing connection: partial frame memory")
        )
        budget = _parse_size(frame_memory) if frame_memory else 16 << 20
        bound = budget + n * (FRAME_ALLOWANCE + READ_CHUNK)
        print(
            f"stalled ({label}): {n} connections each 17 bytes short of a 4 MiB frame: "
            f"agent RSS {before / 1024:.1f} -> {after / 1024:.1f} MiB "
            f"(+{(after - before) / 1024:.1f} MiB; bound {bound / (1 << 20):.1f} MiB = frame "
            f"memory {budget / (1 << 20):.0f} MiB + {n} x (allowance + one read)); "
            f"Check on the live connection: {'answered' if alive else 'NOT ANSWERED'}; "
            f"evicted {evicted}; load {os.getloadavg()[0]:.2f}"
        )
    finally:
        for s in socks:
            s.close()
        agent.stop()
        remove_workdir(agent.workdir)


def _parse_size(text: str) -> int:
    from agent.config import parse_bytes

    return parse_bytes("--frame-memory", text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--cycles", type=int, default=1000)
    p.add_argument("--execs", type=int, default=1000)
    p.add_argument("--stalled", type=int, default=64, help="stalled connections (0: skip)")
    p.add_argument("--frame-memory", help="the agent's --frame-memory-limit (default: its own)")
    p.add_argument("--compare", action="store_true", help="also without a budget (4 GiB)")
    p.add_argument("--no-soak", action="store_true", help="only the stalled connections")
    args = p.parse_args()
    ok = True
    if not args.no_soak:
        ok = asyncio.run(soak(args))
    if args.stalled:
        stalled(args.stalled, args.frame_memory, "with the limits")
        if args.compare:
            stalled(args.stalled, "4G", "budget 4 GiB, i.e. none")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
