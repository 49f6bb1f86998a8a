"""``value_class``: ``dataclasses.dataclass`` for the engine's small value classes, without the
generated methods.

A dataclass's ``__init__``, ``__repr__``, ``__eq__``, ``__hash__``, ``__setattr__`` and
``__delattr__`` are each an ``exec`` of generated source at import: about 0.1 ms each, ~5 ms
for the ten classes ``kata-oci create`` imports (``InitConfig``, ``ProcessPlan``, the seccomp
and capability plans, ...), in a process that lives for a few milliseconds more. These classes
get the same methods from shared functions instead. They stay dataclasses (``dataclasses.fields``,
``replace``, ``asdict`` work; the type checker sees ``dataclass``): the options are
``dataclass``'s ``frozen`` and ``slots``; fields may have defaults and default factories
(``dataclasses.field``), arguments are positional or keyword as with a generated ``__init__``.
No ``__post_init__``, ``InitVar``, ``kw_only`` or ``init=False`` fields (not supported).

Lives in the lowest layer of ``oci`` (the engine, the spec codec and this package use it).
"""

from __future__ import annotations

import dataclasses

__all__ = ["value_class"]

TYPE_CHECKING = False
if TYPE_CHECKING:
    from dataclasses import dataclass as value_class
    from typing import Any
else:

    def value_class(*, frozen: bool = False, slots: bool = False) -> Any:
        def wrap(cls: type) -> type:
            made: Any = dataclasses.dataclass(slots=slots, init=False, repr=False, eq=False)(cls)
            fs = dataclasses.fields(made)
            made._vc_plan = tuple(
                (
                    f.name,
                    f.default,
                    None if f.default_factory is dataclasses.MISSING else f.default_factory,
                )
                for f in fs
            )
            made._vc_names = tuple(f.name for f in fs)
            made.__init__ = _init
            made.__repr__ = _repr
            made.__eq__ = _eq
            if frozen:
                made.__hash__ = _hash
                made.__setattr__ = _frozen_setattr
                made.__delattr__ = _frozen_delattr
                made.__getstate__ = _getstate
                made.__setstate__ = _setstate
            else:
                made.__hash__ = None
            return made  # type: ignore[no-any-return]

        return wrap


_MISSING = dataclasses.MISSING


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    cls = type(self)
    plan = cls._vc_plan
    if len(args) > len(plan):
        low = 1 + sum(1 for _, d, f in plan if d is _MISSING and f is None)
        high = len(plan) + 1
        takes = f"from {low} to {high}" if low < high else str(high)
        raise TypeError(
            f"{cls.__qualname__}.__init__() takes {takes} positional arguments but "
            f"{len(args) + 1} were given"
        )
    put = object.__setattr__
    for i, (name, default, factory) in enumerate(plan):
        if i < len(args):
            if name in kwargs:
                raise TypeError(
                    f"{cls.__qualname__}.__init__() got multiple values for argument {name!r}"
                )
            value = args[i]
        elif name in kwargs:
            value = kwargs.pop(name)
        elif factory is not None:
            value = factory()
        elif default is not _MISSING:
            value = default
        else:
            raise TypeError(
                f"{cls.__qualname__}.__init__() missing 1 required positional argument: {name!r}"
            )
        put(self, name, value)
    if kwargs:
        name = next(iter(kwargs))
        raise TypeError(
            f"{cls.__qualname__}.__init__() got an unexpected keyword argument {name!r}"
        )


def _repr(self: Any) -> str:
    body = ", ".join(f"{n}={getattr(self, n)!r}" for n in type(self)._vc_names)
    return f"{type(self).__qualname__}({body})"


def _eq(self: Any, other: Any) -> Any:
    if other.__class__ is not self.__class__:
        return NotImplemented
    names: tuple[str, ...] = self._vc_names
    return tuple(getattr(self, n) for n in names) == tuple(getattr(other, n) for n in names)


def _hash(self: Any) -> int:
    return hash(tuple(getattr(self, n) for n in type(self)._vc_names))


def _frozen_setattr(self: Any, name: str, value: object) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot assign to field {name!r}")


def _frozen_delattr(self: Any, name: str) -> None:
    raise dataclasses.FrozenInstanceError(f"cannot delete field {name!r}")


def _getstate(self: Any) -> list[object]:  # copy/pickle of a frozen (slotted) instance
    return [getattr(self, n) for n in type(self)._vc_names]


def _setstate(self: Any, state: list[object]) -> None:
    for n, value in zip(type(self)._vc_names, state, strict=True):
        object.__setattr__(self, n, value)
