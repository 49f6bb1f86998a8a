"""kata-oci create/start/state/exec/ps/pause/resume/update/events/kill/delete, as runc."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from tests.root.oci.harness import Bundle, cgroup_dirs


def _wait_status(b: Bundle, cid: str, want: str, timeout: float = 30) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        r = b.kata_oci("state", cid)
        assert r.returncode == 0, r.stderr
        st: dict[str, Any] = json.loads(r.stdout)
        if st["status"] == want or time.monotonic() > deadline:
            return st
        time.sleep(0.05)


def test_full_lifecycle(bundle: Bundle, tmp_path: Path) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sleep", "1000"]
    bundle.write(cid)
    pid_file = tmp_path / "pid"
    r = bundle.kata_oci("create", "--bundle", str(bundle.path), "--pid-file", str(pid_file), cid)
    assert r.returncode == 0, r.stderr

    st = json.loads(bundle.kata_oci("state", cid).stdout)
    assert st["status"] == "created"
    assert st["id"] == cid
    assert st["bundle"] == str(bundle.path)
    assert st["pid"] == int(pid_file.read_text())
    assert set(st) >= {"ociVersion", "id", "pid", "status", "bundle", "rootfs", "created"}
    # The init waits for start: it has not exec'd sleep yet.
    assert "sleep" not in Path(f"/proc/{st['pid']}/cmdline").read_text()

    listing = bundle.kata_oci("list", "--format", "json")
    assert [c["id"] for c in json.loads(listing.stdout)] == [cid]
    assert bundle.kata_oci("list", "-q").stdout.split() == [cid]

    assert bundle.kata_oci("start", cid).returncode == 0
    st = _wait_status(bundle, cid, "running")
    assert st["status"] == "running"
    assert bundle.kata_oci("start", cid).returncode == 1  # already started

    ex = bundle.kata_oci(
        "exec", cid, "sh", "-c", "echo in-$(hostname); cat /proc/1/cmdline; exit 3"
    )
    assert ex.returncode == 3, ex.stderr
    assert ex.stdout.startswith("in-")
    assert "sleep" in ex.stdout

    pids = json.loads(bundle.kata_oci("ps", "--format", "json", cid).stdout)
    assert st["pid"] in pids
    table = bundle.kata_oci("ps", cid)
    assert table.returncode == 0
    assert "sleep 1000" in table.stdout

    assert bundle.kata_oci("pause", cid).returncode == 0
    assert _wait_status(bundle, cid, "paused")["status"] == "paused"
    assert bundle.kata_oci("resume", cid).returncode == 0
    assert _wait_status(bundle, cid, "running")["status"] == "running"

    up = bundle.kata_oci("update", "--memory", "64M", "--pids-limit", "77", cid)
    assert up.returncode == 0, up.stderr
    rel = f"{bundle.cgroup_parent}/{cid}"
    mem = [
        d
        for d in cgroup_dirs(rel)
        if (d / "memory.limit_in_bytes").exists() or (d / "memory.max").exists()
    ]
    assert mem, "no memory cgroup"
    limit_file = mem[0] / (
        "memory.limit_in_bytes" if (mem[0] / "memory.limit_in_bytes").exists() else "memory.max"
    )
    assert int(limit_file.read_text()) == 64 << 20

    ev = bundle.kata_oci("events", "--stats", cid)
    assert ev.returncode == 0, ev.stderr
    doc = json.loads(ev.stdout)
    assert doc["type"] == "stats"
    assert doc["id"] == cid
    assert doc["data"]

    rm = bundle.kata_oci("delete", cid)
    assert rm.returncode == 1  # running: needs --force
    assert "not stopped" in rm.stderr

    assert bundle.kata_oci("kill", cid, "KILL").returncode == 0
    assert _wait_status(bundle, cid, "stopped")["status"] == "stopped"
    assert bundle.kata_oci("delete", cid).returncode == 0
    bundle.assert_clean(cid)
    r = bundle.kata_oci("state", cid)
    assert r.returncode == 1
    assert "container does not exist" in r.stderr


def test_delete_force_running_and_created(bundle: Bundle) -> None:
    bundle.config["process"]["args"] = ["sleep", "1000"]
    ids = [bundle.new_id(), bundle.new_id()]
    for cid in ids:
        bundle.write(cid)
        assert bundle.kata_oci("create", "--bundle", str(bundle.path), cid).returncode == 0
    assert bundle.kata_oci("start", ids[0]).returncode == 0
    pids = [json.loads(bundle.kata_oci("state", c).stdout)["pid"] for c in ids]
    assert bundle.kata_oci("delete", "--force", ids[0]).returncode == 0
    # A created container is deleted without --force, as runc does.
    assert bundle.kata_oci("delete", ids[1]).returncode == 0
    for cid, pid in zip(ids, pids, strict=True):
        bundle.assert_clean(cid)
        deadline = time.monotonic() + 10
        while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
            stat = Path(f"/proc/{pid}/stat").read_text()
            if stat.rsplit(")", 1)[1].split()[0] == "Z":
                break
            time.sleep(0.05)


def test_exec_process_json_user_env_cwd(bundle: Bundle, tmp_path: Path) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sleep", "1000"]
    bundle.write(cid)
    assert bundle.kata_oci("run", "-d", "--bundle", str(bundle.path), cid).returncode == 0
    proc = {
        "args": ["sh", "-c", "id -u; pwd; echo $FOO"],
        "cwd": "/tmp",
        "env": ["PATH=/bin:/usr/bin", "FOO=bar"],
        "user": {"uid": 1000, "gid": 1000},
    }
    pj = tmp_path / "process.json"
    pj.write_text(json.dumps(proc))
    r = bundle.kata_oci("exec", "--process", str(pj), cid)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "/tmp", "bar"]
    r = bundle.kata_oci(
        "exec",
        "--user",
        "1000:100",
        "--cwd",
        "/home",
        "--env",
        "X=y",
        cid,
        "sh",
        "-c",
        "id -u; id -g; pwd; echo $X",
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1000", "100", "/home", "y"]
    # No fd of the engine leaks into an exec'd process: 0-2 and ls's own directory fd.
    r = bundle.kata_oci("exec", cid, "sh", "-c", "ls /proc/self/fd | wc -l")
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "4"
    r = bundle.kata_oci("exec", "-d", "--pid-file", str(tmp_path / "p"), cid, "sleep", "5")
    assert r.returncode == 0, r.stderr
    assert int((tmp_path / "p").read_text()) > 0
    assert bundle.kata_oci("delete", "-f", cid).returncode == 0
    bundle.assert_clean(cid)


def test_kill_signal_reaches_init(bundle: Bundle) -> None:
    cid = bundle.new_id()
    ready = bundle.rootfs / "tmp" / "trap-ready"
    script = "trap 'exit 42' TERM; touch /tmp/trap-ready; while :; do sleep 0.1; done"
    bundle.config["process"]["args"] = ["sh", "-c", script]
    bundle.write(cid)
    assert bundle.kata_oci("run", "-d", "--bundle", str(bundle.path), cid).returncode == 0
    pid = json.loads(bundle.kata_oci("state", cid).stdout)["pid"]
    deadline = time.monotonic() + 30
    while not ready.exists() and time.monotonic() < deadline:  # the trap is installed
        time.sleep(0.05)
    assert ready.exists()
    assert bundle.kata_oci("kill", cid, "TERM").returncode == 0
    assert _wait_status(bundle, cid, "stopped")["status"] == "stopped"
    assert (
        not os.path.exists(f"/proc/{pid}/cmdline")
        or Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] in "ZX"
    )
    assert bundle.kata_oci("kill", cid, "TERM").returncode == 1
    assert bundle.kata_oci("delete", cid).returncode == 0
    bundle.assert_clean(cid)


def test_console_socket_receives_pty_master(bundle: Bundle, tmp_path: Path) -> None:
    sock_path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    cid = bundle.new_id()
    bundle.config["process"]["terminal"] = True
    bundle.config["process"]["consoleSize"] = {"height": 33, "width": 101}
    bundle.config["process"]["args"] = ["sh", "-c", "tty; stty size; echo done"]
    bundle.write(cid)
    try:
        r = bundle.kata_oci(
            "create", "--console-socket", sock_path, "--bundle", str(bundle.path), cid
        )
        assert r.returncode == 0, r.stderr
        conn, _ = srv.accept()
        _msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        assert len(fds) == 1
        master = fds[0]
        assert bundle.kata_oci("start", cid).returncode == 0
        out = b""
        deadline = time.monotonic() + 30
        while b"done" not in out and time.monotonic() < deadline:
            try:
                chunk = os.read(master, 4096)
            except OSError:
                break
            if not chunk:
                break
            out += chunk
        os.close(master)
        text = out.decode()
        assert "/dev/pts/0" in text
        assert "33 101" in text
    finally:
        srv.close()
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)


def test_kill_all_and_signal_names(bundle: Bundle) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sh", "-c", "sleep 1000 & sleep 1000 & wait"]
    bundle.write(cid)
    assert bundle.kata_oci("run", "-d", "--bundle", str(bundle.path), cid).returncode == 0
    deadline = time.monotonic() + 10
    pids: list[int] = []
    while time.monotonic() < deadline and len(pids) < 3:
        pids = json.loads(bundle.kata_oci("ps", "-f", "json", cid).stdout)
        time.sleep(0.05)
    assert len(pids) == 3
    r = bundle.kata_oci("kill", "--all", cid, "SIGKILL")
    assert r.returncode == 0, r.stderr
    assert _wait_status(bundle, cid, "stopped")["status"] == "stopped"
    assert bundle.kata_oci("kill", cid, "NOSUCHSIG").returncode == 1
    assert bundle.kata_oci("delete", cid).returncode == 0
    bundle.assert_clean(cid)
