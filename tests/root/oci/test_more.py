"""More kata-oci features: exec -t with a console socket, --preserve-fds, session keyrings,
rootfsPropagation, personality, spec and features."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from tests.root.oci.harness import Bundle


def _read_until(fd: int, marker: bytes, timeout: float = 30) -> bytes:
    out = b""
    deadline = time.monotonic() + timeout
    while marker not in out and time.monotonic() < deadline:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    return out


def test_exec_tty_through_console_socket(bundle: Bundle, tmp_path: Path) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sleep", "1000"]
    bundle.write(cid)
    assert bundle.kata_oci("run", "-d", "--bundle", str(bundle.path), cid).returncode == 0
    sock_path = str(tmp_path / "c.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(sock_path)
    srv.listen(1)
    try:
        r = bundle.kata_oci(
            "exec", "-d", "-t", "--console-socket", sock_path, cid, "sh", "-c", "tty; echo end"
        )
        assert r.returncode == 0, r.stderr
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        out = _read_until(fds[0], b"end")
        os.close(fds[0])
        assert b"/dev/pts/" in out
    finally:
        srv.close()
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)


def test_preserve_fds(bundle: Bundle, tmp_path: Path) -> None:
    import subprocess

    from tests.root.oci.harness import KATA_OCI

    data = tmp_path / "extra.txt"
    data.write_text("passed along\n")
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sh", "-c", "cat <&3; ls /proc/self/fd | wc -l"]
    bundle.write(cid)
    # A shell opens the file as fd 3 of kata-oci only (never touch the test process's fd 3).
    done = subprocess.run(
        [
            "sh",
            "-c",
            'exec 3< "$0"; exec "$@"',
            str(data),
            *KATA_OCI,
            "--root",
            str(bundle.root),
            "run",
            "--preserve-fds",
            "1",
            "--bundle",
            str(bundle.path),
            cid,
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "passed along"
    assert int(lines[1]) == 5  # 0, 1, 2, 3 and the fd ls itself opened
    bundle.assert_clean(cid)


def test_session_keyring(bundle: Bundle) -> None:
    if not os.path.exists("/proc/keys"):
        return
    cid = bundle.new_id()

    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["maskedPaths"] = [p for p in c["linux"]["maskedPaths"] if p != "/proc/keys"]

    r = bundle.run("cat", "/proc/keys", cid=cid, mutate=mutate)
    assert r.returncode == 0, r.stderr
    assert f"_ses.{cid}" in r.stdout
    cid2 = bundle.new_id()
    r = bundle.run("cat", "/proc/keys", cid=cid2, mutate=mutate, extra=("--no-new-keyring",))
    assert r.returncode == 0, r.stderr
    assert f"_ses.{cid2}" not in r.stdout


def test_rootfs_propagation_and_personality(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["rootfsPropagation"] = "private"
        c["linux"]["personality"] = {"domain": "LINUX32"}

    r = bundle.run("sh", "-c", "uname -m; awk '$5 == \"/\"' /proc/self/mountinfo", mutate=mutate)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] in ("i686", "i386")
    assert "shared:" not in lines[1]
    assert "master:" not in lines[1]


def test_spec_and_features(bundle: Bundle, tmp_path: Path) -> None:
    d = tmp_path / "newbundle"
    d.mkdir()
    r = bundle.kata_oci("spec", "--bundle", str(d))
    assert r.returncode == 0, r.stderr
    cfg = json.loads((d / "config.json").read_text())
    assert cfg["process"]["args"] == ["sh"]
    assert cfg["root"]["path"] == "rootfs"
    r = bundle.kata_oci("spec", "--bundle", str(d))
    assert r.returncode == 1
    assert "exists" in r.stderr
    r = bundle.kata_oci("features")
    assert r.returncode == 0, r.stderr
    feats = json.loads(r.stdout)
    assert "ociVersionMax" in feats
    assert "mount" in feats["linux"]["namespaces"]
    assert feats["linux"]["seccomp"]["enabled"] is True


def test_events_reports_oom(bundle: Bundle, tmp_path: Path) -> None:
    import subprocess

    from tests.root.oci.harness import KATA_OCI

    cid = bundle.new_id()
    # OOM again and again (dd is killed, the shell goes on): `events` has no readiness signal,
    # so whenever it starts watching, a later OOM is still to come.
    script = "while :; do dd if=/dev/zero of=/dev/null bs=64M count=1; sleep 0.2; done"
    bundle.config["process"]["args"] = ["sh", "-c", script]
    bundle.config["linux"]["resources"]["memory"] = {"limit": 16 << 20, "swap": 16 << 20}
    bundle.write(cid)
    assert bundle.kata_oci("create", "--bundle", str(bundle.path), cid).returncode == 0
    out = tmp_path / "events.out"
    with open(out, "w") as f:
        ev = subprocess.Popen(
            [*KATA_OCI, "--root", str(bundle.root), "events", "--interval", "60s", cid],
            stdout=f,
            stderr=subprocess.STDOUT,
        )
    try:
        assert bundle.kata_oci("start", cid).returncode == 0
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and '"oom"' not in out.read_text():
            time.sleep(0.1)
        text = out.read_text()
        assert '"type": "oom"' in text, text
    finally:
        ev.kill()
        ev.wait()
        bundle.kata_oci("delete", "--force", cid)
    bundle.assert_clean(cid)


def test_time_namespace_offsets(bundle: Bundle) -> None:
    if not os.path.exists("/proc/self/ns/time"):
        return

    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 365}}

    r = bundle.run(
        "sh", "-c", "cut -d. -f1 /proc/uptime; readlink /proc/self/ns/time", mutate=mutate
    )
    assert r.returncode == 0, r.stderr
    uptime, ns = r.stdout.split()
    assert int(uptime) >= 86400 * 365
    assert ns != os.readlink("/proc/self/ns/time")


def test_foreground_terminal_is_relayed(bundle: Bundle) -> None:
    """Like runc: run/exec -t in the foreground without a console socket relay the pty."""
    cid = bundle.new_id()

    def mutate(c: dict[str, Any]) -> None:
        c["process"]["terminal"] = True

    r = bundle.run(
        "sh",
        "-c",
        "tty; read line; echo got:$line; exit 3",
        cid=cid,
        mutate=mutate,
        input="hello\n",
    )
    assert r.returncode == 3, r.stderr
    assert "/dev/pts/0" in r.stdout
    assert "got:hello" in r.stdout
    bundle.assert_clean(cid)
    cid = bundle.new_id()
    bundle.config["process"]["terminal"] = False
    bundle.config["process"]["args"] = ["sleep", "1000"]
    bundle.write(cid)
    assert bundle.kata_oci("run", "-d", "--bundle", str(bundle.path), cid).returncode == 0
    r = bundle.kata_oci("exec", "-t", cid, "sh", "-c", "tty; exit 4")
    assert r.returncode == 4, r.stderr
    assert "/dev/pts/" in r.stdout
    assert bundle.kata_oci("delete", "-f", cid).returncode == 0
    bundle.assert_clean(cid)
