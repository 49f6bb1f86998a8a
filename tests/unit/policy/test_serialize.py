"""agent.policy.serialize: the policy input is the Rust agent's serde form of the request.

The reference is Kata's own policy test data (shared/kata-protocol/policy-testcases): each case's
``request`` is the exact JSON the Rust agent feeds its policy. Every one of them goes JSON ->
our protobuf request -> our policy input and must come back key for key. Keys absent from a case
were written by the Rust agent too (its serde form has every field): they must hold the default
value serde fills in. Keys of a case that the Rust types do not have (stale names in Kata's test
data) are ignored by serde's deserialiser, and by ours: they are listed here one by one.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path
from typing import Any

import pytest

from agent.errors import InvalidArgument
from agent.policy.serialize import (
    copy_file_input,
    request_from_input,
    request_input,
    rust_field_name,
    variant_name,
)
from agent.rpc.pb import agent_pb2, oci_pb2, types_pb2

TESTDATA = Path(__file__).resolve().parents[4] / "shared/kata-protocol/policy-testcases/testdata"
if not TESTDATA.is_dir():  # a worktree: shared/ is beside the main checkout
    TESTDATA = Path("/work/shared/kata-protocol/policy-testcases/testdata")

# Keys of Kata's cases that no Rust field has (serde skips them): (request type, key path).
STALE_KEYS = {
    ("CreateContainerRequest", "type"),  # gpu_vfio_cdi: a note, not a field
    ("AddARPNeighborsRequest", "type"),  # idem
    ("UpdateInterfaceRequest", "interface.pciPath"),  # types.Interface field 6 is devicePath now
    ("ExecProcessRequest", "string_user.additional_gids"),  # StringUser has additionalGids
}


def cases() -> list[tuple[str, dict[str, Any]]]:
    found = []
    for path in sorted(TESTDATA.rglob("testcases.json")):
        for i, case in enumerate(json.loads(path.read_text())):
            name = f"{path.parent.relative_to(TESTDATA)}[{i}]"
            found.append((name, case))
    return found


CASES = cases()


def test_every_case_file_is_read() -> None:
    assert len({name.split("[")[0] for name, _ in CASES}) == 22
    kinds = {case["kind"] for _, case in CASES}
    assert kinds == {
        "AddARPNeighborsRequest",
        "CopyFileRequest",
        "CreateContainerRequest",
        "CreateSandboxRequest",
        "ExecProcessRequest",
        "RemoveContainerRequest",
        "UpdateInterfaceRequest",
        "UpdateRoutesRequest",
    }


def _default_of(value: Any) -> Any:
    """What serde's default gives for a key whose written value has this shape."""
    if value == {}:
        return {}  # an empty map (an empty message would have all its keys)
    if value is None or isinstance(value, dict):
        return None  # an unset message field
    if isinstance(value, bool):
        return False
    if isinstance(value, (int, float)):
        return 0
    if isinstance(value, str):
        return ""
    return []


def _compare(kind: str, expected: Any, got: Any, path: str, ignored: set[str]) -> None:
    if isinstance(expected, dict):
        assert isinstance(got, dict), path
        for key, value in expected.items():
            where = f"{path}{key}"
            if where in ignored:
                assert key not in got, f"{kind}: {where} is not a Rust field but was written"
                continue
            assert key in got, f"{kind}: {where} missing"
            _compare(kind, value, got[key], where + ".", ignored)
        for key, value in got.items():
            if key not in expected:
                derived = (kind, key) == ("CopyFileRequest", "file_mode")  # from file_type
                assert derived or value == _default_of(value), f"{kind}: {path}{key} {value!r}"
    elif isinstance(expected, list):
        assert isinstance(got, list), path
        assert len(got) == len(expected), path
        for i, (e, g) in enumerate(zip(expected, got, strict=True)):
            _compare(kind, e, g, f"{path}[{i}].", ignored)
    else:
        assert got == expected, f"{kind}: {path} {got!r}"
        assert type(got) is type(expected), f"{kind}: {path} {got!r}"


@pytest.mark.parametrize(("name", "case"), CASES, ids=[n for n, _ in CASES])
def test_kata_case_round_trips(name: str, case: dict[str, Any]) -> None:
    kind = case["kind"]
    cls = getattr(agent_pb2, kind)
    ignored: list[str] = []
    req = request_from_input(cls, case["request"], ignored=ignored)
    assert {(kind, key) for key in ignored} <= STALE_KEYS
    got = request_input(req)
    _compare(kind, case["request"], got, "", set(ignored))
    # the input of a request is stable: reading it back gives the same request
    assert request_from_input(cls, got) == req


def test_stale_keys_are_all_seen() -> None:
    seen = set()
    for _, case in CASES:
        ignored: list[str] = []
        request_from_input(getattr(agent_pb2, case["kind"]), case["request"], ignored=ignored)
        seen |= {(case["kind"], key) for key in ignored}
    assert seen == STALE_KEYS


def test_every_field_written_with_rust_names_and_encodings() -> None:
    req = agent_pb2.CreateContainerRequest(
        container_id="c",
        OCI=oci_pb2.Spec(
            Version="1.1.0",
            Mounts=[oci_pb2.Mount(destination="/d", type="bind", source="/s", options=["ro"])],
            Annotations={"a": "b"},
            Linux=oci_pb2.Linux(
                Seccomp=oci_pb2.LinuxSeccomp(
                    Syscalls=[
                        oci_pb2.LinuxSyscall(Names=["read"], Action="SCMP_ACT_ERRNO", errnoret=1),
                        oci_pb2.LinuxSyscall(Names=["write"]),
                    ]
                )
            ),
        ),
        storages=[agent_pb2.Storage(driver="blk", fs_group=agent_pb2.FSGroup(group_id=5))],
    )
    got = request_input(req)
    assert set(got) == {
        "container_id", "exec_id", "string_user", "devices", "storages", "OCI", "sandbox_pidns",
        "shared_mounts", "stdin_port", "stdout_port", "stderr_port",
    }  # fmt: skip
    assert got["string_user"] is None  # an unset message field is null
    oci = got["OCI"]
    assert oci["Process"] is None
    assert oci["Hooks"] is None
    assert oci["Mounts"] == [
        {"destination": "/d", "source": "/s", "type_": "bind", "options": ["ro"]}
    ]  # "type" is a Rust keyword: rust-protobuf names the field type_
    assert oci["Annotations"] == {"a": "b"}
    syscalls = oci["Linux"]["Seccomp"]["Syscalls"]
    assert syscalls[0]["ErrnoRet"] == {"Errnoret": 1}  # a oneof: serde's external tagging
    assert syscalls[1]["ErrnoRet"] is None
    assert "errnoret" not in syscalls[0]
    assert got["storages"][0]["fs_group"] == {"group_id": 5, "group_change_policy": 0}


def test_enums_are_numbers_and_bytes_are_number_arrays() -> None:
    route = types_pb2.Route(dest="10.0.0.0/8", family=types_pb2.v6)
    got = request_input(agent_pb2.UpdateRoutesRequest(routes=agent_pb2.Routes(Routes=[route])))
    assert got["routes"]["Routes"][0]["family"] == 1
    write = request_input(agent_pb2.WriteStreamRequest(container_id="c", data=b"\x00hi"))
    assert write == {"container_id": "c", "exec_id": "", "data": [0, 104, 105]}


def test_proto3_optional_is_null_or_its_value() -> None:
    assert request_input(agent_pb2.MemAgentMemcgConfig())["swap"] is None
    assert request_input(agent_pb2.MemAgentMemcgConfig(swap=False))["swap"] is False


def test_naming_helpers() -> None:
    assert rust_field_name("type") == "type_"
    assert rust_field_name("Type") == "Type"
    assert rust_field_name("hwAddr") == "hwAddr"
    assert variant_name("errnoret") == "Errnoret"
    assert variant_name("errno_ret") == "ErrnoRet"


# -- CopyFile: PolicyCopyFileRequest ------------------------------------------------------------


@pytest.mark.parametrize(
    ("mode", "file_type"),
    [
        (stat.S_IFREG | 0o644, "Regular"),
        (stat.S_IFDIR | 0o755, "Directory"),
        (stat.S_IFSOCK, "Unknown"),
        (stat.S_IFDIR | stat.S_IFREG, "Unknown"),
        (0, "Unknown"),
    ],
)
def test_copy_file_type_from_mode(mode: int, file_type: str) -> None:
    req = agent_pb2.CopyFileRequest(path="/p", file_mode=mode, file_size=3, data=b"abc", uid=-1)
    assert copy_file_input(req) == {
        "path": "/p",
        "file_type": file_type,
        "symlink_target": None,
        "file_size": 3,
        "file_mode": mode,
        "dir_mode": 0,
        "uid": -1,
        "gid": 0,
        "offset": 0,
    }  # the data is never part of the input


def test_copy_file_symlink_target_is_its_data() -> None:
    req = agent_pb2.CopyFileRequest(path="/l", file_mode=stat.S_IFLNK, data=b"..data/foo")
    got = request_input(req)
    assert got["file_type"] == "Symlink"
    assert got["symlink_target"] == "..data/foo"


def test_copy_file_symlink_target_must_be_utf8() -> None:
    req = agent_pb2.CopyFileRequest(path="/l", file_mode=stat.S_IFLNK, data=b"\x00\xff\xff\x00")
    with pytest.raises(InvalidArgument, match="not valid UTF-8"):
        request_input(req)


def test_copy_file_from_input() -> None:
    req = request_from_input(
        agent_pb2.CopyFileRequest, {"path": "/l", "file_type": "Symlink", "symlink_target": "t"}
    )
    assert req.file_mode == stat.S_IFLNK
    assert req.data == b"t"
    with pytest.raises(InvalidArgument, match="file_type"):
        request_from_input(agent_pb2.CopyFileRequest, {"file_type": "Socket"})
    with pytest.raises(InvalidArgument, match="is not of file_type"):
        request_from_input(
            agent_pb2.CopyFileRequest, {"file_type": "Directory", "file_mode": stat.S_IFREG}
        )


# -- reading the input form back ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ([], "request: expected an object, got an array"),
        ({"container_id": 5}, "container_id: expected a string, got a number"),
        ({"OCI": {"Process": {"Args": "sh"}}}, "OCI.Process.Args: expected an array"),
        ({"OCI": {"Process": {"User": {"UID": "0"}}}}, "OCI.Process.User.UID: expected a whole"),
        ({"sandbox_pidns": 1}, "sandbox_pidns: expected true or false"),
        ({"OCI": {"Annotations": []}}, "OCI.Annotations: expected an object"),
    ],
)
def test_from_input_names_the_bad_key(obj: Any, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        request_from_input(agent_pb2.CreateContainerRequest, obj)


def test_from_input_bytes_and_oneof() -> None:
    req = request_from_input(agent_pb2.WriteStreamRequest, {"data": [104, 105]})
    assert req.data == b"hi"
    with pytest.raises(InvalidArgument, match="bytes"):
        request_from_input(agent_pb2.WriteStreamRequest, {"data": [256]})
    spec = request_from_input(
        oci_pb2.LinuxSyscall, {"Names": ["read"], "ErrnoRet": {"Errnoret": 38}}
    )
    assert spec.WhichOneof("ErrnoRet") == "errnoret"
    assert spec.errnoret == 38
    with pytest.raises(InvalidArgument, match="unknown variant 'Nope'"):
        request_from_input(oci_pb2.LinuxSyscall, {"ErrnoRet": {"Nope": 1}})
