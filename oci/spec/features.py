"""The runtime-spec "features" document (`features.md`, what `runc features` prints), built from
this model's name sets. Pure: what the host or the engine actually supports comes in as
arguments (`kata-oci features` passes them).
"""

from __future__ import annotations

from collections.abc import Iterable

from . import names
from ._codec import JSON
from .runtime import SPEC_VERSION

HOOKS = ("prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop")


def features(
    *,
    mount_options: Iterable[str] = (),
    seccomp_enabled: bool = True,
    seccomp_supported_flags: Iterable[str] = (),
    apparmor_enabled: bool = False,
    selinux_enabled: bool = False,
    cgroup_v1: bool = True,
    cgroup_v2: bool = True,
    idmap_mounts: bool = False,
    annotations: dict[str, str] | None = None,
) -> dict[str, JSON]:
    """The features JSON object (keys in the order runc prints them)."""
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": list(HOOKS),
        "mountOptions": sorted(set(mount_options)),
        "linux": {
            "namespaces": sorted(names.NAMESPACES),
            "capabilities": sorted(names.CAPABILITIES, key=names.CAPABILITIES.__getitem__),
            "cgroup": {
                "v1": cgroup_v1,
                "v2": cgroup_v2,
                "systemd": False,
                "systemdUser": False,
                "rdma": True,
            },
            "seccomp": {
                "enabled": seccomp_enabled,
                "actions": sorted(names.SECCOMP_ACTIONS),
                "operators": sorted(names.SECCOMP_OPERATORS),
                "archs": sorted(names.SECCOMP_ARCHES),
                "knownFlags": sorted(names.SECCOMP_FLAGS),
                "supportedFlags": sorted(set(seccomp_supported_flags)),
            },
            "apparmor": {"enabled": apparmor_enabled},
            "selinux": {"enabled": selinux_enabled},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": idmap_mounts}},
        },
        "annotations": dict(annotations or {}),
    }
