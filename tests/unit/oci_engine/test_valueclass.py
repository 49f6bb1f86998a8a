"""oci.syscalls.valueclass: dataclasses without generated methods behave like generated ones."""

from __future__ import annotations

import copy
import dataclasses
import pickle
from typing import Any

import pytest

from oci.syscalls.valueclass import value_class


@value_class(frozen=True, slots=True)
class Point:
    """A frozen value."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)


@value_class(slots=True)
class Box:
    """A mutable value."""

    items: list[int] = dataclasses.field(default_factory=list)
    name: str = ""


@dataclasses.dataclass(frozen=True, slots=True)
class Generated:
    """The same fields as Point, with generated methods."""

    x: int
    y: int = 0
    tags: tuple[str, ...] = dataclasses.field(default_factory=tuple)


def test_init_positional_keyword_defaults() -> None:
    assert Point(1) == Point(x=1, y=0, tags=())
    assert Point(1, 2, ("a",)).tags == ("a",)
    assert Box().items is not Box().items  # a fresh default per instance


@pytest.mark.parametrize(
    ("args", "kwargs"), [((), {}), ((1, 2, (), 4), {}), ((1,), {"x": 1}), ((1,), {"z": 3})]
)
def test_init_errors_match_generated(args: tuple[object, ...], kwargs: dict[str, object]) -> None:
    ours: Any = Point
    theirs: Any = Generated
    with pytest.raises(TypeError) as want:
        theirs(*args, **kwargs)
    with pytest.raises(TypeError) as got:
        ours(*args, **kwargs)
    assert str(got.value).split("() ", 1)[1] == str(want.value).split("() ", 1)[1]


def test_eq_hash_repr_like_generated() -> None:
    p, g = Point(1, 2, ("t",)), Generated(1, 2, ("t",))
    assert repr(p) == repr(g).replace("Generated", "Point")
    assert hash(p) == hash(g)
    assert p == Point(1, 2, ("t",))
    assert p != Point(1, 3, ("t",))
    other: object = g
    assert p != other  # another class
    with pytest.raises(TypeError):
        hash(Box())  # mutable with eq: unhashable, as a generated dataclass


def test_frozen_and_slots() -> None:
    p = Point(1)
    with pytest.raises(dataclasses.FrozenInstanceError):
        p.x = 2  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        del p.x
    assert not hasattr(p, "__dict__")
    b = Box()
    b.name = "n"
    assert b.name == "n"
    with pytest.raises(AttributeError):
        b.other = 1  # type: ignore[attr-defined]


def test_dataclasses_api_copy_pickle() -> None:
    p = Point(1, 2)
    assert [f.name for f in dataclasses.fields(p)] == ["x", "y", "tags"]
    assert dataclasses.replace(p, y=5) == Point(1, 5)
    assert dataclasses.asdict(p) == {"x": 1, "y": 2, "tags": ()}
    assert copy.deepcopy(p) == p
    assert pickle.loads(pickle.dumps(p)) == p
    assert Point.__match_args__ == ("x", "y", "tags")
