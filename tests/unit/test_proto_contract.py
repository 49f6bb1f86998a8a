"""Compiled descriptors of agent/rpc/pb are wire-identical to shared/kata-protocol/contract.json.

Every file, message (nested too), field (name, number, type, label, type_name, json_name, oneof,
proto3_optional, packed, wire type, map key/value), oneof, enum (values), service and method is
compared, for the contract's files and for the ttrpc envelope files. A difference fails with the
path of the element that differs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from google.protobuf import descriptor_pb2, descriptor_pool

from agent.rpc.pb import agent_pb2, health_pb2, request_pb2  # noqa: F401  (register the files)
from agent.rpc.pb.google.rpc import status_pb2  # noqa: F401

CONTRACT = Path(__file__).resolve().parents[2].parent / "shared" / "kata-protocol" / "contract.json"

FDP = descriptor_pb2.FieldDescriptorProto
_TYPES = {value: name[len("TYPE_") :].lower() for name, value in FDP.Type.items()}
_LABELS = {
    FDP.LABEL_OPTIONAL: "optional",
    FDP.LABEL_REPEATED: "repeated",
    FDP.LABEL_REQUIRED: "required",
}
_WIRE = {
    "double": 1,
    "float": 5,
    "int64": 0,
    "uint64": 0,
    "int32": 0,
    "fixed64": 1,
    "fixed32": 5,
    "bool": 0,
    "string": 2,
    "group": 3,
    "message": 2,
    "bytes": 2,
    "uint32": 0,
    "enum": 0,
    "sfixed32": 5,
    "sfixed64": 1,
    "sint32": 0,
    "sint64": 0,
}
_PACKABLE = {t for t, w in _WIRE.items() if w != 2 and t != "group"}


def _contract() -> dict[str, Any]:
    if not CONTRACT.exists():
        pytest.skip(f"{CONTRACT} not found")
    data: dict[str, Any] = json.loads(CONTRACT.read_text())
    return data


def _file_proto(name: str) -> descriptor_pb2.FileDescriptorProto:
    fd = descriptor_pool.Default().FindFileByName(name)
    proto = descriptor_pb2.FileDescriptorProto()
    fd.CopyToProto(proto)
    return proto


def _field(
    f: descriptor_pb2.FieldDescriptorProto, syntax: str, maps: dict[str, Any], json_name: str
) -> dict[str, Any]:
    type_ = _TYPES[f.type]
    label = _LABELS[f.label]
    out: dict[str, Any] = {
        "name": f.name,
        "number": f.number,
        "type": type_,
        "label": label,
        # serialized descriptors omit json_name; the runtime computes it as protoc does
        "json_name": f.json_name or json_name,
    }
    packed = (
        label == "repeated"
        and type_ in _PACKABLE
        and (f.options.packed if f.options.HasField("packed") else syntax == "proto3")
    )
    out["wire_type"] = _WIRE[type_]  # of one element; packing is the "packed" flag
    if f.type_name:
        out["type_name"] = f.type_name
    if f.HasField("oneof_index"):
        out["oneof_index"] = f.oneof_index
    if f.proto3_optional:
        out["proto3_optional"] = True
    if packed:
        out["packed"] = True
    if f.type_name in maps:
        out["map"] = maps[f.type_name]
    return out


def _message(m: descriptor_pb2.DescriptorProto, prefix: str, syntax: str) -> dict[str, Any]:
    full = f"{prefix}.{m.name}"
    runtime = descriptor_pool.Default().FindMessageTypeByName(full)
    maps: dict[str, Any] = {}
    for nested in m.nested_type:
        if nested.options.map_entry:
            kv = {f.name: f for f in nested.field}
            maps[f".{full}.{nested.name}"] = {
                "key_type": _TYPES[kv["key"].type],
                "value_type": _TYPES[kv["value"].type],
                **({"value_type_name": kv["value"].type_name} if kv["value"].type_name else {}),
            }
    out: dict[str, Any] = {
        "name": m.name,
        "full_name": full,
        "fields": [
            _field(f, syntax, maps, runtime.fields_by_name[f.name].json_name) for f in m.field
        ],
    }
    if m.options.map_entry:
        out["map_entry"] = True
    if m.nested_type:
        out["nested_messages"] = [_message(n, full, syntax) for n in m.nested_type]
    if m.enum_type:
        out["nested_enums"] = [_enum(e, full) for e in m.enum_type]
    if m.oneof_decl:
        oneofs = []
        for i, decl in enumerate(m.oneof_decl):
            members = [f for f in m.field if f.HasField("oneof_index") and f.oneof_index == i]
            entry: dict[str, Any] = {
                "index": i,
                "name": decl.name,
                "fields": [f.name for f in members],
            }
            if members and all(f.proto3_optional for f in members):
                entry["synthetic"] = True
            oneofs.append(entry)
        out["oneofs"] = oneofs
    return out


def _enum(e: descriptor_pb2.EnumDescriptorProto, prefix: str) -> dict[str, Any]:
    return {
        "name": e.name,
        "full_name": f"{prefix}.{e.name}",
        "values": [{"name": v.name, "number": v.number} for v in e.value],
    }


def _compare(path: str, want: Any, got: Any, problems: list[str]) -> None:
    """Compare ``want`` (contract) with ``got`` (ours); keys we do not model are skipped only
    where listed in ``_IGNORED``."""
    if isinstance(want, dict) and isinstance(got, dict):
        for key in sorted(set(want) | set(got)):
            if key in _IGNORED:
                continue
            if key not in got:
                problems.append(f"{path}.{key}: missing (contract: {want[key]!r})")
            elif key not in want:
                problems.append(f"{path}.{key}: extra {got[key]!r} not in the contract")
            else:
                _compare(f"{path}.{key}", want[key], got[key], problems)
    elif isinstance(want, list) and isinstance(got, list):
        if len(want) != len(got):
            problems.append(f"{path}: {len(got)} entries, contract has {len(want)}")
        for i, (w, g) in enumerate(zip(want, got, strict=False)):
            label = w.get("name", i) if isinstance(w, dict) else i
            _compare(f"{path}[{label}]", w, g, problems)
    elif want != got:
        problems.append(f"{path}: {got!r}, contract has {want!r}")


# File-level bookkeeping the wire does not depend on (go_package and such).
_IGNORED = {"options"}


def _ours(contract_file: dict[str, Any]) -> dict[str, Any]:
    proto = _file_proto(contract_file["name"])
    package = proto.package
    return {
        "name": proto.name,
        "package": package,
        "syntax": proto.syntax or "proto2",
        "dependencies": list(proto.dependency),
        "services": [
            {
                "name": s.name,
                "full_name": f"{package}.{s.name}",
                "methods": [
                    {
                        "name": m.name,
                        "path": f"/{package}.{s.name}/{m.name}",
                        "ttrpc_service": f"{package}.{s.name}",
                        "ttrpc_method": m.name,
                        "input_type": m.input_type,
                        "output_type": m.output_type,
                        "client_streaming": m.client_streaming,
                        "server_streaming": m.server_streaming,
                    }
                    for m in s.method
                ],
            }
            for s in proto.service
        ],
        "messages": [_message(m, package, proto.syntax or "proto2") for m in proto.message_type],
        "enums": [_enum(e, package) for e in proto.enum_type],
    }


def _file_ids(files: list[dict[str, Any]]) -> list[str]:
    return [f["name"] for f in files]


def _contract_files(key: str) -> list[dict[str, Any]]:
    try:
        return list(json.loads(CONTRACT.read_text())[key])
    except FileNotFoundError:
        return []


@pytest.mark.parametrize(
    "contract_file", _contract_files("files"), ids=_file_ids(_contract_files("files"))
)
def test_contract_file_matches(contract_file: dict[str, Any]) -> None:
    problems: list[str] = []
    _compare(contract_file["name"], contract_file, _ours(contract_file), problems)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "contract_file",
    _contract_files("envelope_files"),
    ids=_file_ids(_contract_files("envelope_files")),
)
def test_envelope_file_matches(contract_file: dict[str, Any]) -> None:
    problems: list[str] = []
    _compare(contract_file["name"], contract_file, _ours(contract_file), problems)
    assert not problems, "\n".join(problems)


def test_method_table_matches() -> None:
    from agent.rpc.dispatch import contract_methods

    contract = _contract()
    ours = {
        m.path: (
            m.request_type.DESCRIPTOR.full_name,
            m.response_type.DESCRIPTOR.full_name,
        )
        for methods in contract_methods().values()
        for m in methods.values()
    }
    theirs = {m["path"]: (m["input_type"], m["output_type"]) for m in contract["methods"]}
    assert ours == theirs


def test_type_index_matches() -> None:
    contract = _contract()
    pool = descriptor_pool.Default()
    for full_name, file_name in contract["type_index"]["messages"].items():
        assert pool.FindMessageTypeByName(full_name).file.name == file_name, full_name
    for full_name, file_name in contract["type_index"]["enums"].items():
        assert pool.FindEnumTypeByName(full_name).file.name == file_name, full_name


def test_the_comparison_catches_a_difference() -> None:
    """Guard against a comparison that cannot fail."""
    contract_file = next(f for f in _contract()["files"] if f["name"] == "agent.proto")
    mutated = json.loads(json.dumps(contract_file))
    field = mutated["messages"][0]["fields"][0]
    field["number"] += 100
    problems: list[str] = []
    _compare("agent.proto", mutated, _ours(contract_file), problems)
    assert any(".number:" in p for p in problems), problems
