"""Benchmark kata-oci against runc and crun on the same bundle.

    .venv/bin/python bench/oci_cli.py [--iterations N] [--runtimes kata-oci,runc,crun]
                                  [--baseline DIR]

Measures, interleaved (one round = every runtime once, in rotating order), the wall time of:

* run    — ``X run`` of a container whose process is ``true`` (create+start+wait+delete)
* create — ``X create`` (process ``sleep``), the init left waiting for start
* start  — ``X start``
* exec   — ``X exec <id> true`` into the running container (returns when ``true`` exits)
* delete — ``X delete`` of the stopped container (after ``kill KILL``, untimed wait)

and prints the median of each, plus kata-oci's ratio to runc and to crun against the target:
kata-oci, a fresh interpreter per command, within 2.5x of runc for every command (issue 13; what
users run is the engine warm in the agent: the in-agent line below).

``--baseline DIR`` adds a column ``kata-base`` and the ratio ``kata/base``: the kata-oci of
another tree of the project (DIR holds its ``oci`` package, e.g. ``git archive <commit> oci | tar
-x -C DIR``), run the same way in the same interleaved rounds, for a before/after comparison on
a noisy machine.

The ``oci`` package is byte-compiled first (``compileall``): with PYTHONDONTWRITEBYTECODE=1 no
.pyc would be written and every command would recompile what it imports.

Debian's crun 1.8 refuses a hybrid cgroup layout (v1 plus cgroup2 at unified), so the whole
benchmark re-runs itself in a private mount namespace where the cgroup2 mount at
/sys/fs/cgroup/unified is unmounted: the three runtimes see the same (v1) layout. Needs root.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

KATA_OCI = [
    sys.executable,
    "-I",
    "-c",
    f"import sys; sys.path.insert(0, {str(REPO)!r}); from oci.cli import main; sys.exit(main())",
]
RUNTIMES = {"kata-oci": KATA_OCI, "runc": ["runc"], "crun": ["crun"]}
OPS = ("run", "create", "start", "exec", "delete")
TARGET_VS_RUNC = 2.5


def _make_bundles(tmp: Path) -> tuple[Path, Path]:
    from oci.spec import default_spec
    from tests.support.rootfs import make_busybox_rootfs

    rootfs = make_busybox_rootfs(tmp / "rootfs")
    bundles = []
    for name, args in (("true", ["true"]), ("sleep", ["sleep", "100000"])):
        cfg = default_spec().to_dict()
        cfg["process"]["terminal"] = False
        cfg["process"]["args"] = args
        cfg["root"] = {"path": str(rootfs), "readonly": True}
        cfg["ociVersion"] = "1.0.2"
        # The same spec for all three: drop what runc 1.1 / crun 1.8 do not know.
        cfg["linux"]["namespaces"] = [
            n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"
        ]
        d = tmp / name
        d.mkdir()
        (d / "config.json").write_text(json.dumps(cfg))
        bundles.append(d)
    return bundles[0], bundles[1]


def _timed(argv: list[str]) -> float:
    # stderr goes to a file: a created container inherits it, so a pipe would never see EOF.
    with tempfile.TemporaryFile() as err:
        t = time.perf_counter()
        done = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err, check=False
        )
        dt = time.perf_counter() - t
        if done.returncode != 0:
            err.seek(0)
            raise RuntimeError(
                f"{' '.join(argv[-3:])}: exit {done.returncode}: "
                f"{err.read().decode(errors='replace').strip()}"
            )
    return dt


def _wait_gone(pid: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X"):
                    return
        except OSError:
            return
        time.sleep(0.001)


def one_round(
    name: str, base: list[str], root: Path, b_true: Path, b_sleep: Path, i: int, tmp: Path
) -> dict[str, float]:
    rt = [*base, "--root", str(root)]
    cid = f"bench-{name}-{os.getpid()}-{i}"
    out: dict[str, float] = {}
    out["run"] = _timed([*rt, "run", "--bundle", str(b_true), cid + "-r"])
    pid_file = tmp / f"{cid}.pid"
    out["create"] = _timed(
        [*rt, "create", "--bundle", str(b_sleep), "--pid-file", str(pid_file), cid]
    )
    pid = int(pid_file.read_text())
    out["start"] = _timed([*rt, "start", cid])
    out["exec"] = _timed([*rt, "exec", cid, "true"])
    subprocess.run([*rt, "kill", cid, "KILL"], check=True)
    _wait_gone(pid)
    out["delete"] = _timed([*rt, "delete", cid])
    return out


def spawner_rounds(b_true: Path, b_sleep: Path, root: Path, n: int) -> dict[str, list[float]]:
    """The agent's path: requests to a warm spawner (no interpreter start-up per operation).
    This process plays the agent: it is the subreaper that reaps every container process."""
    import asyncio
    import socket

    from oci.engine.client import SpawnerClient, spawner_argv
    from oci.syscalls import consts, libc

    libc.prctl(consts.PR_SET_CHILD_SUBREAPER, 1)
    parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    proc = subprocess.Popen(spawner_argv(child.fileno()), pass_fds=[child.fileno()])
    child.close()
    devnull = os.open(os.devnull, os.O_RDWR)
    out: dict[str, list[float]] = {op: [] for op in OPS}

    def reap(pid: int) -> None:
        while True:
            w, _ = os.waitpid(-1, 0)
            if w == pid:
                return

    async def rounds() -> None:
        c = SpawnerClient(parent, str(root))
        stdio = (devnull, devnull, devnull)
        for i in range(-1, n):
            cid = f"bench-spawner-{i}"
            t0 = time.perf_counter()
            pid = await c.create(cid + "-r", str(b_true), stdio=stdio)
            await c.start(cid + "-r")
            reap(pid)
            await c.delete(cid + "-r")
            t1 = time.perf_counter()
            pid = await c.create(cid, str(b_sleep), stdio=stdio)
            t2 = time.perf_counter()
            await c.start(cid)
            t3 = time.perf_counter()
            from oci.spec import Process

            epid = await c.exec(cid, Process(args=("true",), cwd="/"), stdio=stdio)
            reap(epid)
            t4 = time.perf_counter()
            await c.kill(cid, 9)
            reap(pid)
            t5 = time.perf_counter()
            await c.delete(cid)
            t6 = time.perf_counter()
            if i >= 0:
                for op, v in (
                    ("run", t1 - t0),
                    ("create", t2 - t1),
                    ("start", t3 - t2),
                    ("exec", t4 - t3),
                    ("delete", t6 - t5),
                ):
                    out[op].append(v)

    try:
        asyncio.run(rounds())
    finally:
        parent.close()
        proc.wait()
        os.close(devnull)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--runtimes", default="kata-oci,runc,crun")
    ap.add_argument("--baseline", metavar="DIR", help="also run the kata-oci of DIR/oci")
    ap.add_argument(
        "--no-spawner",
        action="store_true",
        help="skip the in-agent path (oci.engine.spawner) measurement",
    )
    ap.add_argument("--in-namespace", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench/oci_cli.py needs root", file=sys.stderr)
        return 2
    if not args.in_namespace:
        # Re-run in a private mount namespace without the cgroup2 mount (for crun 1.8).
        cmd = [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            sys.executable,
            str(Path(__file__).resolve()),
            "--in-namespace",
            *sys.argv[1:],
        ]
        return subprocess.run(cmd, check=False).returncode
    if os.path.ismount("/sys/fs/cgroup/unified"):
        subprocess.run(["umount", "/sys/fs/cgroup/unified"], check=True)
    names = [n for n in args.runtimes.split(",") if n]
    if args.baseline:
        base = os.path.abspath(args.baseline)
        RUNTIMES["kata-base"] = [
            sys.executable,
            "-I",
            "-c",
            f"import sys; sys.path.insert(0, {base!r}); from oci.cli import main; sys.exit(main())",
        ]
        names.insert(0, "kata-base")
        subprocess.run(
            [sys.executable, "-m", "compileall", "-q", os.path.join(base, "oci")],
            stdout=subprocess.DEVNULL,
            check=True,
        )
    for n in names:
        if not n.startswith("kata-") and shutil.which(RUNTIMES[n][0]) is None:
            print(f"{n} not installed", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))  # run the clean-up below
    # Byte-compile the package first: with PYTHONDONTWRITEBYTECODE=1 (set on the dev machines)
    # no .pyc is ever written, and every kata-oci command would recompile every module it
    # imports. An installed package (pip) ships its .pyc: measure that.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(REPO / "oci")],
        stdout=subprocess.DEVNULL,
        check=True,
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-oci-"))
    os.chmod(tmp, 0o755)
    results: dict[str, dict[str, list[float]]] = {n: {op: [] for op in OPS} for n in names}
    try:
        b_true, b_sleep = _make_bundles(tmp)
        for n in names:  # warm-up (page cache, first cgroup creation)
            one_round(n, RUNTIMES[n], tmp / f"root-{n}", b_true, b_sleep, -1, tmp)
        for i in range(args.iterations):
            order = names[i % len(names) :] + names[: i % len(names)]
            for n in order:
                r = one_round(n, RUNTIMES[n], tmp / f"root-{n}", b_true, b_sleep, i, tmp)
                for op, v in r.items():
                    results[n][op].append(v)
        spawner = (
            None
            if args.no_spawner
            else spawner_rounds(b_true, b_sleep, tmp / "root-spawner", args.iterations)
        )
    finally:
        for n in names:
            root = tmp / f"root-{n}"
            if root.exists():
                for cid in os.listdir(root):
                    subprocess.run(
                        [*RUNTIMES[n], "--root", str(root), "delete", "--force", cid],
                        capture_output=True,
                        check=False,
                    )
        shutil.rmtree(tmp, ignore_errors=True)
    med = {
        n: {op: statistics.median(v) * 1000 for op, v in ops.items()} for n, ops in results.items()
    }
    print(
        f"median wall time in ms over {args.iterations} interleaved rounds ({os.cpu_count()} cpus)"
    )
    print(
        f"{'op':8}"
        + "".join(f"{n:>10}" for n in names)
        + ("  kata/base" if "kata-base" in names else "")
        + ("  kata/runc" if "runc" in names else "")
        + ("  kata/crun" if "crun" in names else "")
    )
    ok = True
    for op in OPS:
        line = f"{op:8}" + "".join(f"{med[n][op]:10.1f}" for n in names)
        for other in ("kata-base", "runc", "crun"):
            if "kata-oci" in names and other in names:
                ratio = med["kata-oci"][op] / med[other][op]
                line += f"  {ratio:9.2f}"
                if other == "runc":
                    ok &= ratio <= TARGET_VS_RUNC
        print(line)
    if "kata-oci" in names and "runc" in names:
        verdict = "met" if ok else "NOT met"
        print(f"target (kata-oci <= {TARGET_VS_RUNC}x runc per command): {verdict}")
    if spawner is not None:
        print(
            "\nin-agent path: the same operations through the engine's spawner (warm, no "
            "interpreter start-up), median ms"
        )
        line = ""
        for op in OPS:
            m = statistics.median(spawner[op]) * 1000
            line += f"{op} {m:.1f}"
            if "runc" in names:
                line += f" ({m / med['runc'][op]:.2f}x runc"
                line += f", {m / med['crun'][op]:.2f}x crun)" if "crun" in names else ")"
            line += "; "
        print(line.rstrip("; "))
    return 0


if __name__ == "__main__":
    sys.exit(main())
