"""`oci.engine.inplace` without processes: which execs take the lean path, the namespace join
order, and the environment the program gets."""

from __future__ import annotations

import dataclasses
import errno

import pytest

from oci import spec as ocispec
from oci.engine.errors import InitError
from oci.engine.init import InitConfig
from oci.engine.inplace import cgroup_checks_at_open, is_lean, join_namespaces
from oci.engine.process import exec_env, plan_process
from oci.syscalls import consts as c
from oci.syscalls.fake import RecordingSyscalls


def _cfg(**process: object) -> InitConfig:
    proc = ocispec.Process(args=("true",), cwd="/", **process)  # type: ignore[arg-type]
    return InitConfig(
        mode="exec", container_id="c", process=plan_process(proc, None), stdio=(4, 5, 6)
    )


def test_plain_and_terminal_execs_are_lean() -> None:
    assert is_lean(_cfg())
    assert is_lean(_cfg(terminal=True))
    assert is_lean(_cfg(no_new_privileges=True, user=ocispec.User(uid=1000, gid=1000)))


def test_what_must_happen_in_the_process_takes_the_init_steps() -> None:
    seccomp = ocispec.LinuxSeccomp(default_action="SCMP_ACT_ALLOW")
    proc = ocispec.Process(args=("true",), cwd="/")
    with_seccomp = InitConfig(
        mode="exec", container_id="c", process=plan_process(proc, seccomp), stdio=(4, 5, 6)
    )
    assert not is_lean(with_seccomp)
    # with no_new_privs the filter is loaded last, by the process itself: lean
    nnp = ocispec.Process(args=("true",), cwd="/", no_new_privileges=True)
    with_seccomp_nnp = InitConfig(
        mode="exec", container_id="c", process=plan_process(nnp, seccomp), stdio=(4, 5, 6)
    )
    assert is_lean(with_seccomp_nnp)
    assert not is_lean(_cfg(apparmor_profile="p"))
    assert not is_lean(_cfg(selinux_label="l"))
    assert not is_lean(dataclasses.replace(_cfg(), console_fd=7))
    assert not is_lean(dataclasses.replace(_cfg(), preserve_fds=1))
    assert not is_lean(dataclasses.replace(_cfg(), stdio=None))
    assert not is_lean(dataclasses.replace(_cfg(), mode="create"))


def test_namespaces_are_joined_user_first_mount_last() -> None:
    sys_ = RecordingSyscalls()
    join_namespaces(
        sys_,
        (
            (10, c.CLONE_NEWNS, "/proc/1/ns/mnt"),
            (11, c.CLONE_NEWPID, "/proc/1/ns/pid"),
            (12, c.CLONE_NEWUSER, "/proc/1/ns/user"),
            (13, c.CLONE_NEWIPC, "/proc/1/ns/ipc"),
        ),
    )
    setns = [call.args for call in sys_.calls if call.name == "setns"]
    assert setns == [
        (c.CLONE_NEWUSER, "/proc/1/ns/user"),
        (c.CLONE_NEWPID, "/proc/1/ns/pid"),
        (c.CLONE_NEWIPC, "/proc/1/ns/ipc"),
        (c.CLONE_NEWNS, "/proc/1/ns/mnt"),
    ]
    names = [call.name for call in sys_.calls]
    # root of the joined user namespace right after joining it
    assert names[1:3] == ["setresgid", "setresuid"]


def test_a_failed_join_names_the_namespace() -> None:
    sys_ = RecordingSyscalls()
    sys_.fail("setns", errno.EPERM)
    with pytest.raises(InitError) as info:
        join_namespaces(sys_, ((10, c.CLONE_NEWNET, "/proc/9/ns/net"),))
    assert info.value.step == "join namespace /proc/9/ns/net"
    assert info.value.errno == errno.EPERM
    assert "Operation not permitted" in str(info.value)


def test_exec_env_adds_home_only_when_missing() -> None:
    plan = _cfg(env=("A=1", "B=x=y")).process
    env = exec_env(plan)
    assert env["A"] == "1"
    assert env["B"] == "x=y"
    assert "HOME" in env
    assert exec_env(_cfg(env=("HOME=/h",)).process) == {"HOME": "/h"}


def test_a_process_plan_crosses_the_spawner_socket_unchanged() -> None:
    import json

    from oci.engine.wire import plan_from_wire, plan_to_wire

    proc = ocispec.Process(
        args=("sh", "-c", "x"),
        cwd="/w",
        env=("A=1",),
        user=ocispec.User(uid=7, gid=8, additional_gids=(9, 10), umask=0o027),
        rlimits=(ocispec.POSIXRlimit(type="RLIMIT_NOFILE", soft=1, hard=2),),
        capabilities=ocispec.LinuxCapabilities(bounding=("CAP_KILL",), ambient=("CAP_CHOWN",)),
        no_new_privileges=True,
        terminal=True,
        console_size=ocispec.Box(height=3, width=4),
        oom_score_adj=5,
    )
    plan = plan_process(proc, None)
    assert plan_from_wire(json.loads(json.dumps(plan_to_wire(plan)))) == plan
    bare = plan_process(ocispec.Process(args=("true",), cwd="/"), None)
    assert plan_from_wire(json.loads(json.dumps(plan_to_wire(bare)))) == bare


def test_a_plan_with_a_seccomp_profile_is_not_sent() -> None:
    from oci.engine.errors import InvalidArgument
    from oci.engine.wire import plan_to_wire

    seccomp = ocispec.LinuxSeccomp(default_action="SCMP_ACT_ALLOW")
    plan = plan_process(ocispec.Process(args=("true",), cwd="/"), seccomp)
    with pytest.raises(InvalidArgument):
        plan_to_wire(plan)


@pytest.mark.parametrize(
    ("release", "expected"),
    [
        ("5.15.0-100-generic", False),
        ("5.4.0", False),
        ("4.19.300", False),
        ("5.16.0", True),
        ("6.1.0-13-amd64", True),
        ("6.18.44-fc-v595", True),
        ("6.1-rc1", True),
        ("garbage", False),
    ],
)
def test_in_caller_exec_only_where_cgroup_migration_uses_the_openers_credentials(
    release: str, expected: bool
) -> None:
    assert cgroup_checks_at_open(release) is expected
