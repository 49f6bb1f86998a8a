"""agent.sandbox.specs: the pure spec rewrite before the engine sees a container."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.errors import InvalidArgument
from agent.sandbox import GuestHooks
from agent.sandbox.specs import merge_hooks, prepare_spec
from oci.spec import Hook, Hooks, Linux, LinuxNamespace, Process, Root, Spec


def spec(**kw: object) -> Spec:
    base: dict[str, object] = {
        "process": Process(args=("sh",), cwd="/"),
        "root": Root(path="/shared/c1/rootfs"),
        "linux": Linux(
            namespaces=(
                LinuxNamespace(type="pid"),
                LinuxNamespace(type="ipc"),
                LinuxNamespace(type="uts"),
                LinuxNamespace(type="mount"),
                LinuxNamespace(type="network", path="/var/run/netns/x"),
            )
        ),
    }
    base.update(kw)
    return Spec(**base)  # type: ignore[arg-type]


def prepare(s: Spec, **kw: object) -> Spec:
    args: dict[str, object] = {
        "container_id": "c1",
        "rootfs": Path("/run/kata-containers/c1/rootfs"),
        "ipc_ns": Path("/ns/ipc"),
        "uts_ns": Path("/ns/uts"),
        "pid_ns": None,
        "hooks": GuestHooks(),
    }
    args.update(kw)
    return prepare_spec(s, **args)  # type: ignore[arg-type]


def test_namespaces_root_and_pid() -> None:
    out = prepare(spec(), pid_ns="/proc/42/ns/pid")
    assert out.root is not None
    assert out.root.path == "/run/kata-containers/c1/rootfs"
    assert out.linux is not None
    assert [(n.type, n.path) for n in out.linux.namespaces] == [
        ("ipc", "/ns/ipc"),
        ("uts", "/ns/uts"),
        ("mount", None),
        ("network", "/var/run/netns/x"),
        ("pid", "/proc/42/ns/pid"),
    ]
    # no pinned namespaces (no sandbox): entries are kept as sent, a new pid ns is added
    bare = prepare(spec(linux=None), ipc_ns=None, uts_ns=None)
    assert bare.linux is not None
    assert [(n.type, n.path) for n in bare.linux.namespaces] == [("pid", None)]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"process": None}, "the spec has no process"),
        ({"process": Process(args=(), cwd="/")}, "process.args is empty"),
        ({"root": None}, "the spec has no root.path"),
        ({"root": Root(path="rootfs")}, "must be absolute"),
    ],
)
def test_rejects(changes: dict[str, object], message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        prepare(spec(**changes))


def test_guest_hooks_are_appended() -> None:
    own = Hooks(prestart=(Hook(path="/own"),))
    merged = merge_hooks(own, GuestHooks(prestart=("/g/prestart/a",), poststop=("/g/poststop/b",)))
    assert merged is not None
    assert [h.path for h in merged.prestart] == ["/own", "/g/prestart/a"]
    assert merged.prestart[1].args == ("a", "prestart")
    assert [h.path for h in merged.poststop] == ["/g/poststop/b"]
    assert merge_hooks(own, GuestHooks()) is own
    assert merge_hooks(None, GuestHooks()) is None
