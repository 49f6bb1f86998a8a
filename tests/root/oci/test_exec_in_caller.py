"""``Engine.exec(..., in_caller=True)`` (the agent's exec path, `oci.engine.inplace`: the
spawner's disposable worker joins the container's namespaces itself and forks the container
process directly): the process runs in the init's namespaces, user namespace included, and in
its cgroup, with the user, groups, umask, cwd, environment, rlimits, capabilities and
no_new_privs it asked for and no fd but its stdio; a seccomp profile still applies (it takes
the init's steps); the calling process never enters the cgroup; a failed step names itself
and leaves no process behind; a failed execve is reported as the init reports it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from oci.spec import LinuxCapabilities, POSIXRlimit, Process, User, encode
from tests.root.oci.harness import REPO, Bundle, processes_in_cgroup

# Plays the spawner's worker: a disposable process that calls the engine, then waits for its
# child (the container process) and prints what it saw as JSON.
CALLER = f"""
import json, os, sys
sys.path.insert(0, {str(REPO)!r})
from oci.engine.errors import InitError
from oci.engine.facade import Engine
from oci.spec import Process, decode
root, cid, out_path, raw = sys.argv[1:5]
out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
null = os.open(os.devnull, os.O_RDONLY)
# Opened now: afterwards this process is in the container's mount namespace, whose /proc is
# the container's pid namespace (where it has no pid).
own_cgroup = os.open("/proc/self/cgroup", os.O_RDONLY)
children = os.open(f"/proc/self/task/{{os.getpid()}}/children", os.O_RDONLY)
process = decode(Process, json.loads(raw))[0]
try:
    r = Engine(root).exec(cid, process, stdio=(null, out, out), in_caller=True)
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


def _caller(bundle: Bundle, cid: str, out: Path, process: Process) -> dict[str, Any]:
    raw = json.dumps(encode(process))
    done = subprocess.run(
        [sys.executable, "-I", "-c", CALLER, str(bundle.root), cid, str(out), raw],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def _sh(script: str, **kw: Any) -> Process:
    return Process(args=("sh", "-c", script), cwd=kw.pop("cwd", "/"), **kw)


def _user_ns(c: dict[str, Any]) -> None:
    c["linux"]["namespaces"].append({"type": "user"})
    c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]


def _running(bundle: Bundle) -> tuple[str, int]:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sleep", "100000"]
    bundle.write(cid)
    r = bundle.kata_oci("create", "--bundle", str(bundle.path), cid)
    assert r.returncode == 0, r.stderr
    assert bundle.kata_oci("start", cid).returncode == 0
    return cid, int(json.loads(bundle.kata_oci("state", cid).stdout)["pid"])


def _only_init(bundle: Bundle, cid: str, init: int) -> bool:
    return set(processes_in_cgroup(f"{bundle.cgroup_parent}/{cid}")) == {init}


@pytest.mark.parametrize("user_ns", [False, True], ids=["no-userns", "userns"])
def test_in_caller_exec_joins_every_namespace_and_the_cgroup(
    bundle: Bundle, tmp_path: Path, user_ns: bool
) -> None:
    if user_ns:
        _user_ns(bundle.config)
    cid, init = _running(bundle)
    try:
        out = tmp_path / "out"
        script = (
            "for n in mnt pid ipc uts net cgroup user; do readlink /proc/self/ns/$n; done; "
            "id -u; cat /proc/self/cgroup; exit 5"
        )
        res = _caller(bundle, cid, out, _sh(script))
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
        assert _only_init(bundle, cid, init)

        # A failing exec: the error names the step; no child is left to the caller.
        res = _caller(bundle, cid, out, Process(args=("/no/such/program",), cwd="/"))
        assert "resolve executable" in res["error"]
        assert "/no/such/program" in res["error"]
        assert res["children"] == []
        assert _only_init(bundle, cid, init)
    finally:
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)


def test_in_caller_exec_takes_the_process_settings(bundle: Bundle, tmp_path: Path) -> None:
    cid, init = _running(bundle)
    try:
        out = tmp_path / "out"
        caps = ("CAP_KILL", "CAP_NET_RAW")
        process = _sh(
            "id -u; id -g; id -G; umask; pwd; echo $HOME $FOO; ulimit -n; ulimit -Hn; "
            "grep -E '^(CapEff|CapPrm|CapBnd|CapAmb|NoNewPrivs|SigIgn)' /proc/self/status; "
            "ls /proc/self/fd",
            cwd="/tmp",
            env=("FOO=bar", "PATH=/bin:/sbin"),
            user=User(uid=1000, gid=1000, additional_gids=(100, 5), umask=0o027),
            rlimits=(POSIXRlimit(type="RLIMIT_NOFILE", soft=123, hard=456),),
            capabilities=LinuxCapabilities(
                bounding=caps, effective=caps, permitted=caps, inheritable=caps, ambient=caps
            ),
            no_new_privileges=True,
        )
        res = _caller(bundle, cid, out, process)
        assert res["code"] == 0, out.read_text()
        lines = out.read_text().splitlines()
        assert lines[:8] == [
            "1000",
            "1000",
            "1000 5 100",
            "0027",
            "/tmp",
            "/home/user bar",
            "123",
            "456",
        ]
        status = dict(line.split(":\t") for line in lines[8:14])
        mask = (1 << 5) | (1 << 13)  # CAP_KILL, CAP_NET_RAW
        for field in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert int(status[field], 16) == mask, (field, status)
        assert status["NoNewPrivs"] == "1"
        assert int(status["SigIgn"], 16) & (1 << 12) == 0  # SIGPIPE is not ignored
        # Only its stdio (and the directory ls reads) are open.
        assert sorted(int(fd) for fd in lines[14:]) == [0, 1, 2, 3]
        assert _only_init(bundle, cid, init)
    finally:
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)


@pytest.mark.parametrize("nnp", [False, True], ids=["init-steps", "lean-no-new-privs"])
def test_in_caller_exec_applies_the_seccomp_profile(
    bundle: Bundle, tmp_path: Path, nnp: bool
) -> None:
    bundle.config["linux"]["seccomp"] = {
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO"}],
    }
    cid, init = _running(bundle)
    try:
        out = tmp_path / "out"
        script = (
            "grep -E '^(Seccomp|NoNewPrivs):' /proc/self/status; mkdir /tmp/nope || echo refused"
        )
        res = _caller(bundle, cid, out, _sh(script, no_new_privileges=nnp))
        assert res["code"] == 0, out.read_text()
        text = out.read_text()
        assert "Seccomp:\t2" in text
        assert f"NoNewPrivs:\t{int(nnp)}" in text
        assert "Operation not permitted" in text
        assert "refused" in text
        assert not (bundle.rootfs / "tmp" / "nope").exists()
        assert _only_init(bundle, cid, init)
    finally:
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)


def test_in_caller_failed_execve_is_exit_127_with_a_message(bundle: Bundle, tmp_path: Path) -> None:
    script = bundle.rootfs / "not-executable"
    script.write_text("#!/bin/sh\necho never\n")
    script.chmod(0o644)
    cid, init = _running(bundle)
    try:
        out = tmp_path / "out"
        res = _caller(bundle, cid, out, Process(args=("/not-executable",), cwd="/"))
        assert res["code"] == 127
        assert out.read_text() == "kata-oci init: exec /not-executable: Permission denied\n"
        assert _only_init(bundle, cid, init)
    finally:
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)
