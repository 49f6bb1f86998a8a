"""Rewrite a container's OCI spec for the guest's devices (pure; oci.spec dataclasses).

* `linux.devices`: the entry whose path is a device's container path gets the guest major/minor
  (and the guest path, for VFIO groups); a container path missing from the spec is an error.
* `linux.resources.devices`: rules naming the host numbers get the guest numbers; an allow `rwm`
  rule per guest device is appended.
* `process.env`: `PCIDEVICE_*` host PCI addresses become guest addresses (and `*_INFO` JSON too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence

from agent.devices import pci
from agent.devices.model import DevUpdate
from agent.devices.pci import PciAddress
from agent.errors import InvalidArgument, NotFound
from oci.spec import Linux, LinuxDevice, LinuxDeviceCgroup, LinuxResources, Spec


def update_devices(spec: Spec, updates: Mapping[str, DevUpdate]) -> Spec:
    if not updates:
        return spec
    linux = spec.linux or Linux()
    by_path = {d.path: d for d in linux.devices}
    missing = [p for p in updates if p not in by_path]
    if missing:
        raise InvalidArgument(f"Missing devices in OCI spec: {', '.join(sorted(missing))}")
    renumber: dict[tuple[str, int | None, int | None], DevUpdate] = {}
    devices: list[LinuxDevice] = []
    for d in linux.devices:
        u = updates.get(d.path)
        if u is None:
            devices.append(d)
            continue
        renumber[(d.type, d.major, d.minor)] = u
        devices.append(
            dataclasses.replace(d, major=u.major, minor=u.minor, path=u.final_path or d.path)
        )
    resources = linux.resources or LinuxResources()
    rules: list[LinuxDeviceCgroup] = []
    for r in resources.devices:
        u = None
        for (typ, major, minor), cand in renumber.items():
            if r.major == major and r.minor == minor and r.type in (typ, "a", None):
                u = cand
        rules.append(r if u is None else dataclasses.replace(r, major=u.major, minor=u.minor))
    for u in updates.values():
        rules.append(
            LinuxDeviceCgroup(allow=True, type=u.kind, major=u.major, minor=u.minor, access="rwm")
        )
    resources = dataclasses.replace(resources, devices=tuple(rules))
    linux = dataclasses.replace(linux, devices=tuple(devices), resources=resources)
    return dataclasses.replace(spec, linux=linux)


def rewrite_pci_env(
    env: Sequence[str], mapping: Mapping[PciAddress, PciAddress]
) -> tuple[str, ...]:
    """SR-IOV device plugin variables: `PCIDEVICE_<res>=<bdf>,...` and `PCIDEVICE_<res>_INFO`."""
    out = list(env)
    info_maps: dict[str, dict[str, str]] = {}
    for i, var in enumerate(out):
        name, sep, val = var.partition("=")
        if not sep:
            raise InvalidArgument(f"malformed OCI env entry {var!r}")
        if not name.startswith("PCIDEVICE_") or name.endswith("_INFO"):
            continue
        try:
            hosts = [(h, pci.parse_address(h)) for h in val.split(",")]
        except InvalidArgument:
            continue  # not a PCI address list (e.g. a vDPA path): leave it alone
        guest_texts = []
        addr_map: dict[str, str] = {}
        for text, host in hosts:
            guest = mapping.get(host)
            if guest is None:
                raise NotFound(f"{name}: unable to translate host PCI address {text}")
            guest_texts.append(str(guest))
            addr_map[text] = str(guest)
        info_maps[f"{name}_INFO"] = addr_map
        out[i] = f"{name}={','.join(guest_texts)}"
    for i, var in enumerate(out):
        name, _, val = var.partition("=")
        amap = info_maps.get(name)
        if amap:
            for host_text, guest_text in amap.items():
                val = val.replace(host_text, guest_text)
            out[i] = f"{name}={val}"
    return tuple(out)


def rewrite_spec_env(spec: Spec, mapping: Mapping[PciAddress, PciAddress]) -> Spec:
    if spec.process is None or not any(e.startswith("PCIDEVICE_") for e in spec.process.env):
        return spec
    env = rewrite_pci_env(spec.process.env, mapping)
    return dataclasses.replace(spec, process=dataclasses.replace(spec.process, env=env))
