"""Generic JSON ⇄ dataclass conversion for the OCI model, driven by field metadata.

Every model class is a frozen, slotted, keyword-only dataclass deriving from `SpecObject`. The
codec reads the type hints of its fields and the metadata set by `spec_field`:

* the JSON key is the camelCase of the field name (`oom_score_adj` → `oomScoreAdj`) unless the
  field says otherwise (`key="containerID"`, `key="disableOOMKiller"`, ...);
* `required=True`: decoding fails when the key is absent;
* `always=True`: encode the value even when it is empty/false (Go fields without `omitempty`).

Supported field types: `str`, `int`, `bool`, `float`, `X | None`, `tuple[X, ...]`,
`Mapping[str, X]`, `enum.StrEnum` subclasses, nested `SpecObject`s and `JSON` (any JSON value).

Encoding omits None, empty tuples/mappings, False and "" unless the field is `always` or
`required` (ints are always written). Unknown JSON keys are handled by a policy:
`"keep"` (stored in the object's `extra` mapping and written back by the encoder),
`"ignore"` (dropped) or `"error"`. Decoding errors are `SpecError`s whose problems name the
offending field by its JSON path (`linux.namespaces[2].type: expected a string, got number`).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar, dataclass_transform

JSON = Any
"""Any JSON value (the result of `json.loads`)."""

UnknownPolicy = Literal["keep", "ignore", "error"]

_M = TypeVar("_M", bound=type)
T = TypeVar("T", bound="SpecObject")

_KEY = "oci_key"
_REQUIRED = "oci_required"
_ALWAYS = "oci_always"
_EXTRA = "oci_extra"


@dataclass(frozen=True, slots=True)
class Problem:
    """One finding about a spec: the JSON path of the field and what is wrong with it."""

    path: str
    message: str
    severity: Literal["error", "warning"] = "error"

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class SpecError(ValueError):
    """A spec could not be decoded or is invalid; `problems` lists every error found."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems: tuple[Problem, ...] = tuple(problems)
        super().__init__("; ".join(str(p) for p in self.problems))

    @classmethod
    def at(cls, path: str, message: str) -> SpecError:
        return cls([Problem(path, message)])


@dataclass_transform(kw_only_default=True, frozen_default=True, field_specifiers=(field,))
def model(cls: _M) -> _M:
    """The model class decorator: a frozen, slotted, keyword-only dataclass without generated
    methods (they come from `SpecObject`)."""
    make: Any = dataclass(slots=True, kw_only=True, eq=False, repr=False, init=False)
    made: _M = make(cls)
    return made


@model
class SpecObject:
    """Base of every model class: carries the unknown JSON keys kept by the decoder.

    Model classes are declared with `@model` (a frozen, slotted, keyword-only dataclass) and
    share the `__init__`, `__setattr__`, `__eq__`, `__hash__` and `__repr__` below, which behave
    like the generated ones: generating five methods for each of the model's classes would make
    every import of the model several times slower (docs/performance.md).
    """

    extra: Mapping[str, JSON] = field(default_factory=dict, repr=False, metadata={_EXTRA: True})

    def __init__(self, **kwargs: Any) -> None:
        cls = self.__class__
        for name, default, factory in _init_plan(cls):
            if name in kwargs:
                value = kwargs.pop(name)
            elif factory is not None:
                value = factory()
            else:
                value = default
            object.__setattr__(self, name, value)
        if kwargs:
            name = next(iter(kwargs))
            raise TypeError(
                f"{cls.__qualname__}.__init__() got an unexpected keyword argument {name!r}"
            )

    def __setattr__(self, name: str, value: object) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")

    def __getstate__(self) -> list[object]:  # copy/pickle of a frozen slotted class
        return [getattr(self, f.name) for f in dataclasses.fields(self)]

    def __setstate__(self, state: list[object]) -> None:
        for f, value in zip(dataclasses.fields(self), state, strict=True):
            object.__setattr__(self, f.name, value)

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in _names(self.__class__)[0])

    def __hash__(self) -> int:
        # maps (annotations, sysctl, extra, ...) are left out: equal objects still hash equal
        values = (getattr(self, n) for n in _names(self.__class__)[0])
        return hash((self.__class__, *(v for v in values if not isinstance(v, Mapping))))

    def __repr__(self) -> str:
        body = ", ".join(f"{n}={getattr(self, n)!r}" for n in _names(self.__class__)[1])
        return f"{self.__class__.__qualname__}({body})"

    def to_dict(self) -> dict[str, JSON]:
        """The JSON object for this value (plain dicts/lists, ready for `json.dumps`)."""
        return encode(self)


_NAMES_CACHE: dict[type, tuple[tuple[str, ...], tuple[str, ...]]] = {}


def _names(cls: type) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(fields compared, fields shown by repr) of a model class."""
    names = _NAMES_CACHE.get(cls)
    if names is None:
        fs = dataclasses.fields(cls)
        names = (
            tuple(f.name for f in fs if f.compare),
            tuple(f.name for f in fs if f.repr),
        )
        _NAMES_CACHE[cls] = names
    return names


def spec_field(
    default: Any = dataclasses.MISSING,
    *,
    key: str | None = None,
    required: bool = False,
    always: bool = False,
    default_factory: Any = dataclasses.MISSING,
) -> Any:
    """A dataclass field with codec metadata (see the module docstring)."""
    md = {_KEY: key, _REQUIRED: required, _ALWAYS: always}
    if default_factory is not dataclasses.MISSING:
        return field(default_factory=default_factory, metadata=md)
    return field(default=default, metadata=md)


_INIT_CACHE: dict[type, tuple[tuple[str, Any, Any], ...]] = {}


def _init_plan(cls: type) -> tuple[tuple[str, Any, Any], ...]:
    """(name, default, default factory or None) of every field, in declaration order."""
    plan = _INIT_CACHE.get(cls)
    if plan is None:
        plan = tuple(
            (
                f.name,
                f.default,
                None if f.default_factory is dataclasses.MISSING else f.default_factory,
            )
            for f in dataclasses.fields(cls)
        )
        _INIT_CACHE[cls] = plan
    return plan


def camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


@dataclass(frozen=True, slots=True)
class _FieldInfo:
    """How the codec reads and writes one field of a model class."""

    name: str
    key: str
    hint: Any
    required: bool
    always: bool


_INFO_CACHE: dict[type, tuple[tuple[_FieldInfo, ...], str | None]] = {}


def _fields_of(cls: type) -> tuple[tuple[_FieldInfo, ...], str | None]:
    cached = _INFO_CACHE.get(cls)
    if cached is not None:
        return cached
    hints = typing.get_type_hints(cls)
    infos: list[_FieldInfo] = []
    extra_name: str | None = None
    for f in dataclasses.fields(cls):
        if f.metadata.get(_EXTRA):
            extra_name = f.name
            continue
        infos.append(
            _FieldInfo(
                name=f.name,
                key=f.metadata.get(_KEY) or camel(f.name),
                hint=hints[f.name],
                required=bool(f.metadata.get(_REQUIRED)),
                always=bool(f.metadata.get(_ALWAYS)),
            )
        )
    result = (tuple(infos), extra_name)
    _INFO_CACHE[cls] = result
    return result


def json_key(cls: type, name: str) -> str:
    """The JSON key of field `name` of model class `cls` (for error paths)."""
    for info in _fields_of(cls)[0]:
        if info.name == name:
            return info.key
    raise KeyError(name)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _json_type(value: JSON) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


class _Decoder:
    def __init__(self, unknown: UnknownPolicy) -> None:
        self.unknown = unknown
        self.problems: list[Problem] = []
        self.unknown_paths: list[str] = []

    def fail(self, path: str, message: str) -> None:
        self.problems.append(Problem(path, message))

    def value(self, hint: Any, raw: JSON, path: str) -> Any:
        origin = getattr(hint, "__origin__", None)
        if isinstance(hint, types.UnionType) or origin is typing.Union:
            members = [a for a in hint.__args__ if a is not type(None)]
            if raw is None:
                return None
            return self.value(members[0], raw, path)
        if hint is Any:
            return raw
        if origin is tuple:
            (item,) = hint.__args__[:1]
            if raw is None:
                return ()
            if not isinstance(raw, list):
                self.fail(path, f"expected an array, got {_json_type(raw)}")
                return ()
            return tuple(self.value(item, v, f"{path}[{i}]") for i, v in enumerate(raw))
        if origin in (Mapping, dict) or hint is dict:
            args: tuple[Any, ...] = getattr(hint, "__args__", ())
            vhint = args[1] if len(args) == 2 else JSON
            if raw is None:
                return {}
            if not isinstance(raw, dict):
                self.fail(path, f"expected an object, got {_json_type(raw)}")
                return {}
            return {k: self.value(vhint, v, _join(path, k)) for k, v in raw.items()}
        if isinstance(hint, type) and issubclass(hint, SpecObject):
            if not isinstance(raw, dict):
                self.fail(path, f"expected an object, got {_json_type(raw)}")
                return hint()
            return self.obj(hint, raw, path)
        if isinstance(hint, type) and issubclass(hint, enum.Enum):
            try:
                return hint(raw)
            except ValueError:
                allowed = ", ".join(repr(m.value) for m in hint)
                self.fail(path, f"unknown value {json.dumps(raw)} (expected one of {allowed})")
                return next(iter(hint))
        if hint is bool:
            if not isinstance(raw, bool):
                self.fail(path, f"expected a boolean, got {_json_type(raw)}")
                return False
            return raw
        if hint is int:
            if isinstance(raw, bool) or not isinstance(raw, int):
                if isinstance(raw, float) and raw.is_integer():
                    return int(raw)
                self.fail(path, f"expected an integer, got {_json_type(raw)}")
                return 0
            return raw
        if hint is float:
            if isinstance(raw, bool) or not isinstance(raw, int | float):
                self.fail(path, f"expected a number, got {_json_type(raw)}")
                return 0.0
            return float(raw)
        if hint is str:
            if not isinstance(raw, str):
                self.fail(path, f"expected a string, got {_json_type(raw)}")
                return ""
            return raw
        raise TypeError(f"oci.spec codec: unsupported field type {hint!r} at {path}")

    def obj(self, cls: type[T], raw: dict[str, JSON], path: str) -> T:
        infos, extra_name = _fields_of(cls)
        kwargs: dict[str, Any] = {}
        known: set[str] = set()
        for info in infos:
            known.add(info.key)
            if info.key not in raw:
                if info.required:
                    self.fail(_join(path, info.key), "required field is missing")
                continue
            raw_value = raw[info.key]
            if raw_value is None and info.required:
                self.fail(_join(path, info.key), "required field is null")
                continue
            kwargs[info.name] = self.value(info.hint, raw_value, _join(path, info.key))
        extra = {k: v for k, v in raw.items() if k not in known}
        if extra:
            self.unknown_paths.extend(_join(path, k) for k in extra)
            if self.unknown == "error":
                for k in extra:
                    self.fail(_join(path, k), "unknown field")
            elif self.unknown == "keep" and extra_name is not None:
                kwargs[extra_name] = extra
        return cls(**kwargs)


def decode(
    cls: type[T], raw: JSON, *, unknown: UnknownPolicy = "keep", path: str = ""
) -> tuple[T, list[str]]:
    """Decode a JSON object into `cls`; returns the value and the paths of unknown keys.

    Raises `SpecError` listing every type error and missing required field.
    """
    dec = _Decoder(unknown)
    if not isinstance(raw, dict):
        raise SpecError.at(path, f"expected an object, got {_json_type(raw)}")
    value = dec.obj(cls, raw, path)
    if dec.problems:
        raise SpecError(dec.problems)
    return value, dec.unknown_paths


def _is_empty(value: Any) -> bool:
    if value is None or value is False:
        return True
    return isinstance(value, str | tuple | list | Mapping) and len(value) == 0


def encode_value(value: Any) -> JSON:
    if isinstance(value, SpecObject):
        return encode(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, tuple | list):
        return [encode_value(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): encode_value(v) for k, v in value.items()}
    return value


def encode(obj: SpecObject) -> dict[str, JSON]:
    """Encode a model object into a JSON-ready dict (empty optional values omitted)."""
    infos, extra_name = _fields_of(type(obj))
    out: dict[str, JSON] = {}
    for info in infos:
        value = getattr(obj, info.name)
        if value is None:
            continue
        if isinstance(value, bool):
            if not value and not info.always:
                continue
        elif isinstance(value, int | float):
            pass
        elif _is_empty(value) and not (info.always or info.required):
            continue
        out[info.key] = encode_value(value)
    if extra_name is not None:
        for k, v in getattr(obj, extra_name).items():
            out.setdefault(k, v)
    return out
