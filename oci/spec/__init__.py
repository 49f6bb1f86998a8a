"""The OCI runtime-spec model (config.json 1.0 to 1.2) as typed, frozen, slotted dataclasses.

API summary
-----------
* `load(path_or_text, *, validate=True, unknown="keep") -> Spec`: read a config.json file
  (a path: `str`/`os.PathLike`) or JSON text (`str` starting with "{", or `bytes`).
  `loads(text, ...)` takes JSON text only. Both raise `SpecError` (a `ValueError`) whose message
  names each offending field by its JSON path: `linux.namespaces[2].type: unknown namespace
  "foo"`; `err.problems` is the tuple of `Problem(path, message, severity)`.
* `load_process(path_or_text, *, validate=True, unknown="keep") -> Process`: an exec's
  process.json (`kata-oci exec -p`), errors named from `process.` on.
* `spec.to_json(indent=None)` / `dumps(spec, indent=None)`: config.json text; `spec.to_dict()`.
* `validate(spec) -> list[Problem]` (errors and warnings, pure: never touches the host),
  `check(spec)` raises `SpecError` on errors and returns the warnings,
  `check_resources(resources)` for an update's `LinuxResources` alone.
* `default_spec()`: what `runc spec` prints (`kata-oci spec` uses it);
  `features(...)`: the runtime-spec features document (`kata-oci features`).
* `State`, `Status`: the OCI state document (hooks' stdin, `state`); `State.to_json()`.
* `names`: closed name sets with kernel numbers (`names.CAPABILITIES["CAP_KILL"] == 5`,
  `names.RLIMITS`, `names.NAMESPACE_PROC_NAMES`, seccomp actions/operators/arches/flags).

Model conventions
-----------------
* Class names are the runtime-spec Go type names (`Spec`, `Process`, `User`, `Root`, `Mount`,
  `Hooks`, `Hook`, `Linux`, `LinuxNamespace`, `LinuxIDMapping`, `LinuxDevice`, `LinuxResources`,
  `LinuxMemory`, `LinuxCPU`, `LinuxPids`, `LinuxBlockIO`, `LinuxSeccomp`, `LinuxSyscall`,
  `LinuxCapabilities`, `POSIXRlimit`, ...). All are `@dataclass(frozen=True, slots=True,
  kw_only=True)`; build modified copies with `dataclasses.replace`.
* Field names are the snake_case of the JSON keys (`no_new_privileges`, `oom_score_adj`,
  `cgroups_path`, `rootfs_propagation`, `uid_mappings`, `apparmor_profile`, `selinux_label`,
  `io_priority`, `errno_ret`, ...); JSON oddities are mapped explicitly (`containerID` →
  `container_id`, `disableOOMKiller` → `disable_oom_killer`, `blockIO` → `block_io`,
  `throttleReadIOPSDevice` → `throttle_read_iops_device`, `class` → `class_`).
* Absent optional values are `None` (including optional strings: "" is not "absent"), absent
  lists are empty tuples, maps (`annotations`, `sysctl`, `unified`, `rdma`, `time_offsets`) are
  `Mapping[str, ...]` — a plain dict at runtime; treat it as read-only.
* Enumerated strings (namespace types, capability names, seccomp actions, ...) stay `str` so
  unknown values load and validation reports them with their path; `NamespaceType` and `Status`
  are `StrEnum`s for convenience.
* Unknown JSON keys: `unknown="keep"` (default) keeps them in each object's `extra` mapping and
  writes them back, `"ignore"` drops them; both log one warning naming the keys. `"error"`
  rejects them. Other platforms' sections (`windows`, `solaris`, `vm`, `zos`) are such keys.
* Encoding omits None, empty tuples/maps, "" and False, except for fields Go writes without
  `omitempty` (`user.uid`, `user.gid`, `linux.resources.devices[].allow`, ...).
"""

from __future__ import annotations

import json
import logging
import os

from . import names
from ._codec import JSON, Problem, SpecError, SpecObject, UnknownPolicy, decode, encode
from .defaults import default_spec
from .features import features
from .linux import (
    Linux,
    LinuxBlockIO,
    LinuxCapabilities,
    LinuxCPU,
    LinuxDevice,
    LinuxDeviceCgroup,
    LinuxHugepageLimit,
    LinuxIDMapping,
    LinuxIntelRdt,
    LinuxInterfacePriority,
    LinuxIOPriority,
    LinuxMemory,
    LinuxNamespace,
    LinuxNetwork,
    LinuxPersonality,
    LinuxPids,
    LinuxRdma,
    LinuxResources,
    LinuxSeccomp,
    LinuxSeccompArg,
    LinuxSyscall,
    LinuxThrottleDevice,
    LinuxTimeOffset,
    LinuxWeightDevice,
    NamespaceType,
)
from .runtime import (
    SPEC_VERSION,
    Box,
    CPUAffinity,
    Hook,
    Hooks,
    Mount,
    POSIXRlimit,
    Process,
    Root,
    Scheduler,
    Spec,
    User,
)
from .state import State, Status
from .validate import check, check_process, check_resources, validate

log = logging.getLogger(__name__)


__all__ = [
    "JSON",
    "SPEC_VERSION",
    "Box",
    "CPUAffinity",
    "Hook",
    "Hooks",
    "Linux",
    "LinuxBlockIO",
    "LinuxCPU",
    "LinuxCapabilities",
    "LinuxDevice",
    "LinuxDeviceCgroup",
    "LinuxHugepageLimit",
    "LinuxIDMapping",
    "LinuxIOPriority",
    "LinuxIntelRdt",
    "LinuxInterfacePriority",
    "LinuxMemory",
    "LinuxNamespace",
    "LinuxNetwork",
    "LinuxPersonality",
    "LinuxPids",
    "LinuxRdma",
    "LinuxResources",
    "LinuxSeccomp",
    "LinuxSeccompArg",
    "LinuxSyscall",
    "LinuxThrottleDevice",
    "LinuxTimeOffset",
    "LinuxWeightDevice",
    "Mount",
    "NamespaceType",
    "POSIXRlimit",
    "Problem",
    "Process",
    "Root",
    "Scheduler",
    "Spec",
    "SpecError",
    "SpecObject",
    "State",
    "Status",
    "UnknownPolicy",
    "User",
    "check",
    "check_process",
    "check_resources",
    "decode",
    "default_spec",
    "dumps",
    "encode",
    "features",
    "load",
    "load_process",
    "loads",
    "names",
    "validate",
]


def _parse(text: str | bytes, source: str) -> JSON:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise SpecError.at(
            "", f"{source}: invalid JSON at line {e.lineno} column {e.colno}: {e.msg}"
        ) from None
    except UnicodeDecodeError as e:
        raise SpecError.at("", f"{source}: not UTF-8 text: {e}") from None


def _read(path_or_text: str | bytes | os.PathLike[str]) -> tuple[str | bytes, str | None]:
    """(JSON text, the path it came from or None)."""
    if isinstance(path_or_text, bytes):
        return path_or_text, None
    if isinstance(path_or_text, str) and path_or_text.lstrip().startswith("{"):
        return path_or_text, None
    path = os.fspath(path_or_text)
    try:
        with open(path, "rb") as f:
            return f.read(), path
    except OSError as e:
        reason = os.strerror(e.errno) if e.errno else str(e)
        raise SpecError.at("", f"read {path}: {reason}") from None


def _report_unknown(source: str, unknown: UnknownPolicy, paths: list[str]) -> None:
    if paths:
        what = "ignored" if unknown == "ignore" else "kept"
        log.warning("%s: unknown fields %s: %s", source, what, ", ".join(paths))


def loads(
    text: str | bytes,
    *,
    validate: bool = True,
    unknown: UnknownPolicy = "keep",
    source: str = "config.json",
) -> Spec:
    """Decode (and by default validate) config.json text. Raises `SpecError`."""
    spec, unknown_paths = decode(Spec, _parse(text, source), unknown=unknown)
    _report_unknown(source, unknown, unknown_paths)
    if validate:
        for warning in check(spec):
            log.warning("%s: %s", source, warning)
    return spec


def load(
    path_or_text: str | bytes | os.PathLike[str],
    *,
    validate: bool = True,
    unknown: UnknownPolicy = "keep",
) -> Spec:
    """Load a Spec from a config.json path or from JSON text (see the module docstring)."""
    text, path = _read(path_or_text)
    return loads(text, validate=validate, unknown=unknown, source=path or "config.json")


def load_process(
    path_or_text: str | bytes | os.PathLike[str],
    *,
    validate: bool = True,
    unknown: UnknownPolicy = "keep",
) -> Process:
    """Load an exec's process.json (a path or JSON text); errors are named `process.<field>`."""
    text, path = _read(path_or_text)
    source = path or "process.json"
    process, unknown_paths = decode(Process, _parse(text, source), unknown=unknown, path="process")
    _report_unknown(source, unknown, unknown_paths)
    if validate:
        for warning in check_process(process):
            log.warning("%s: %s", source, warning)
    return process


def dumps(spec: Spec, *, indent: int | None = None) -> str:
    """config.json text for `spec` (compact unless `indent` is given)."""
    return spec.to_json(indent=indent)
