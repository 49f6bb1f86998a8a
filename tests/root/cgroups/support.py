"""Helpers for real cgroup tests: removing a test's cgroup tree, helper child processes."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from oci.cgroups import DEFAULT_ROOT, v1_controllers

UNIFIED = DEFAULT_ROOT / "unified"


def cleanup_tree(top: Path) -> None:
    if not top.exists():
        return
    dirs = sorted((Path(r) for r, _, _ in os.walk(top)), key=lambda p: len(p.parts), reverse=True)
    for d in dirs:
        try:
            pids = [int(p) for p in (d / "cgroup.procs").read_text().split()]
        except OSError:
            pids = []
        for pid in pids:  # only processes our tests put into this unique cgroup
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if (d / "freezer.state").exists():
            (d / "freezer.state").write_text("THAWED")
        if (d / "cgroup.freeze").exists():
            (d / "cgroup.freeze").write_text("0")
        deadline = time.monotonic() + 10
        while True:
            try:
                os.rmdir(d)
                break
            except FileNotFoundError:
                break
            except OSError as e:
                if e.errno != errno.EBUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.01)


def leftovers(name: str) -> list[Path]:
    found = [m / name for m in set(v1_controllers().values()) if (m / name).exists()]
    if (UNIFIED / name).exists():
        found.append(UNIFIED / name)
    return found


class Child:
    """A python child that blocks until told to go, then runs `code`."""

    def __init__(self, code: str) -> None:
        script = "import sys\nsys.stdin.readline()\n" + code
        self.proc = subprocess.Popen(
            [sys.executable, "-I", "-c", script],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.pid = self.proc.pid

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def wait(self, timeout: float = 60) -> tuple[int, str, str]:
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)
        for f in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
