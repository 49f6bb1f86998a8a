"""Hypothesis strategies for the wire: any protobuf message of the contract, built from its
descriptor (every field may be set, strings with NUL bytes and odd unicode, numbers across
their whole range, nested messages a few levels deep), and ttrpc byte streams."""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message
from hypothesis import strategies as st

_T = FieldDescriptor
MAX_DEPTH = 3

_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "/", "..", "../../etc", "a\0b", "/run/kata-containers/x", "x" * 300]),
)


def _scalar(field: FieldDescriptor) -> st.SearchStrategy[Any]:
    t = field.type
    if t == _T.TYPE_STRING:
        return _TEXT
    if t == _T.TYPE_BYTES:
        return st.binary(max_size=64)
    if t == _T.TYPE_BOOL:
        return st.booleans()
    if t in (_T.TYPE_INT32, _T.TYPE_SINT32, _T.TYPE_SFIXED32):
        return st.integers(-(2**31), 2**31 - 1)
    if t in (_T.TYPE_INT64, _T.TYPE_SINT64, _T.TYPE_SFIXED64):
        return st.integers(-(2**63), 2**63 - 1)
    if t in (_T.TYPE_UINT32, _T.TYPE_FIXED32):
        return st.integers(0, 2**32 - 1)
    if t in (_T.TYPE_UINT64, _T.TYPE_FIXED64):
        return st.integers(0, 2**64 - 1)
    if t in (_T.TYPE_FLOAT, _T.TYPE_DOUBLE):
        return st.floats(allow_nan=False, width=32 if t == _T.TYPE_FLOAT else 64)
    if t == _T.TYPE_ENUM:
        assert field.enum_type is not None
        return st.sampled_from([v.number for v in field.enum_type.values] + [99])
    raise TypeError(f"no strategy for {field.full_name}")


def messages(desc: Any, depth: int = 0) -> st.SearchStrategy[Message]:
    """Any message of type ``desc`` (a message Descriptor: the pure-Python or the upb one, as
    ``X.DESCRIPTOR`` gives; a few fields set, sub-messages to MAX_DEPTH)."""
    from google.protobuf import message_factory

    cls = message_factory.GetMessageClass(desc)
    fields = [f for f in desc.fields if f.type != _T.TYPE_GROUP]

    @st.composite
    def build(draw: st.DrawFn) -> Message:
        msg = cls()
        chosen = draw(st.lists(st.sampled_from(fields), max_size=6, unique=True)) if fields else []
        for field in chosen:
            _set(draw, msg, field, depth)
        return msg

    return build()


def _set(draw: st.DrawFn, msg: Any, field: FieldDescriptor, depth: int) -> None:
    if field.type == _T.TYPE_MESSAGE:
        assert field.message_type is not None
        sub = field.message_type
        if sub.GetOptions().map_entry:
            key, val = sub.fields_by_name["key"], sub.fields_by_name["value"]
            container = getattr(msg, field.name)
            for k in draw(st.lists(_scalar(key), max_size=3)):
                if val.type == _T.TYPE_MESSAGE:
                    if depth < MAX_DEPTH:
                        assert val.message_type is not None
                        container[k].CopyFrom(draw(messages(val.message_type, depth + 1)))
                else:
                    container[k] = draw(_scalar(val))
            return
        if depth >= MAX_DEPTH:
            return
        if field.is_repeated:
            for item in draw(st.lists(messages(sub, depth + 1), max_size=3)):
                getattr(msg, field.name).add().CopyFrom(item)
        else:
            getattr(msg, field.name).CopyFrom(draw(messages(sub, depth + 1)))
        return
    if field.is_repeated:
        getattr(msg, field.name).extend(draw(st.lists(_scalar(field), max_size=4)))
    else:
        setattr(msg, field.name, draw(_scalar(field)))
