"""Device requests and the spec updates they cause (pure)."""

from __future__ import annotations

from dataclasses import dataclass

from agent.devices.pci import PciAddress


@dataclass(frozen=True, slots=True, kw_only=True)
class Device:
    """One `grpc.Device` of CreateContainer."""

    type: str
    container_path: str
    id: str = ""
    vm_path: str = ""
    options: tuple[str, ...] = ()

    def describe(self) -> str:
        ref = self.id or self.vm_path
        return f"device {self.type} {ref!r} for {self.container_path!r}"


@dataclass(frozen=True, slots=True)
class DevUpdate:
    """The guest device behind a container path: its cgroup type and numbers, maybe a new path."""

    kind: str  # "b" or "c"
    major: int
    minor: int
    final_path: str | None = None


@dataclass(frozen=True, slots=True)
class SpecUpdate:
    dev: DevUpdate | None = None
    pci: tuple[tuple[PciAddress, PciAddress], ...] = ()  # host → guest
