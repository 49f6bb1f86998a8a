"""kata-oci run: each feature observed from inside a busybox container."""

from __future__ import annotations

import json
import os
import subprocess
from typing import Any

import pytest

from tests.root.oci.harness import Bundle, cgroup_dirs


def test_run_returns_exit_code_and_output(bundle: Bundle) -> None:
    cid = bundle.new_id()
    r = bundle.run("sh", "-c", "echo hello; echo oops >&2; exit 7", cid=cid)
    assert r.returncode == 7, r.stderr
    assert r.stdout == "hello\n"
    assert "oops" in r.stderr
    bundle.assert_clean(cid)


def test_new_namespaces_and_hostname(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["hostname"] = "kata-test-host"
        c["domainname"] = "example.test"

    script = (
        "hostname; cat /proc/sys/kernel/domainname; cat /proc/1/cmdline; echo; "
        "for n in pid net ipc uts mnt cgroup; do readlink /proc/self/ns/$n; done; "
        "cat /proc/net/dev | tail -n +3 | cut -d: -f1"
    )
    r = bundle.run("sh", "-c", script, mutate=mutate)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split("\n")
    assert lines[0] == "kata-test-host"
    assert lines[1] == "example.test"
    assert lines[2].startswith("sh\x00-c")  # the container process is PID 1
    inside = lines[3:9]
    for name, link in zip(["pid", "net", "ipc", "uts", "mnt", "cgroup"], inside, strict=True):
        assert link != os.readlink(f"/proc/self/ns/{name}"), f"{name} namespace not private"
    assert [x.strip() for x in lines[9:] if x.strip()] == ["lo"]


def test_join_namespace_by_path(bundle: Bundle) -> None:
    holder = subprocess.Popen(["unshare", "--uts", "sh", "-c", "hostname joined-ns; sleep 60"])
    try:
        path = f"/proc/{holder.pid}/ns/uts"
        for _ in range(200):  # wait until the holder set its hostname
            out = subprocess.run(
                ["nsenter", f"--uts={path}", "hostname"],
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip()
            if out == "joined-ns":
                break

        def mutate(c: dict[str, Any]) -> None:
            c["linux"]["namespaces"] = [
                {"type": "uts", "path": path} if n["type"] == "uts" else n
                for n in c["linux"]["namespaces"]
            ]

        r = bundle.run("sh", "-c", "hostname; readlink /proc/self/ns/uts", mutate=mutate)
        assert r.returncode == 0, r.stderr
        name, link = r.stdout.split()
        assert name == "joined-ns"
        assert link == os.readlink(path)
    finally:
        holder.kill()
        holder.wait()


def test_user_namespace_with_id_maps(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [m for m in c["mounts"] if m["destination"] != "/sys/fs/cgroup"]

    r = bundle.run(
        "sh",
        "-c",
        "cat /proc/self/uid_map /proc/self/gid_map; id -u; "
        "ls -ln /bin/busybox | awk '{print $3}'; readlink /proc/self/ns/user",
        mutate=mutate,
    )
    assert r.returncode == 0, r.stderr
    lines = [x.split() for x in r.stdout.strip().split("\n")]
    assert lines[0] == ["0", "100000", "65536"]
    assert lines[1] == ["0", "100000", "65536"]
    assert lines[2] == ["0"]
    assert lines[3] == ["65534"]  # host root is not mapped: files owned by it show as overflow
    assert lines[4][0] != os.readlink("/proc/self/ns/user")


def test_mounts_of_every_kind(bundle: Bundle, tmp_path: Any) -> None:
    src = tmp_path / "shared"
    src.mkdir()
    (src / "file").write_text("from host\n")
    single = tmp_path / "single.txt"
    single.write_text("one file\n")

    def mutate(c: dict[str, Any]) -> None:
        c["mounts"] += [
            {
                "destination": "/data",
                "type": "bind",
                "source": str(src),
                "options": ["rbind", "ro", "rprivate"],
            },
            {
                "destination": "/etc/single.txt",
                "type": "bind",
                "source": str(single),
                "options": ["bind", "rw"],
            },
            {
                "destination": "/scratch",
                "type": "tmpfs",
                "source": "tmpfs",
                "options": ["nosuid", "nodev", "size=1m", "mode=1770"],
            },
        ]

    script = (
        "cat /data/file /etc/single.txt; touch /data/x 2>/dev/null && echo WRITABLE; "
        "stat -c %a /scratch; cat /proc/self/mountinfo"
    )
    r = bundle.run("sh", "-c", script, mutate=mutate)
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert out.startswith("from host\none file\n")
    assert "WRITABLE" not in out
    assert "\n1770\n" in out
    info = {line.split()[4]: line for line in out.splitlines() if len(line.split()) > 4}
    assert " ro," in info["/data"] or info["/data"].split()[5].startswith("ro")
    assert "tmpfs" in info["/scratch"]
    assert "size=1024k" in info["/scratch"]
    for dest, fstype in (
        ("/proc", "proc"),
        ("/dev", "tmpfs"),
        ("/dev/pts", "devpts"),
        ("/dev/shm", "tmpfs"),
        ("/dev/mqueue", "mqueue"),
        ("/sys", "sysfs"),
    ):
        assert dest in info, f"{dest} not mounted"
        assert f" - {fstype} " in info[dest]
    assert any(m.startswith("/sys/fs/cgroup") for m in info), "no cgroup mount"
    assert info["/"].split()[3] == "/" or True  # the root is the pivoted bundle rootfs
    assert info["/sys"].split()[5].startswith("ro")


def test_dev_setup(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["devices"] = [
            {
                "path": "/dev/mynull",
                "type": "c",
                "major": 1,
                "minor": 3,
                "fileMode": 0o620,
                "uid": 0,
                "gid": 0,
            }
        ]
        c["linux"]["resources"]["devices"].append(
            {"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rwm"}
        )

    script = (
        "ls /dev | sort | tr '\\n' ' '; echo; stat -c '%t:%T %a' /dev/null /dev/mynull; "
        "readlink /dev/ptmx; readlink /dev/fd; readlink /dev/stdin; "
        "echo x > /dev/mynull && echo OK"
    )
    r = bundle.run("sh", "-c", script, mutate=mutate)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    present = set(lines[0].split())
    assert {
        "null",
        "zero",
        "full",
        "random",
        "urandom",
        "tty",
        "ptmx",
        "fd",
        "stdin",
        "stdout",
        "stderr",
        "pts",
        "shm",
        "mqueue",
        "mynull",
    } <= present
    assert lines[1] == "1:3 666"
    assert lines[2] == "1:3 620"
    assert lines[3:6] == ["pts/ptmx", "/proc/self/fd", "/proc/self/fd/0"]
    assert lines[6] == "OK"


def test_masked_and_readonly_paths(bundle: Bundle) -> None:
    secret = bundle.rootfs / "secret"
    secret.mkdir()
    (secret / "key").write_text("s3cr3t")
    (bundle.rootfs / "etc" / "token").write_text("t0ken")
    ro = bundle.rootfs / "rodir"
    ro.mkdir()

    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["maskedPaths"] += ["/secret", "/etc/token", "/does/not/exist"]
        c["linux"]["readonlyPaths"] += ["/rodir"]

    script = (
        "ls -A /secret | wc -l; cat /etc/token | wc -c; "
        "if [ -e /proc/kcore ]; then wc -c < /proc/kcore; else echo 0; fi; "
        "touch /rodir/x 2>/dev/null && echo RW-RODIR; "
        "echo 1 > /proc/sys/kernel/domainname 2>/dev/null && echo RW-PROCSYS; echo done"
    )
    r = bundle.run("sh", "-c", script, mutate=mutate)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["0", "0", "0", "done"]


def test_sysctl(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.msgmax": "12345"}

    r = bundle.run(
        "sh", "-c", "cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/msgmax", mutate=mutate
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["1", "12345"]


def test_process_user_caps_limits(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        p = c["process"]
        p["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [100, 5], "umask": 0o027}
        p["cwd"] = "/home/user"
        p["env"].append("GREETING=hi there")
        p["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 777, "soft": 555}]
        p["oomScoreAdj"] = 123
        p["noNewPrivileges"] = True
        p["capabilities"] = {
            "bounding": ["CAP_KILL", "CAP_CHOWN"],
            "effective": ["CAP_KILL"],
            "permitted": ["CAP_KILL"],
            "inheritable": ["CAP_KILL"],
            "ambient": ["CAP_KILL"],
        }

    script = (
        "id -u; id -g; id -G; pwd; echo $GREETING; echo $HOME; ulimit -n; ulimit -Hn; "
        "cat /proc/self/oom_score_adj; umask; grep -E '^(Cap|NoNewPrivs)' /proc/self/status"
    )
    r = bundle.run("sh", "-c", script, mutate=mutate)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[0:2] == ["1000", "1000"]
    assert sorted(lines[2].split()) == ["100", "1000", "5"]
    assert lines[3:6] == ["/home/user", "hi there", "/home/user"]
    assert lines[6:9] == ["555", "777", "123"]
    assert lines[9] == "0027"
    status = dict(line.split(":\t") for line in lines[10:])
    kill = f"{1 << 5:016x}"
    assert status["CapInh"] == kill
    assert status["CapPrm"] == kill
    assert status["CapEff"] == kill
    assert status["CapAmb"] == kill
    assert status["CapBnd"] == f"{(1 << 5) | 1:016x}"
    assert status["NoNewPrivs"] == "1"


@pytest.mark.parametrize("nnp", [True, False])
def test_seccomp_errno_and_argument_conditions(bundle: Bundle, nnp: bool) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["process"]["noNewPrivileges"] = nnp
        c["linux"]["seccomp"] = {
            "defaultAction": "SCMP_ACT_ALLOW",
            "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"],
            "syscalls": [
                {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {
                    "names": ["chmod"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1,
                    "args": [{"index": 1, "value": 0o777, "op": "SCMP_CMP_EQ"}],
                },
                {
                    "names": ["fchmodat"],
                    "action": "SCMP_ACT_ERRNO",
                    "errnoRet": 1,
                    "args": [{"index": 2, "value": 0o777, "op": "SCMP_CMP_EQ"}],
                },
            ],
        }

    script = (
        "mkdir /tmp/d 2>&1; touch /tmp/f; chmod 755 /tmp/f && echo chmod-755-ok; "
        "chmod 777 /tmp/f 2>&1; grep Seccomp: /proc/self/status"
    )
    r = bundle.run("sh", "-c", script, mutate=mutate)
    assert r.returncode == 0, r.stderr
    assert "Permission denied" in r.stdout  # errnoRet 13 = EACCES
    assert "chmod-755-ok" in r.stdout
    assert "Operation not permitted" in r.stdout  # the argument condition matched 0777
    assert "Seccomp:\t2" in r.stdout


def test_readonly_root_and_no_pivot(bundle: Bundle) -> None:
    def mutate(c: dict[str, Any]) -> None:
        c["root"]["readonly"] = True

    r = bundle.run(
        "sh",
        "-c",
        "touch /x 2>/dev/null && echo RW; touch /tmp/y && echo TMP-RW",
        mutate=mutate,
        extra=("--no-pivot",),
    )
    # /tmp is part of the read-only root here.
    assert r.returncode == 1, r.stderr
    assert r.stdout == ""


def test_apparmor_label_without_apparmor_warns(bundle: Bundle) -> None:
    if os.path.exists("/sys/kernel/security/apparmor"):
        pytest.skip("apparmor is enabled here")

    def mutate(c: dict[str, Any]) -> None:
        c["process"]["apparmorProfile"] = "some-profile"

    r = bundle.run("true", mutate=mutate)
    assert r.returncode == 0, r.stderr
    assert "apparmor is not enabled" in r.stderr


def test_cgroup_resources_applied(bundle: Bundle) -> None:
    cid = bundle.new_id()

    def mutate(c: dict[str, Any]) -> None:
        c["linux"]["resources"].update(
            {"memory": {"limit": 64 << 20}, "pids": {"limit": 42}, "cpu": {"shares": 512}}
        )

    v2 = os.path.exists("/sys/fs/cgroup/cgroup.controllers")
    files = (
        "memory.max pids.max cpu.weight"
        if v2
        else "memory/memory.limit_in_bytes pids/pids.max cpu/cpu.shares"
    )
    probe = "/sys/fs/cgroup/x" if v2 else "/sys/fs/cgroup/pids/x"
    script = (
        "cat /proc/self/cgroup; echo ==; cd /sys/fs/cgroup; cat "
        + files
        + f"; touch {probe} 2>/dev/null || echo RO"
    )
    r = bundle.run("sh", "-c", script, cid=cid, mutate=mutate)
    assert r.returncode == 0, r.stderr
    own, _, limits = r.stdout.partition("==\n")
    # The cgroup namespace hides the host path: the container's cgroup is its root.
    assert f"{bundle.cgroup_parent}/{cid}" not in own
    assert ("0::/\n" if v2 else ":pids:/\n") in own
    # The cgroup mount shows the container's own limits, read-only.
    weight = "20" if v2 else "512"  # shares 512 -> weight 20 (runc's conversion)
    assert limits.split() == [str(64 << 20), "42", weight, "RO"]
    bundle.assert_clean(cid)


def test_hooks_get_state_and_run_in_order(bundle: Bundle, tmp_path: Any) -> None:
    log = tmp_path / "hooks.log"
    cid = bundle.new_id()

    def hook(name: str) -> dict[str, Any]:
        return {
            "path": "/bin/sh",
            "args": ["sh", "-c", f'read s; echo "{name} $s" >> {log}'],
            "env": ["PATH=/bin:/usr/bin"],
            "timeout": 10,
        }

    def mutate(c: dict[str, Any]) -> None:
        # startContainer runs inside the container: make the log reachable there too.
        c["mounts"].append(
            {
                "destination": str(tmp_path),
                "type": "bind",
                "source": str(tmp_path),
                "options": ["rbind"],
            }
        )
        c["hooks"] = {
            k: [hook(k)]
            for k in (
                "prestart",
                "createRuntime",
                "createContainer",
                "startContainer",
                "poststart",
                "poststop",
            )
        }

    r = bundle.run("true", cid=cid, mutate=mutate)
    assert r.returncode == 0, r.stderr
    entries = [line.split(" ", 1) for line in log.read_text().splitlines()]
    assert [e[0] for e in entries] == [
        "prestart",
        "createRuntime",
        "createContainer",
        "startContainer",
        "poststart",
        "poststop",
    ]
    for name, state in entries:
        doc = json.loads(state)
        assert doc["id"] == cid, name
        assert doc["bundle"] == str(bundle.path)
    assert json.loads(entries[0][1])["pid"] > 0
    bundle.assert_clean(cid)


def test_cgroup_dirs_removed_after_run(bundle: Bundle) -> None:
    cid = bundle.new_id()
    r = bundle.run("true", cid=cid)
    assert r.returncode == 0, r.stderr
    assert cgroup_dirs(f"{bundle.cgroup_parent}/{cid}") == []
