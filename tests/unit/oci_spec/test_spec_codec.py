"""JSON ⇄ dataclass codec: keys, oddities, omission rules, unknown-field policy, type errors."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import pytest

import oci.spec as s

RUNC_SPEC_1_1 = {
    "ociVersion": "1.0.2-dev",
    "process": {
        "terminal": True,
        "user": {"uid": 0, "gid": 0},
        "args": ["sh"],
        "env": ["PATH=/usr/bin:/bin", "TERM=xterm"],
        "cwd": "/",
        "capabilities": {
            "bounding": ["CAP_AUDIT_WRITE", "CAP_KILL"],
            "effective": ["CAP_AUDIT_WRITE", "CAP_KILL"],
            "permitted": ["CAP_AUDIT_WRITE", "CAP_KILL"],
            "ambient": ["CAP_AUDIT_WRITE", "CAP_KILL"],
        },
        "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
        "noNewPrivileges": True,
    },
    "root": {"path": "rootfs", "readonly": True},
    "hostname": "runc",
    "mounts": [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs", "options": ["mode=755"]},
    ],
    "linux": {
        "resources": {"devices": [{"allow": False, "access": "rwm"}]},
        "namespaces": [{"type": "pid"}, {"type": "uts"}, {"type": "mount"}],
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
    },
}

# A spec touching every JSON-key oddity of the model.
FULL: dict[str, Any] = {
    "ociVersion": "1.2.0",
    "process": {
        "terminal": True,
        "consoleSize": {"height": 24, "width": 80},
        "user": {"uid": 1000, "gid": 1000, "umask": 18, "additionalGids": [5, 10]},
        "args": ["/bin/sh", "-c", "true"],
        "env": ["A=b"],
        "cwd": "/tmp",
        "capabilities": {"bounding": ["CAP_KILL"], "inheritable": ["CAP_KILL"]},
        "rlimits": [{"type": "RLIMIT_CORE", "hard": 0, "soft": 0}],
        "noNewPrivileges": True,
        "apparmorProfile": "docker-default",
        "oomScoreAdj": -17,
        "scheduler": {"policy": "SCHED_OTHER", "nice": 5},
        "selinuxLabel": "system_u:system_r:container_t:s0",
        "ioPriority": {"class": "IOPRIO_CLASS_BE", "priority": 4},
        "execCPUAffinity": {"initial": "0", "final": "0-1"},
    },
    "root": {"path": "/rootfs"},
    "hostname": "h",
    "domainname": "d",
    "mounts": [
        {
            "destination": "/data",
            "type": "bind",
            "source": "/src",
            "options": ["rbind"],
            "uidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
            "gidMappings": [{"containerID": 0, "hostID": 1000, "size": 1}],
        }
    ],
    "hooks": {
        "prestart": [{"path": "/bin/true", "args": ["true"], "env": ["X=1"], "timeout": 5}],
        "createRuntime": [{"path": "/bin/true"}],
        "createContainer": [{"path": "/bin/true"}],
        "startContainer": [{"path": "/bin/true"}],
        "poststart": [{"path": "/bin/true"}],
        "poststop": [{"path": "/bin/true"}],
    },
    "annotations": {"a": "b"},
    "linux": {
        "uidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "gidMappings": [{"containerID": 0, "hostID": 100000, "size": 65536}],
        "sysctl": {"net.ipv4.ip_forward": "1"},
        "resources": {
            "devices": [{"allow": True, "type": "c", "major": 1, "minor": 3, "access": "rw"}],
            "memory": {
                "limit": 1 << 28,
                "reservation": 1 << 27,
                "swap": 1 << 29,
                "kernel": -1,
                "kernelTCP": -1,
                "swappiness": 10,
                "disableOOMKiller": True,
                "useHierarchy": True,
                "checkBeforeUpdate": True,
            },
            "cpu": {
                "shares": 512,
                "quota": 50000,
                "burst": 1000,
                "period": 100000,
                "realtimeRuntime": 0,
                "realtimePeriod": 0,
                "cpus": "0-1",
                "mems": "0",
                "idle": 0,
            },
            "pids": {"limit": 64},
            "blockIO": {
                "weight": 500,
                "leafWeight": 300,
                "weightDevice": [{"major": 8, "minor": 0, "weight": 200, "leafWeight": 100}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                "throttleWriteBpsDevice": [{"major": 8, "minor": 0, "rate": 1000}],
                "throttleReadIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 10}],
            },
            "hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}],
            "network": {"classID": 7, "priorities": [{"name": "eth0", "priority": 1}]},
            "rdma": {"mlx5_1": {"hcaHandles": 3, "hcaObjects": 10000}},
            "unified": {"memory.high": "1000000"},
        },
        "cgroupsPath": "/kata/c1",
        "namespaces": [
            {"type": "pid"},
            {"type": "network", "path": "/var/run/netns/x"},
            {"type": "mount"},
            {"type": "ipc"},
            {"type": "uts"},
            {"type": "user"},
            {"type": "cgroup"},
            {"type": "time"},
        ],
        "devices": [
            {"path": "/dev/fuse", "type": "c", "major": 10, "minor": 229, "fileMode": 438},
            {"path": "/dev/fifo", "type": "p", "uid": 0, "gid": 0},
        ],
        "seccomp": {
            "defaultAction": "SCMP_ACT_ERRNO",
            "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"],
            "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "listenerPath": "/run/seccomp.sock",
            "listenerMetadata": "meta",
            "syscalls": [
                {
                    "names": ["personality"],
                    "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 0, "value": 8, "valueTwo": 0, "op": "SCMP_CMP_EQ"}],
                },
                {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 13},
                {"names": ["bpf"], "action": "SCMP_ACT_NOTIFY"},
            ],
        },
        "rootfsPropagation": "rslave",
        "maskedPaths": ["/proc/kcore"],
        "readonlyPaths": ["/proc/sys"],
        "mountLabel": "system_u:object_r:container_file_t:s0",
        "intelRdt": {
            "closID": "c1",
            "l3CacheSchema": "L3:0=f",
            "memBwSchema": "MB:0=70",
            "enableCMT": True,
            "enableMBM": True,
        },
        "personality": {"domain": "LINUX32", "flags": []},
        "timeOffsets": {"monotonic": {"secs": 10, "nanosecs": 5}},
    },
}


def test_full_spec_round_trips_every_key() -> None:
    spec = s.loads(json.dumps(FULL))
    assert s.validate(spec) == []
    # personality.flags is empty → omitted; everything else survives byte-for-byte
    expected = json.loads(json.dumps(FULL))
    del expected["linux"]["personality"]["flags"]
    # zero-valued required ints are written; realtime values were present already
    assert spec.to_dict() == expected
    assert s.loads(spec.to_json()) == spec


@pytest.mark.parametrize(
    ("attr_path", "expected"),
    [
        ("process.oom_score_adj", -17),
        ("process.no_new_privileges", True),
        ("process.apparmor_profile", "docker-default"),
        ("process.selinux_label", "system_u:system_r:container_t:s0"),
        ("process.io_priority.class_", "IOPRIO_CLASS_BE"),
        ("process.exec_cpu_affinity.final", "0-1"),
        ("process.user.additional_gids", (5, 10)),
        ("linux.cgroups_path", "/kata/c1"),
        ("linux.rootfs_propagation", "rslave"),
        ("linux.resources.memory.disable_oom_killer", True),
        ("linux.resources.memory.kernel_tcp", -1),
        ("linux.resources.block_io.throttle_read_iops_device", None),
        ("linux.resources.network.class_id", 7),
        ("linux.intel_rdt.clos_id", "c1"),
        ("linux.intel_rdt.enable_cmt", True),
        ("linux.seccomp.syscalls", None),
        ("linux.seccomp.default_errno_ret", 1),
        ("linux.mount_label", "system_u:object_r:container_file_t:s0"),
    ],
)
def test_snake_case_fields_carry_camel_case_keys(attr_path: str, expected: object) -> None:
    value: Any = s.loads(json.dumps(FULL))
    for part in attr_path.split("."):
        value = getattr(value, part)
    if expected is None:  # only check presence for collections
        assert value
    else:
        assert value == expected


def test_typed_nested_values() -> None:
    spec = s.loads(json.dumps(FULL))
    assert spec.linux is not None
    assert spec.linux.uid_mappings == (
        s.LinuxIDMapping(container_id=0, host_id=100000, size=65536),
    )
    assert spec.linux.seccomp is not None
    assert spec.linux.seccomp.syscalls[1].errno_ret == 13
    assert spec.linux.seccomp.syscalls[0].args[0] == s.LinuxSeccompArg(
        index=0, value=8, value_two=0, op="SCMP_CMP_EQ"
    )
    assert spec.linux.resources is not None
    assert spec.linux.resources.rdma["mlx5_1"] == s.LinuxRdma(hca_handles=3, hca_objects=10000)
    assert spec.linux.time_offsets["monotonic"].secs == 10
    assert spec.linux.namespace("network") == s.LinuxNamespace(
        type="network", path="/var/run/netns/x"
    )
    assert spec.linux.has_namespace(s.NamespaceType.TIME)
    assert spec.hooks is not None
    assert spec.hooks.prestart[0].timeout == 5


def test_absent_values_are_none_and_empty() -> None:
    spec = s.loads('{"ociVersion": "1.0.0", "root": {"path": "r"}}')
    assert spec.process is None
    assert spec.hostname is None
    assert spec.mounts == ()
    assert spec.annotations == {}
    assert spec.linux is None
    assert spec.to_dict() == {"ociVersion": "1.0.0", "root": {"path": "r"}}


def test_go_fields_without_omitempty_are_written() -> None:
    spec = s.Spec(
        root=s.Root(path="r"),
        process=s.Process(cwd="/", args=("x",)),
        linux=s.Linux(resources=s.LinuxResources(devices=(s.LinuxDeviceCgroup(access="rwm"),))),
    )
    d = spec.to_dict()
    assert d["process"]["user"] == {"uid": 0, "gid": 0}
    assert d["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert "terminal" not in d["process"]


def test_runc_1_1_spec_loads() -> None:
    spec = s.loads(json.dumps(RUNC_SPEC_1_1))
    assert spec.oci_version == "1.0.2-dev"
    assert spec.process is not None
    assert spec.process.capabilities is not None
    assert spec.process.capabilities.ambient == ("CAP_AUDIT_WRITE", "CAP_KILL")
    assert spec.to_dict() == RUNC_SPEC_1_1


def test_default_spec_matches_runc_spec_shape() -> None:
    d = s.default_spec().to_dict()
    assert d["ociVersion"] == s.SPEC_VERSION
    assert d["process"]["args"] == ["sh"]
    assert d["root"] == {"path": "rootfs", "readonly": True}
    assert d["hostname"] == "runc"
    assert [m["destination"] for m in d["mounts"]] == [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
    ]
    assert d["linux"]["resources"]["devices"] == [{"allow": False, "access": "rwm"}]
    assert s.validate(s.default_spec()) == []
    rootless = s.default_spec(rootless=True)
    assert rootless.linux is not None
    assert not rootless.linux.has_namespace("network")
    assert rootless.linux.has_namespace("user")


def test_unknown_fields_kept_by_default_and_written_back(caplog: pytest.LogCaptureFixture) -> None:
    raw = {
        "ociVersion": "1.0.0",
        "root": {"path": "r", "x-extra": 1},
        "windows": {"layerFolders": ["c:\\"]},
    }
    with caplog.at_level(logging.WARNING, logger="oci.spec"):
        spec = s.loads(json.dumps(raw))
    assert spec.extra == {"windows": {"layerFolders": ["c:\\"]}}
    assert spec.root is not None
    assert spec.root.extra == {"x-extra": 1}
    assert spec.to_dict() == raw
    assert "root.x-extra" in caplog.text
    assert "windows" in caplog.text
    assert "kept" in caplog.text


def test_unknown_fields_ignored(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="oci.spec"):
        spec = s.loads('{"ociVersion":"1.0.0","root":{"path":"r"},"zz":1}', unknown="ignore")
    assert spec.extra == {}
    assert spec.to_dict() == {"ociVersion": "1.0.0", "root": {"path": "r"}}
    assert "zz" in caplog.text
    assert "ignored" in caplog.text


def test_unknown_fields_rejected() -> None:
    with pytest.raises(s.SpecError, match=r"^process\.zz: unknown field$"):
        s.loads(
            '{"ociVersion":"1.0.0","root":{"path":"r"},"process":{"cwd":"/","args":["a"],"zz":1}}',
            unknown="error",
        )


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ('{"root": {"path": "r"}}', "ociVersion: required field is missing"),
        ('{"ociVersion": 1}', "ociVersion: expected a string, got number"),
        (
            '{"ociVersion":"1.0.0","process":{"cwd":"/","user":{"uid":"0"}}}',
            "process.user.uid: expected an integer, got string",
        ),
        (
            '{"ociVersion":"1.0.0","process":{"cwd":"/","terminal":1}}',
            "process.terminal: expected a boolean, got number",
        ),
        (
            '{"ociVersion":"1.0.0","process":{"cwd":"/","args":"sh"}}',
            "process.args: expected an array, got string",
        ),
        (
            '{"ociVersion":"1.0.0","process":{"cwd":"/","args":["sh", 3]}}',
            "process.args[1]: expected a string, got number",
        ),
        ('{"ociVersion":"1.0.0","linux":[]}', "linux: expected an object, got array"),
        (
            '{"ociVersion":"1.0.0","linux":{"namespaces":[{"type":"pid"},{"path":"/x"}]}}',
            "linux.namespaces[1].type: required field is missing",
        ),
        (
            '{"ociVersion":"1.0.0","annotations":{"a":1}}',
            "annotations.a: expected a string, got number",
        ),
        ('{"ociVersion":"1.0.0","root":null}', "root: required on Linux"),
        (
            '{"ociVersion":"1.0.0","root":{"path":null}}',
            "root.path: required field is null",
        ),
        ("[]", "expected an object, got array"),
        ('{"ociVersion": ', "config.json: invalid JSON at line 1 column 16"),
        (
            '{"ociVersion":"1.0.0","process":{"cwd":"/","user":{"uid":true}}}',
            "process.user.uid: expected an integer, got boolean",
        ),
    ],
)
def test_decode_errors_name_the_field(doc: str, message: str) -> None:
    with pytest.raises(s.SpecError) as err:
        s.loads(doc)
    assert message in str(err.value)


def test_all_decode_errors_are_reported_at_once() -> None:
    with pytest.raises(s.SpecError) as err:
        s.loads('{"ociVersion":"1.0.0","process":{"user":{"uid":"x","gid":"y"}}}')
    paths = [p.path for p in err.value.problems]
    assert paths == ["process.user.uid", "process.user.gid", "process.cwd"]


def test_load_from_path_text_and_bytes(tmp_path: Path) -> None:
    text = s.default_spec().to_json(indent=2)
    cfg = tmp_path / "config.json"
    cfg.write_text(text)
    assert s.load(cfg) == s.load(str(cfg)) == s.load(text) == s.load(text.encode())
    assert s.dumps(s.load(cfg)) == s.default_spec().to_json()


def test_load_missing_file_names_path_and_reason(tmp_path: Path) -> None:
    with pytest.raises(s.SpecError, match=r"read .*/nope/config\.json: No such file or directory"):
        s.load(tmp_path / "nope" / "config.json")


def test_invalid_json_in_file_names_the_file(tmp_path: Path) -> None:
    cfg = tmp_path / "config.json"
    cfg.write_text("{\n  oops\n}")
    with pytest.raises(s.SpecError, match=rf"{cfg}: invalid JSON at line 2 column 3"):
        s.load(cfg)


def test_load_validates_unless_told_not_to() -> None:
    doc = '{"ociVersion":"1.0.0","root":{"path":"r"},"hostname":"h"}'
    with pytest.raises(s.SpecError, match="hostname: setting the hostname needs a private uts"):
        s.loads(doc)
    assert s.loads(doc, validate=False).hostname == "h"


def test_models_are_frozen_and_replaceable() -> None:
    spec = s.default_spec()
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.hostname = "x"  # type: ignore[misc]
    assert not hasattr(spec, "__dict__")
    assert dataclasses.replace(spec, hostname="x").hostname == "x"


def test_state_document() -> None:
    st = s.State(id="c1", status=s.Status.CREATED, pid=42, bundle="/b", annotations={"k": "v"})
    assert json.loads(st.to_json()) == {
        "ociVersion": s.SPEC_VERSION,
        "id": "c1",
        "status": "created",
        "pid": 42,
        "bundle": "/b",
        "annotations": {"k": "v"},
    }
    assert s.State.from_json(st.to_json()) == st
    stopped = s.State(id="c1", status=s.Status.STOPPED, bundle="/b")
    assert "pid" not in json.loads(stopped.to_json())
    with pytest.raises(s.SpecError, match=r"status: unknown value \"zombie\""):
        s.State.from_json('{"ociVersion":"1.0.0","id":"c","status":"zombie","bundle":"/b"}')
    with pytest.raises(s.SpecError, match="state: invalid JSON"):
        s.State.from_json("{")


def test_names_give_kernel_numbers() -> None:
    assert s.names.CAPABILITIES["CAP_KILL"] == 5
    assert s.names.CAPABILITIES["CAP_CHECKPOINT_RESTORE"] == 40
    assert s.names.RLIMITS["RLIMIT_NOFILE"] == 7
    assert s.names.NAMESPACE_PROC_NAMES["network"] == "net"
    assert set(s.names.NAMESPACE_PROC_NAMES) == s.names.NAMESPACES


def test_shared_eq_hash_repr_behave_like_generated_ones() -> None:
    a = s.LinuxNamespace(type="pid")
    assert a == s.LinuxNamespace(type="pid")
    assert a != s.LinuxNamespace(type="pid", path="/proc/1/ns/pid")
    assert a != s.LinuxIDMapping()  # other class
    assert (a == 1) is False
    assert hash(a) == hash(s.LinuxNamespace(type="pid"))
    assert {a, s.LinuxNamespace(type="pid")} == {a}
    assert repr(a) == "LinuxNamespace(type='pid', path=None)"  # extra is not shown
    assert s.LinuxNamespace(type="pid", extra={"x": 1}) != a  # but compared
    assert dataclasses.is_dataclass(a)
    assert hash(s.default_spec()) == hash(s.default_spec())  # maps are skipped by hash


def test_features_document() -> None:
    f = s.features(
        mount_options=["ro", "bind", "ro"], seccomp_supported_flags=["SECCOMP_FILTER_FLAG_LOG"]
    )
    assert f["ociVersionMin"] == "1.0.0"
    assert f["ociVersionMax"] == s.SPEC_VERSION
    assert f["hooks"][0] == "prestart"
    assert f["mountOptions"] == ["bind", "ro"]
    assert f["linux"]["capabilities"][0] == "CAP_CHOWN"
    assert f["linux"]["capabilities"][-1] == "CAP_CHECKPOINT_RESTORE"
    assert "user" in f["linux"]["namespaces"]
    assert f["linux"]["seccomp"]["supportedFlags"] == ["SECCOMP_FILTER_FLAG_LOG"]
    assert "SCMP_ACT_NOTIFY" in f["linux"]["seccomp"]["actions"]
    json.dumps(f)


def test_load_process_json(tmp_path: Path) -> None:
    doc = {"args": ["sh", "-c", "id"], "cwd": "/", "env": ["A=1"], "user": {"uid": 5, "gid": 5}}
    p = tmp_path / "process.json"
    p.write_text(json.dumps(doc))
    proc = s.load_process(p)
    assert proc == s.Process(
        args=("sh", "-c", "id"), cwd="/", env=("A=1",), user=s.User(uid=5, gid=5)
    )
    assert s.load_process(json.dumps(doc)) == proc
    with pytest.raises(s.SpecError, match=r"^process\.cwd: required field is missing$"):
        s.load_process('{"args": ["sh"]}')
    with pytest.raises(
        s.SpecError, match=r'^process\.capabilities\.bounding\[0\]: unknown capability "CAP_NOPE"$'
    ):
        s.load_process('{"args": ["sh"], "cwd": "/", "capabilities": {"bounding": ["CAP_NOPE"]}}')
    with pytest.raises(s.SpecError, match=r"process\.json: invalid JSON at line 1"):
        s.load_process("{oops")
    assert s.check_process(s.Process(args=("x",), cwd="/")) == []
