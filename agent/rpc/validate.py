"""Checks every request gets at the RPC edge, before its handler, whatever the method.

A string field with a NUL byte can never be meant (no path, name, id, argument or environment
entry of Linux can hold one), and further in it only surfaces as a Python ``ValueError`` from
``os.*`` ("embedded null byte"). ``check_request`` answers it with INVALID_ARGUMENT naming the
field (``CopyFileRequest.path``, ``CreateContainerRequest.OCI.Process.Env[2]``). The walk only runs
when the serialized request holds a zero byte at all, so ordinary calls pay one ``bytes.find``.
Method-specific checks (ranges, absolute paths, id formats) live with their handlers and services.
"""

from __future__ import annotations

from typing import Any

from google.protobuf.descriptor import FieldDescriptor
from google.protobuf.message import Message

from agent.errors import InvalidArgument

_STRING = FieldDescriptor.TYPE_STRING
_MESSAGE = FieldDescriptor.TYPE_MESSAGE


def check_request(request: Message, payload: bytes | None = None) -> None:
    """InvalidArgument naming the first string field of ``request`` that holds a NUL byte.
    ``payload``: the serialized request, if at hand (no zero byte in it: nothing to walk)."""
    if payload is not None and b"\0" not in payload:
        return
    _walk(request, request.DESCRIPTOR.name)


def _walk(msg: Message, where: str) -> None:
    for field, value in msg.ListFields():
        name = f"{where}.{field.name}"
        if field.type == _STRING:
            if field.is_repeated:
                for i, item in enumerate(value):
                    _check(item, f"{name}[{i}]")
            else:
                _check(value, name)
        elif field.type == _MESSAGE:
            assert field.message_type is not None
            if field.message_type.GetOptions().map_entry:
                _walk_map(field, value, name)
            elif field.is_repeated:
                for i, item in enumerate(value):
                    _walk(item, f"{name}[{i}]")
            else:
                _walk(value, name)


def _walk_map(field: FieldDescriptor, value: Any, name: str) -> None:
    assert field.message_type is not None
    key_type = field.message_type.fields_by_name["key"].type
    value_type = field.message_type.fields_by_name["value"].type
    for key, item in value.items():
        if key_type == _STRING:
            _check(key, f"{name} key")
        if value_type == _STRING:
            _check(item, f"{name}[{key!r}]")
        elif value_type == _MESSAGE:
            _walk(item, f"{name}[{key!r}]")


def _check(text: str, name: str) -> None:
    if "\0" in text:
        raise InvalidArgument(f"{name}: contains a NUL byte")
