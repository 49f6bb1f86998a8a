"""``Engine.exec(..., in_caller=True)`` (the agent's exec path: the spawner's disposable worker
joins the container's namespaces itself and forks the container process directly): the process
runs in the init's namespaces, user namespace included, and in its cgroup; the calling process
never enters the cgroup; a failure names its step and leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.root.oci.harness import REPO, Bundle, processes_in_cgroup

# Plays the spawner's worker: a disposable process that calls the engine, then waits for its
# child (the container process) and prints the exit code and the pids it saw.
CALLER = f"""
import json, os, sys
sys.path.insert(0, {str(REPO)!r})
from oci.engine.errors import InitError
from oci.engine.launcher import Engine
from oci.spec import Process
root, cid, out_path, script = sys.argv[1:5]
out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
null = os.open(os.devnull, os.O_RDONLY)
# Opened now: afterwards this process is in the container's mount namespace, whose /proc is
# the container's pid namespace (where it has no pid).
own_cgroup = os.open("/proc/self/cgroup", os.O_RDONLY)
children = os.open(f"/proc/self/task/{{os.getpid()}}/children", os.O_RDONLY)
args = ("sh", "-c", script) if script else ("/no/such/program",)
try:
    r = Engine(root).exec(cid, Process(args=args, cwd="/"), stdio=(null, out, out), in_caller=True)
except InitError as err:
    kids = os.read(children, 65536).decode().split()
    print(json.dumps({{"error": str(err), "children": kids}}))
    sys.exit(0)
cgroup = os.read(own_cgroup, 65536).decode()
_, status = os.waitpid(r.pid, 0)
code = os.waitstatus_to_exitcode(status)
print(json.dumps({{"pid": r.pid, "code": code, "caller_cgroup": cgroup}}))
"""


NAMESPACES = ("mnt", "pid", "ipc", "uts", "net", "cgroup", "user")


def _caller(bundle: Bundle, cid: str, out: Path, script: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-I", "-c", CALLER, str(bundle.root), cid, str(out), script],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _user_ns(c: dict[str, Any]) -> None:
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]


@pytest.mark.parametrize("user_ns", [False, True], ids=["no-userns", "userns"])
def test_in_caller_exec_joins_every_namespace_and_the_cgroup(
    bundle: Bundle, tmp_path: Path, user_ns: bool
) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sleep", "100000"]
    if user_ns:
        _user_ns(bundle.config)
    bundle.write(cid)
    assert bundle.kata_oci("create", "--bundle", str(bundle.path), cid).returncode == 0
    try:
        assert bundle.kata_oci("start", cid).returncode == 0
        init = json.loads(bundle.kata_oci("state", cid).stdout)["pid"]
        out = tmp_path / "out"
        script = (
            "for n in mnt pid ipc uts net cgroup user; do readlink /proc/self/ns/$n; done; "
            "id -u; cat /proc/self/cgroup; exit 5"
        )
        res = _caller(bundle, cid, out, script)
        assert res["code"] == 5, out.read_text()
        lines = out.read_text().splitlines()
        want = [os.readlink(f"/proc/{init}/ns/{n}") for n in NAMESPACES]
        assert lines[:7] == want
        assert lines[7] == "0"  # root of the container (mapped to 100000 with a user namespace)
        # Its cgroup namespace is rooted at the container's cgroup (the init unshared it there):
        # in the container's cgroup, every hierarchy reads "/"; anywhere else "/../..".
        assert lines[8:], out.read_text()
        assert all(line.endswith(":/") for line in lines[8:]), lines[8:]
        # The caller itself never joined the container's cgroup.
        assert f"/{bundle.cgroup_parent}/" not in res["caller_cgroup"]
        assert set(processes_in_cgroup(f"{bundle.cgroup_parent}/{cid}")) == {init}

        # A failing exec: the error names the step; no child is left to the caller.
        res = _caller(bundle, cid, out, "")
        assert "resolve executable" in res["error"]
        assert res["children"] == []
        assert set(processes_in_cgroup(f"{bundle.cgroup_parent}/{cid}")) == {init}
    finally:
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)
