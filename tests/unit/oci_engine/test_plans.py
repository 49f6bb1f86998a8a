"""Pure parts of the engine and the recording fake: mount options, secure join, process and
seccomp plans, init steps against RecordingSyscalls, CLI parsing."""

from __future__ import annotations

import errno
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from oci import safepath
from oci import spec as ocispec
from oci.engine import rootfs as rfs
from oci.engine import sync
from oci.engine.errors import InitError, InvalidArgument
from oci.engine.init import (
    CREATE_STEPS,
    CREATE_STEPS_NO_MNTNS,
    EXEC_STEPS,
    InitConfig,
    _Ctx,
    _Named,
)
from oci.engine.process import find_executable, plan_process, plan_seccomp
from oci.syscalls import consts as c
from oci.syscalls import mountopts
from oci.syscalls.fake import Call, RecordingSyscalls


def test_plan_mount_flags_propagation_and_data() -> None:
    op = rfs.plan_mount(
        "/x",
        "tmpfs",
        "tmpfs",
        ("nosuid", "nodev", "ro", "rbind", "rslave", "mode=755", "size=65536k", "rw", "nofail"),
        "/b",
    )
    assert op.flags == c.MS_NOSUID | c.MS_NODEV | c.MS_BIND | c.MS_REC
    assert op.clear & c.MS_RDONLY  # "rw" after "ro" wins
    assert op.propagation == (c.MS_SLAVE | c.MS_REC,)
    assert op.data == "mode=755,size=65536k"  # runc's own options never reach the kernel


@pytest.mark.parametrize("option", sorted(mountopts.FLAGS))
def test_the_engine_and_the_agent_read_mount_options_alike(option: str) -> None:
    from agent.storage import mountopts as agent_mountopts

    engine = rfs.plan_mount("/x", "/src", None, (option,), "/b")
    agent = agent_mountopts.parse([option])
    assert (engine.flags, engine.clear) == (agent.flags, agent.clear)
    assert (engine.flags, engine.clear) != (0, 0) or option == "defaults"


def test_plan_mount_makes_relative_bind_source_absolute() -> None:
    op = rfs.plan_mount("/data", "shared", "bind", ("rbind",), "/b")
    assert op.is_bind
    assert op.source == "/b/shared"
    assert "/data" in op.describe()


@pytest.fixture(params=["openat2", "walk"])
def resolver(request: pytest.FixtureRequest) -> Iterator[None]:
    safepath.set_openat2(None if request.param == "openat2" else False)
    yield
    safepath.set_openat2(None)


@pytest.mark.usefixtures("resolver")
def test_mount_destinations_resolve_inside_the_rootfs(tmp_path: Path) -> None:
    """As the container sees its rootfs: absolute links are rooted there and a link that
    climbs out is clamped at the rootfs (the kernel's RESOLVE_IN_ROOT, as runc)."""
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    os.symlink("/etc", root / "abs")
    (root / "sub").mkdir()
    os.symlink("../etc", root / "sub" / "rel")
    os.symlink("../../../../../../../../tmp", root / "evil")
    fd = safepath.open_root(root)
    try:
        for dest, expect in (
            ("/abs/x", root / "etc" / "x"),
            ("sub/rel/y", root / "etc" / "y"),
            ("/../../z", root / "z"),
            ("/evil/w", root / "tmp" / "w"),
        ):
            made = rfs._dest_dir(fd, dest)
            assert safepath.real_path(made) == str(expect)
            os.close(made)
    finally:
        os.close(fd)
    assert not Path("/tmp/w").exists()


@pytest.mark.usefixtures("resolver")
def test_mount_destination_symlink_loop(tmp_path: Path) -> None:
    os.symlink("b", tmp_path / "a")
    os.symlink("a", tmp_path / "b")
    fd = safepath.open_root(tmp_path)
    try:
        with pytest.raises(OSError, match="mount point") as info:
            rfs._dest_dir(fd, "/a/x")
        assert info.value.errno == errno.ELOOP
    finally:
        os.close(fd)


def _process(**kw: object) -> ocispec.Process:
    base: dict[str, object] = {"args": ("sh",), "cwd": "/"}
    base.update(kw)
    return ocispec.Process(**base)  # type: ignore[arg-type]


def test_plan_process_resolves_names() -> None:
    caps = ocispec.LinuxCapabilities(bounding=("CAP_KILL", "chown"), effective=("CAP_KILL",))
    rl = (ocispec.POSIXRlimit(type="RLIMIT_NOFILE", soft=10, hard=20),)
    plan = plan_process(_process(capabilities=caps, rlimits=rl, oom_score_adj=5), None)
    assert plan.caps is not None
    assert plan.caps.bounding == frozenset({5, 0})
    assert plan.caps.effective == frozenset({5})
    assert plan.rlimits == ((7, 10, 20),)
    assert plan.oom_score_adj == 5


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (
            {"capabilities": ocispec.LinuxCapabilities(ambient=("CAP_FLY",))},
            'unknown capability "CAP_FLY"',
        ),
        ({"rlimits": (ocispec.POSIXRlimit(type="RLIMIT_X", soft=1, hard=1),)}, "RLIMIT_X"),
        ({"args": ()}, "process.args"),
    ],
)
def test_plan_process_rejects_bad_names(kw: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        plan_process(_process(**kw), None)


def test_plan_seccomp() -> None:
    sc = ocispec.LinuxSeccomp(
        default_action="SCMP_ACT_ERRNO",
        default_errno_ret=38,
        architectures=("SCMP_ARCH_X86_64",),
        flags=("SECCOMP_FILTER_FLAG_LOG",),
        syscalls=(
            ocispec.LinuxSyscall(
                names=("read", "write"),
                action="SCMP_ACT_ALLOW",
                args=(ocispec.LinuxSeccompArg(index=0, value=1, op="SCMP_CMP_EQ"),),
            ),
        ),
    )
    plan = plan_seccomp(sc)
    assert plan is not None
    assert plan.default_action == 0x00050000 | 38
    assert plan.rules[0].names == ("read", "write")
    assert plan.rules[0].conditions[0].op == 4


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"default_action": "SCMP_ACT_BOGUS"}, "unknown seccomp action"),
        ({"architectures": ("SCMP_ARCH_PDP11",)}, "unknown architecture"),
        ({"flags": ("SECCOMP_FILTER_FLAG_X",)}, "unsupported flag"),
        (
            {"syscalls": (ocispec.LinuxSyscall(names=("nope_nope",), action="SCMP_ACT_ALLOW"),)},
            'unknown syscall "nope_nope"',
        ),
        (
            {
                "syscalls": (
                    ocispec.LinuxSyscall(
                        names=("read",),
                        action="SCMP_ACT_ALLOW",
                        args=(ocispec.LinuxSeccompArg(index=0, value=1, op="SCMP_CMP_LIKE"),),
                    ),
                )
            },
            "unknown operator",
        ),
    ],
)
def test_plan_seccomp_rejects_bad_input(change: dict[str, object], message: str) -> None:
    base: dict[str, object] = {"default_action": "SCMP_ACT_ALLOW"}
    base.update(change)
    with pytest.raises(InvalidArgument, match=message):
        plan_seccomp(ocispec.LinuxSeccomp(**base))  # type: ignore[arg-type]


def test_find_executable(tmp_path: Path) -> None:
    exe = tmp_path / "tool"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    assert find_executable("tool", (f"PATH=/nonexistent:{tmp_path}",)) == str(exe)
    with pytest.raises(OSError, match="executable file not found in"):
        find_executable("nope", (f"PATH={tmp_path}",))


def _ctx(cfg: InitConfig, fake: RecordingSyscalls) -> _Ctx:
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    b.close()
    return _Ctx(cfg, fake, a)


def test_rootfs_steps_against_the_fake(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    (rootfs / "proc").mkdir(parents=True)
    plan = plan_process(_process(), None)
    mounts = (
        rfs.plan_mount("/proc", "proc", "proc", ("nosuid",), str(tmp_path)),
        rfs.plan_mount("/tmp", "tmpfs", "tmpfs", ("size=1m", "rprivate"), str(tmp_path)),
    )
    cfg = InitConfig(
        mode="create",
        container_id="c1",
        process=plan,
        rootfs=str(rootfs),
        mounts=mounts,
        ns_new=c.CLONE_NEWNS | c.CLONE_NEWUTS,
        hostname="h",
    )
    fake = RecordingSyscalls()
    steps = dict(CREATE_STEPS)
    x = _ctx(cfg, fake)
    for name in ("bind rootfs", "mounts", "hostname"):
        steps[name](x)
    assert fake.calls[0] == Call(
        "mount", str(rootfs), str(rootfs), "bind", c.MS_BIND | c.MS_REC, None
    )
    assert fake.mounts[str(rootfs / "proc")] == ("proc", "proc", c.MS_NOSUID, None)
    assert fake.mounts[str(rootfs / "tmp")][3] == "size=1m"
    assert (
        Call("mount", None, str(rootfs / "tmp"), None, c.MS_PRIVATE | c.MS_REC, None) in fake.calls
    )
    assert fake.calls[-1] == Call("sethostname", "h")


def test_hostname_not_set_in_a_joined_uts_namespace() -> None:
    cfg = InitConfig(
        mode="create",
        container_id="c1",
        process=plan_process(_process(), None),
        hostname="h",
        ns_new=c.CLONE_NEWNS,
    )
    fake = RecordingSyscalls()
    dict(CREATE_STEPS)["hostname"](_ctx(cfg, fake))
    assert fake.calls == []


def test_failing_mount_names_the_destination(tmp_path: Path) -> None:
    rootfs = tmp_path / "rootfs"
    rootfs.mkdir()
    cfg = InitConfig(
        mode="create",
        container_id="c1",
        process=plan_process(_process(), None),
        rootfs=str(rootfs),
        ns_new=c.CLONE_NEWNS,
        mounts=(rfs.plan_mount("/proc", "proc", "proc", (), str(tmp_path)),),
    )
    fake = RecordingSyscalls()
    fake.fail("mount", errno.EACCES, target=str(rootfs / "proc"))
    with pytest.raises(_Named) as info:
        dict(CREATE_STEPS)["mounts"](_ctx(cfg, fake))
    assert info.value.step == "mount /proc"
    assert info.value.err.errno == errno.EACCES


def test_credential_steps_order() -> None:
    caps = ocispec.LinuxCapabilities(
        bounding=("CAP_KILL",), effective=("CAP_KILL",), permitted=("CAP_KILL",)
    )
    plan = plan_process(
        _process(
            capabilities=caps,
            no_new_privileges=True,
            user=ocispec.User(uid=5, gid=6, additional_gids=(7,)),
        ),
        None,
    )
    cfg = InitConfig(mode="exec", container_id="c1", process=plan)
    fake = RecordingSyscalls()
    x = _ctx(cfg, fake)
    steps = dict(EXEC_STEPS)
    for name in ("no_new_privs", "capabilities bounding set", "user", "capabilities"):
        steps[name](x)
    assert fake.names() == [
        "set_no_new_privs",
        "drop_bounding_set",
        "set_keepcaps",
        "setgroups",
        "setresgid",
        "setresuid",
        "set_keepcaps",
        "set_capabilities",
    ]
    assert fake.calls[3] == Call("setgroups", (7,))


def test_step_lists() -> None:
    names = [n for n, _ in CREATE_STEPS]
    assert names.index("mounts") < names.index("prestart hooks") < names.index("pivot_root")
    assert names.index("pivot_root") < names.index("masked paths")
    assert names.index("capabilities bounding set") < names.index("user")
    no_mnt = [n for n, _ in CREATE_STEPS_NO_MNTNS]
    assert "pivot_root" not in no_mnt
    assert "chroot" in no_mnt


def test_sync_error_roundtrip() -> None:
    a, b = sync.pair()
    try:
        sync.send_error(b, "mount /proc", OSError(errno.EPERM, "mount", "/r/proc"))
        with pytest.raises(InitError) as info:
            sync.expect(a, "ready", "init")
        assert info.value.step == "mount /proc"
        assert info.value.errno == errno.EPERM
        assert info.value.path == "/r/proc"
        assert "Operation not permitted" in str(info.value)
        b.close()
        with pytest.raises(InitError, match="exited unexpectedly"):
            sync.recv(a, "devices")
    finally:
        a.close()
        b.close()


def test_cli_parser() -> None:
    from oci.cli import COMMANDS, GLOBAL, UsageError, _parse, parse_signal

    g, rest = _parse(
        ["--root", "/r", "--debug", "exec", "-t", "c1", "sh", "-c", "x"],
        GLOBAL,
        stop_at_positional=True,
    )
    assert g.opts == {"root": "/r", "debug": True}
    a, _ = _parse(rest[1:], COMMANDS["exec"], stop_at_positional=False)
    assert a.opts == {"tty": True}
    assert a.pos == ["c1", "sh", "-c", "x"]
    a, _ = _parse(["-e", "A=1", "--env=B=2", "c"], COMMANDS["exec"], stop_at_positional=False)
    assert a.opts["env"] == ["A=1", "B=2"]
    with pytest.raises(UsageError, match="flag provided but not defined"):
        _parse(["--nope"], COMMANDS["start"], stop_at_positional=False)
    assert parse_signal("KILL") == 9
    assert parse_signal("sigterm") == 15
    assert parse_signal("10") == 10
    with pytest.raises(UsageError):
        parse_signal("NOPE")


def test_state_id_check() -> None:
    from oci.engine.state import check_id

    check_id("abc-1.2_x+y")
    for bad in ("", "..", "a/b", "a b"):
        with pytest.raises(InvalidArgument):
            check_id(bad)
