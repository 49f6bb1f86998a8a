"""Bad input: a clear error (step, path, errno) and nothing left behind (state, cgroups,
processes, mounts)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.root.oci.harness import Bundle, host_mounts_mentioning


def _nothing_left(b: Bundle, cid: str) -> None:
    b.assert_clean(cid)
    assert b.kata_oci("list", "-q").stdout.split() == []
    # No process of ours still runs with the bundle's rootfs as its root.
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                continue
            assert not root.startswith(str(b.rootfs)), f"process {pid} left in the container"


def _set(path: list[str], value: Any) -> Callable[[dict[str, Any]], None]:
    def mutate(c: dict[str, Any]) -> None:
        d = c
        for k in path[:-1]:
            d = d.setdefault(k, {})
        d[path[-1]] = value

    return mutate


CASES: dict[str, tuple[Callable[[dict[str, Any]], None], str]] = {
    "unknown namespace": (
        _set(["linux", "namespaces"], [{"type": "mount"}, {"type": "foo"}]),
        'linux.namespaces[1].type: unknown namespace "foo"',
    ),
    "unknown capability": (
        _set(["process", "capabilities"], {"bounding": ["CAP_KILL", "CAP_FLY"]}),
        "CAP_FLY",
    ),
    "unknown syscall": (
        _set(
            ["linux", "seccomp"],
            {
                "defaultAction": "SCMP_ACT_ALLOW",
                "syscalls": [{"names": ["no_such_syscall"], "action": "SCMP_ACT_ERRNO"}],
            },
        ),
        'unknown syscall "no_such_syscall"',
    ),
    "missing executable": (
        _set(["process", "args"], ["/no/such/binary"]),
        "/no/such/binary",
    ),
    "unknown mount type": (
        _set(
            ["mounts"],
            [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {"destination": "/x", "type": "nosuchfs", "source": "none"},
            ],
        ),
        "mount /x",
    ),
    "missing bind source": (
        _set(
            ["mounts"],
            [
                {"destination": "/proc", "type": "proc", "source": "proc"},
                {
                    "destination": "/data",
                    "type": "bind",
                    "source": "/no/such/dir",
                    "options": ["rbind"],
                },
            ],
        ),
        "/no/such/dir",
    ),
    "hook fails": (
        _set(["hooks"], {"prestart": [{"path": "/bin/false"}]}),
        "prestart hook #0 /bin/false: exit status 1",
    ),
    "hook times out": (
        _set(
            ["hooks"],
            {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"], "timeout": 1}]},
        ),
        "timed out after 1s",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_spec_fails_cleanly(bundle: Bundle, case: str) -> None:
    mutate, expected = CASES[case]
    cid = bundle.new_id()
    r = bundle.run("true", cid=cid, mutate=mutate)
    assert r.returncode == 1, r.stdout
    assert expected in r.stderr.replace('\\"', '"')  # logfmt escapes quotes
    assert "level=error" in r.stderr
    _nothing_left(bundle, cid)


def test_mount_through_climbing_symlink_stays_inside(bundle: Bundle, tmp_path: Path) -> None:
    """/evil -> ../../../../..<outside> climbs out of the rootfs: it is clamped at the rootfs
    (as the container would see it), so the mount lands inside and nothing happens outside."""
    outside = tmp_path / "outside"
    outside.mkdir()
    depth = len(bundle.rootfs.parts) - 1
    os.symlink("../" * depth + str(outside).lstrip("/"), bundle.rootfs / "evil")
    cid = bundle.new_id()

    def mutate(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": "/evil", "type": "tmpfs", "source": "tmpfs"})

    r = bundle.run(
        "sh",
        "-c",
        f"grep -c ' {outside} ' /proc/self/mountinfo || true",
        cid=cid,
        mutate=mutate,
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"  # in the container's view: <rootfs><outside>
    assert host_mounts_mentioning(str(outside)) == []
    assert list(outside.iterdir()) == []
    _nothing_left(bundle, cid)


def test_absolute_symlink_stays_inside_rootfs(bundle: Bundle, tmp_path: Path) -> None:
    """An absolute link is resolved inside the rootfs (as the container sees it)."""
    os.symlink("/tmp", bundle.rootfs / "abs")
    cid = bundle.new_id()

    def mutate(c: dict[str, Any]) -> None:
        c["mounts"].append({"destination": "/abs/inner", "type": "tmpfs", "source": "tmpfs"})

    r = bundle.run(
        "sh", "-c", "grep -c ' /tmp/inner ' /proc/self/mountinfo", cid=cid, mutate=mutate
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "1"
    assert not Path("/tmp/inner").exists() or Path("/tmp/inner").is_dir()
    _nothing_left(bundle, cid)


def test_missing_rootfs(bundle: Bundle) -> None:
    cid = bundle.new_id()
    r = bundle.run("true", cid=cid, mutate=_set(["root", "path"], "no-such-rootfs"))
    assert r.returncode == 1
    assert "no-such-rootfs" in r.stderr
    assert "does not exist" in r.stderr
    _nothing_left(bundle, cid)


def test_invalid_bundle(bundle: Bundle, tmp_path: Path) -> None:
    cid = bundle.new_id()
    (bundle.path / "config.json").write_text("{not json")
    r = bundle.kata_oci("create", "--bundle", str(bundle.path), cid)
    assert r.returncode == 1
    assert "invalid JSON" in r.stderr
    r = bundle.kata_oci("create", "--bundle", str(tmp_path / "nope"), cid)
    assert r.returncode == 1
    assert "no such file or directory" in r.stderr
    _nothing_left(bundle, cid)


def test_duplicate_id(bundle: Bundle) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["args"] = ["sleep", "1000"]
    bundle.write(cid)
    assert bundle.kata_oci("create", "--bundle", str(bundle.path), cid).returncode == 0
    r = bundle.kata_oci("create", "--bundle", str(bundle.path), cid)
    assert r.returncode == 1
    assert "container with given ID already exists" in r.stderr
    # The first container is untouched.
    assert bundle.kata_oci("start", cid).returncode == 0
    assert bundle.kata_oci("delete", "--force", cid).returncode == 0
    _nothing_left(bundle, cid)


def test_invalid_id_and_unknown_container(bundle: Bundle) -> None:
    r = bundle.kata_oci("create", "--bundle", str(bundle.path), "../escape")
    assert r.returncode == 1
    assert "invalid container id" in r.stderr
    for cmd in ("start", "state", "kill", "delete", "pause", "resume", "ps"):
        r = bundle.kata_oci(cmd, "nonexistent")
        assert r.returncode == 1, cmd
        assert "container does not exist" in r.stderr, cmd
    assert bundle.kata_oci("delete", "--force", "nonexistent").returncode == 0


def test_usage_errors(bundle: Bundle) -> None:
    r = bundle.kata_oci("create")
    assert r.returncode == 1
    assert "requires exactly 1 argument" in r.stderr
    r = bundle.kata_oci("nosuchcommand")
    assert r.returncode == 3
    r = bundle.kata_oci("start", "--bogus", "x")
    assert r.returncode == 1
    assert "flag provided but not defined: --bogus" in r.stderr


def test_json_log_format(bundle: Bundle, tmp_path: Path) -> None:
    log = tmp_path / "log.json"
    r = bundle.kata_oci("--log", str(log), "--log-format", "json", "state", "nonexistent")
    assert r.returncode == 1
    assert r.stderr.strip() == "container does not exist"
    import json

    entry = json.loads(log.read_text().splitlines()[-1])
    assert entry["level"] == "error"
    assert entry["msg"] == "container does not exist"


def test_failure_inside_init_names_step_path_and_errno(bundle: Bundle) -> None:
    cid = bundle.new_id()

    def mutate(c: dict[str, Any]) -> None:
        # proc must be mounted on a directory: /etc/passwd is a file.
        c["mounts"].append({"destination": "/etc/passwd", "type": "proc", "source": "proc"})

    r = bundle.run("true", cid=cid, mutate=mutate)
    assert r.returncode == 1
    assert "mount /etc/passwd" in r.stderr
    assert "Not a directory" in r.stderr
    _nothing_left(bundle, cid)


def test_terminal_without_console_socket(bundle: Bundle) -> None:
    cid = bundle.new_id()
    bundle.config["process"]["terminal"] = True
    bundle.write(cid)
    r = bundle.kata_oci("create", "--bundle", str(bundle.path), cid)
    assert r.returncode == 1
    assert "cannot allocate tty if kata-oci will detach without setting console socket" in r.stderr
    r = bundle.kata_oci("run", "-d", "--bundle", str(bundle.path), cid)
    assert r.returncode == 1
    _nothing_left(bundle, cid)
