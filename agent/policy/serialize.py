"""Requests as the Rust agent shows them to its policy: the policy input, key for key.

The Rust agent serialises each request with serde (``serde_json::to_string(&req)``) on the
rust-protobuf types of ``src/libs/protocols``: every field is written, named as its Rust field (the
proto name, with ``_`` added to a Rust keyword: ``type`` -> ``type_``); an unset message field is
``null``; enums are their numbers; ``bytes`` are arrays of numbers; maps are objects; a oneof is
``null`` or ``{"<Variant>": value}`` (serde's externally tagged enum, the variant named in camel
case after its field); a proto3 ``optional`` field is ``null`` or its value. CopyFile is the
exception: the policy sees ``PolicyCopyFileRequest`` (``copy_file_input``), with the file type
spelled out and a symlink's target as text instead of the data bytes.

``request_from_input`` reads that form back into a protobuf request the way serde's
``#[serde(default)]`` deserialiser does (missing keys keep their defaults, unknown keys are
ignored and reported), for ``kata-agent-ctl policy eval`` and the tests.
"""

from __future__ import annotations

import stat
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from agent.errors import InvalidArgument

# Rust's keywords (strict and reserved): rust-protobuf appends "_" to a field named like one.
_RUST_KEYWORDS = frozenset(
    """as async await break const continue crate dyn else enum extern false fn for if impl in let
    loop match mod move mut pub ref return self Self static struct super trait true type unsafe
    use where while abstract become box do final macro override priv typeof unsized virtual
    yield try""".split()  # noqa: SIM905 - a list of 51 one-word strings reads worse
)

_MESSAGE = FieldDescriptor.TYPE_MESSAGE
_BYTES = FieldDescriptor.TYPE_BYTES
_ENUM = FieldDescriptor.TYPE_ENUM

COPY_FILE_REQUEST = "CopyFileRequest"
# PolicyCopyFileRequest.file_type: the S_IFMT part of file_mode, by name
FILE_TYPES = {stat.S_IFREG: "Regular", stat.S_IFDIR: "Directory", stat.S_IFLNK: "Symlink"}
_FILE_TYPE_MODES = {name: mode for mode, name in FILE_TYPES.items()} | {"Unknown": 0}

M = TypeVar("M", bound=Message)


def rust_field_name(name: str) -> str:
    return name + "_" if name in _RUST_KEYWORDS else name


def variant_name(field_name: str) -> str:
    """rust-protobuf's variant for a oneof field: camel case (``errno_ret`` -> ``ErrnoRet``)."""
    return "".join(part[:1].upper() + part[1:] for part in field_name.split("_"))


# -- protobuf -> policy input ------------------------------------------------------------------

_Writer = Callable[[Any], Any]


@dataclass(frozen=True, slots=True)
class _Field:
    """How one key of a message's input is written."""

    key: str  # the Rust field name
    name: str  # the protobuf field (or oneof) name
    presence: bool  # written as null when unset: a singular message, a proto3 optional
    write: _Writer
    # a oneof: (protobuf field name, variant name, writer) of each of its fields
    variants: tuple[tuple[str, str, _Writer], ...] = ()


_plans: dict[str, list[_Field]] = {}


def _plan(descriptor: Any) -> list[_Field]:
    """The fields of a message type in input order, built once per type."""
    plan = _plans.get(descriptor.full_name)
    if plan is not None:
        return plan
    plan = []
    _plans[descriptor.full_name] = plan  # before recursing: message types can nest themselves
    in_oneof: set[str] = set()
    for oneof in descriptor.oneofs:
        if _is_synthetic(oneof):
            continue
        variants = tuple((f.name, variant_name(f.name), _value_writer(f)) for f in oneof.fields)
        plan.append(_Field(rust_field_name(oneof.name), oneof.name, True, _same, variants))
        in_oneof.update(f.name for f in oneof.fields)
    for f in descriptor.fields:
        if f.name not in in_oneof:
            presence = f.has_presence and not f.is_repeated
            plan.append(_Field(rust_field_name(f.name), f.name, presence, _field_writer(f)))
    return plan


def _is_synthetic(oneof: Any) -> bool:
    """A proto3 ``optional`` field sits alone in a synthetic oneof: Rust has ``Option<T>``."""
    return len(oneof.fields) == 1 and oneof.name == "_" + oneof.fields[0].name


def _field_writer(f: Any) -> _Writer:
    if f.message_type is not None and f.message_type.GetOptions().map_entry:
        value = _value_writer(f.message_type.fields_by_name["value"])
        return lambda m: {_map_key(k): value(v) for k, v in m.items()}
    value = _value_writer(f)
    if f.is_repeated:
        return lambda items: [value(v) for v in items]
    return value


def _map_key(key: Any) -> str:
    if isinstance(key, bool):
        return "true" if key else "false"
    return key if isinstance(key, str) else str(key)  # serde_json writes integer keys as strings


def _value_writer(f: Any) -> _Writer:
    if f.type == _MESSAGE:
        return message_input
    if f.type == _BYTES:
        return list
    return _same  # numbers (enums as numbers), strings, booleans


def _same(value: Any) -> Any:
    return value


def message_input(msg: Message) -> dict[str, Any]:
    """The serde form of any message (no CopyFile translation)."""
    out: dict[str, Any] = {}
    for f in _plan(msg.DESCRIPTOR):
        if f.variants:
            which = msg.WhichOneof(f.name)
            out[f.key] = None
            for name, variant, write in f.variants:
                if name == which:
                    out[f.key] = {variant: write(getattr(msg, name))}
        elif f.presence and not msg.HasField(f.name):
            out[f.key] = None
        else:
            out[f.key] = f.write(getattr(msg, f.name))
    return out


def copy_file_input(req: Message) -> dict[str, Any]:
    """PolicyCopyFileRequest: the data is left out; a symlink's data is its target, as text."""
    file_type = FILE_TYPES.get(stat.S_IFMT(req.file_mode), "Unknown")  # type: ignore[attr-defined]
    target = None
    if file_type == "Symlink":
        try:
            target = bytes(req.data).decode()  # type: ignore[attr-defined]
        except UnicodeDecodeError:
            raise InvalidArgument(
                f"CopyFile {req.path!r}: the symlink target is not valid UTF-8"  # type: ignore[attr-defined]
            ) from None
    return {
        "path": req.path,  # type: ignore[attr-defined]
        "file_type": file_type,
        "symlink_target": target,
        "file_size": req.file_size,  # type: ignore[attr-defined]
        "file_mode": req.file_mode,  # type: ignore[attr-defined]
        "dir_mode": req.dir_mode,  # type: ignore[attr-defined]
        "uid": req.uid,  # type: ignore[attr-defined]
        "gid": req.gid,  # type: ignore[attr-defined]
        "offset": req.offset,  # type: ignore[attr-defined]
    }


def request_input(req: Message) -> dict[str, Any]:
    """The policy input of a request, as the Rust agent builds it."""
    if req.DESCRIPTOR.name == COPY_FILE_REQUEST:
        return copy_file_input(req)
    return message_input(req)


# -- policy input -> protobuf ------------------------------------------------------------------


def request_from_input(cls: type[M], obj: object, *, ignored: list[str] | None = None) -> M:
    """The request a policy input stands for (serde's defaults: missing keys keep the default,
    unknown keys are skipped and, when ``ignored`` is given, their paths appended to it).
    InvalidArgument names the first key whose value has the wrong type."""
    msg = cls()
    if cls.DESCRIPTOR.name == COPY_FILE_REQUEST:
        _copy_file_from_input(msg, _object(obj, "request"), ignored)
    else:
        _fill(msg, _object(obj, "request"), "", ignored)
    return msg


def _object(obj: object, where: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise InvalidArgument(f"{where}: expected an object, got {_json_type(obj)}")
    return obj


def _fill(msg: Message, obj: dict[str, Any], path: str, ignored: list[str] | None) -> None:
    descriptor = msg.DESCRIPTOR
    by_key = {f.key: (f.name, descriptor.fields_by_name.get(f.name)) for f in _plan(descriptor)}
    for key, value in obj.items():
        where = f"{path}{key}"
        entry = by_key.get(key)
        if entry is None:
            if ignored is not None:
                ignored.append(where)
            continue
        name, field = entry
        if value is None:
            continue  # null: an unset message field, oneof or optional (the default)
        if field is None:
            _fill_oneof(msg, descriptor.oneofs_by_name[name], value, where, ignored)
        elif field.message_type is not None and field.message_type.GetOptions().map_entry:
            _fill_map(getattr(msg, name), field, _object(value, where), where, ignored)
        elif field.is_repeated:
            if not isinstance(value, list):
                raise InvalidArgument(f"{where}: expected an array, got {_json_type(value)}")
            target = getattr(msg, name)
            for i, item in enumerate(value):
                if field.type == _MESSAGE:
                    _fill(target.add(), _object(item, f"{where}[{i}]"), f"{where}[{i}].", ignored)
                else:
                    target.append(_scalar(field, item, f"{where}[{i}]"))
        elif field.type == _MESSAGE:
            sub = getattr(msg, name)
            sub.SetInParent()
            _fill(sub, _object(value, where), f"{where}.", ignored)
        else:
            setattr(msg, name, _scalar(field, value, where))


def _fill_oneof(
    msg: Message, oneof: Any, value: object, where: str, ignored: list[str] | None
) -> None:
    obj = _object(value, where)
    if len(obj) != 1:
        raise InvalidArgument(f"{where}: expected one variant, got {len(obj)}")
    ((variant, inner),) = obj.items()
    for f in oneof.fields:
        if variant_name(f.name) == variant:
            if f.type == _MESSAGE:
                sub = getattr(msg, f.name)
                sub.SetInParent()
                _fill(sub, _object(inner, f"{where}.{variant}"), f"{where}.{variant}.", ignored)
            else:
                setattr(msg, f.name, _scalar(f, inner, f"{where}.{variant}"))
            return
    known = ", ".join(variant_name(f.name) for f in oneof.fields)
    raise InvalidArgument(f"{where}: unknown variant {variant!r} (expected {known})")


def _fill_map(
    target: Any, field: Any, obj: dict[str, Any], where: str, ignored: list[str] | None
) -> None:
    key_field = field.message_type.fields_by_name["key"]
    value_field = field.message_type.fields_by_name["value"]
    for raw_key, value in obj.items():
        key: Any = raw_key
        if key_field.type not in (FieldDescriptor.TYPE_STRING,):
            try:
                key = int(raw_key)
            except ValueError:
                raise InvalidArgument(f"{where}: key {raw_key!r} is not a number") from None
        if value_field.type == _MESSAGE:
            _fill(target[key], _object(value, f"{where}.{raw_key}"), f"{where}.{raw_key}.", ignored)
        else:
            target[key] = _scalar(value_field, value, f"{where}.{raw_key}")


_INT_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_INT32,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT32,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT32,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED32,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED32,
        FieldDescriptor.TYPE_SFIXED64,
        _ENUM,
    }
)


def _scalar(field: Any, value: object, where: str) -> Any:
    t = field.type
    if t in _INT_TYPES:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InvalidArgument(f"{where}: expected a whole number, got {_json_type(value)}")
        return value
    if t == FieldDescriptor.TYPE_BOOL:
        if not isinstance(value, bool):
            raise InvalidArgument(f"{where}: expected true or false, got {_json_type(value)}")
        return value
    if t == FieldDescriptor.TYPE_STRING:
        if not isinstance(value, str):
            raise InvalidArgument(f"{where}: expected a string, got {_json_type(value)}")
        return value
    if t == _BYTES:
        if not isinstance(value, list) or not all(
            isinstance(b, int) and not isinstance(b, bool) and 0 <= b <= 255 for b in value
        ):
            raise InvalidArgument(f"{where}: expected an array of numbers 0-255 (bytes)")
        return bytes(value)
    if t in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InvalidArgument(f"{where}: expected a number, got {_json_type(value)}")
        return float(value)
    raise InvalidArgument(f"{where}: unsupported field type {t}")


def _copy_file_from_input(msg: Any, obj: dict[str, Any], ignored: list[str] | None) -> None:
    known = {
        "path",
        "file_type",
        "symlink_target",
        "file_size",
        "file_mode",
        "dir_mode",
        "uid",
        "gid",
        "offset",
    }
    plain = {k: v for k, v in obj.items() if k in known - {"file_type", "symlink_target"}}
    _fill(msg, plain, "", None)
    if ignored is not None:
        ignored.extend(k for k in obj if k not in known)
    file_type = obj.get("file_type", "Unknown")
    if file_type not in _FILE_TYPE_MODES:
        raise InvalidArgument(
            f"file_type: {file_type!r} is not one of {', '.join(sorted(_FILE_TYPE_MODES))}"
        )
    if "file_mode" not in obj:  # the type alone: its S_IFMT bits
        msg.file_mode = _FILE_TYPE_MODES[file_type]
    elif FILE_TYPES.get(stat.S_IFMT(msg.file_mode), "Unknown") != file_type:
        raise InvalidArgument(f"file_mode {msg.file_mode:o} is not of file_type {file_type}")
    target = obj.get("symlink_target")
    if target is not None:
        if file_type != "Symlink" or not isinstance(target, str):
            raise InvalidArgument("symlink_target: only a Symlink has one, as a string")
        msg.data = target.encode()


def _json_type(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"
