"""Harness for the engine's root tests: a busybox bundle, ``kata-oci`` run as a real subprocess
with a private state root, and leak checks (state dir, cgroups, mounts, processes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
CGROUP_ROOT = Path("/sys/fs/cgroup")
KATA_OCI = [
    sys.executable,
    "-I",
    "-c",
    f"import sys; sys.path.insert(0, {str(REPO)!r}); from oci.cli import main; sys.exit(main())",
]


def cgroup_dirs(rel: str) -> list[Path]:
    """Every existing directory of cgroup ``rel`` across the mounted hierarchies."""
    out = []
    for top in sorted(CGROUP_ROOT.iterdir()):
        d = top / rel.lstrip("/")
        if top.is_dir() and d.is_dir():
            out.append(d)
    return out


def host_mounts_mentioning(text: str) -> list[str]:
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if text in line]


def processes_in_cgroup(rel: str) -> list[int]:
    pids: list[int] = []
    for d in cgroup_dirs(rel):
        for sub, _, files in os.walk(d):
            if "cgroup.procs" in files:
                with open(os.path.join(sub, "cgroup.procs")) as f:
                    pids += [int(x) for x in f.read().split()]
    return pids


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


@dataclass
class Bundle:
    path: Path
    root: Path  # kata-oci --root
    config: dict[str, Any]
    cgroup_parent: str

    @property
    def rootfs(self) -> Path:
        return self.path / "rootfs"

    def new_id(self) -> str:
        return "t-" + uuid.uuid4().hex[:12]

    def write(self, cid: str | None = None) -> None:
        cfg = json.loads(json.dumps(self.config))
        if cid is not None:
            cfg.setdefault("linux", {})["cgroupsPath"] = f"/{self.cgroup_parent}/{cid}"
        (self.path / "config.json").write_text(json.dumps(cfg))

    def kata_oci(
        self, *args: str, timeout: float = 60, input: str | None = None, **kw: Any
    ) -> Result:
        """Run kata-oci; stdout/stderr go to files (a detached container inherits them, so
        pipes would never see EOF)."""
        import tempfile

        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            done = subprocess.run(
                [*KATA_OCI, "--root", str(self.root), *args],
                cwd=self.path,
                stdout=out,
                stderr=err,
                timeout=timeout,
                input=None if input is None else input.encode(),
                check=False,
                **kw,
            )
            out.seek(0)
            err.seek(0)
            return Result(
                done.returncode,
                out.read().decode(errors="replace"),
                err.read().decode(errors="replace"),
            )

    def run(
        self,
        *cmd: str,
        cid: str | None = None,
        mutate: Callable[[dict[str, Any]], None] | None = None,
        extra: tuple[str, ...] = (),
        input: str | None = None,
    ) -> Result:
        """Set args to ``cmd`` (after ``mutate``), then ``kata-oci run``."""
        cid = cid or self.new_id()
        if cmd:
            self.config["process"]["args"] = list(cmd)
        if mutate is not None:
            mutate(self.config)
        self.write(cid)
        return self.kata_oci("run", *extra, "--bundle", str(self.path), cid, input=input)

    def assert_clean(self, cid: str) -> None:
        """Nothing of ``cid`` left: no state, no cgroup, no process, no host mount."""
        assert not (self.root / cid).exists(), f"state dir of {cid} left behind"
        rel = f"{self.cgroup_parent}/{cid}"
        assert cgroup_dirs(rel) == [], f"cgroup {rel} left behind"
        assert host_mounts_mentioning(str(self.path)) == [], "host mounts left behind"
