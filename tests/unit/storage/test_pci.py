from __future__ import annotations

from pathlib import Path

import pytest

from agent.devices import pci
from agent.errors import InvalidArgument, NotFound


@pytest.mark.parametrize(
    ("text", "root", "hops"),
    [
        ("02", 0, ((2, 0),)),
        ("02/00", 0, ((2, 0), (0, 0))),
        ("1f.7", 0, ((0x1F, 7),)),
        ("02/00/01", 0, ((2, 0), (0, 0), (1, 0))),
        ("20/00/02", 0x20, ((0, 0), (2, 0))),
        ("00/02", 0, ((0, 0), (2, 0))),
    ],
)
def test_parse_path(text: str, root: int, hops: tuple[tuple[int, int], ...]) -> None:
    p = pci.parse_path(text)
    assert p.root_bus == root
    assert tuple((h.slot, h.function) for h in p.hops) == hops


@pytest.mark.parametrize(
    "bad", ["", "zz", "02//00", "20", "02/", "/02", "02.8", "32", " 02", "100"]
)
def test_parse_path_rejects(bad: str) -> None:
    with pytest.raises(InvalidArgument, match="invalid PCI path"):
        pci.parse_path(bad)


def test_address() -> None:
    a = pci.parse_address("0000:01:1f.3")
    assert (a.domain, a.bus, a.slot, a.function) == (0, 1, 0x1F, 3)
    assert str(a) == "0000:01:1f.3"
    assert pci.parse_address("01:02.0") == pci.PciAddress(0, 1, 2, 0)
    with pytest.raises(InvalidArgument):
        pci.parse_address("0000:01:02")


def _bridge(sysfs: Path, devpath: str, child_bus: str) -> None:
    d = sysfs / devpath.lstrip("/")
    (d / "pci_bus" / child_bus).mkdir(parents=True)


def test_relpath_through_bridges(tmp_path: Path) -> None:
    sysfs = tmp_path
    _bridge(sysfs, "/devices/pci0000:00/0000:00:02.0", "0000:01")
    _bridge(sysfs, "/devices/pci0000:00/0000:00:02.0/0000:01:00.0", "0000:02")
    p = pci.parse_path("02/00/01")
    assert pci.relpath(p, sysfs) == "/0000:00:02.0/0000:01:00.0/0000:02:01.0"
    assert pci.devpath(p, sysfs).startswith("/devices/pci0000:00/")


def test_relpath_pxb_root(tmp_path: Path) -> None:
    _bridge(tmp_path, "/devices/pci0000:20/0000:20:00.0", "0000:21")
    p = pci.parse_path("20/00/02")
    assert pci.devpath(p, tmp_path) == "/devices/pci0000:20/0000:20:00.0/0000:21:02.0"


def test_relpath_not_a_bridge(tmp_path: Path) -> None:
    (tmp_path / "devices/pci0000:00/0000:00:03.0").mkdir(parents=True)
    with pytest.raises(NotFound, match="is not a bridge"):
        pci.relpath(pci.parse_path("03/00"), tmp_path)


def test_relpath_ambiguous_bridge(tmp_path: Path) -> None:
    _bridge(tmp_path, "/devices/pci0000:00/0000:00:02.0", "0000:01")
    _bridge(tmp_path, "/devices/pci0000:00/0000:00:02.0", "0000:05")
    with pytest.raises(NotFound, match="2 child buses"):
        pci.relpath(pci.parse_path("02/00"), tmp_path)
