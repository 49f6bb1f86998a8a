"""kata-agent-hv's configuration (parsed once, in ``hv.cli``) and the VM size a sandbox asks for.

The Go runtime's remote hypervisor (virtcontainers/remote.go) passes the VM size it computed as
CreateVM annotations: ``default_vcpus`` (a count) and ``default_memory`` (MiB), under Kata's
hypervisor annotation prefix. For a remote hypervisor the runtime starts from 0 (its
configuration's sizes are not read), then adds the pod's annotations (``enable_annotations``) or,
with ``static_sandbox_resource_mgmt``, the containers' limits. So 0 means "the service's default",
a memory size below what the guest itself needs is raised to that minimum, and a value that is not
a usable number (or more than the host has) is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from agent.errors import InvalidArgument

ANNOTATION_PREFIX = "io.katacontainers.config.hypervisor."
VCPUS_ANNOTATION = ANNOTATION_PREFIX + "default_vcpus"
MEMORY_ANNOTATION = ANNOTATION_PREFIX + "default_memory"
MAX_VCPUS = 255  # q35 without an IOMMU
MIN_MEMORY_MB = 256  # the guest's kernel, its rootfs in memory and the agent need this much
# Kata's container/sandbox id rule (virtcontainers/utils: ^[a-zA-Z0-9][a-zA-Z0-9_.-]+$).
SANDBOX_ID = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_.-]+")
MAX_ID_LENGTH = 64


@dataclass(frozen=True, slots=True)
class VmSize:
    cpus: int
    memory_mb: int


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceConfig:
    socket: Path
    build: Path
    state_dir: Path = Path("/run/kata-agent-hv")
    shared_root: Path = Path("/run/kata-containers/shared/sandboxes")
    default_size: VmSize = VmSize(cpus=1, memory_mb=512)
    boot_timeout: float = 120.0
    log_rpc: bool = False
    debug_console: bool = False
    keep_logs: bool = False
    share_mode: str = "auto"
    append: tuple[str, ...] = ()


def check_sandbox_id(sandbox_id: str) -> str:
    if not sandbox_id:
        raise InvalidArgument("sandbox id is empty")
    if len(sandbox_id) > MAX_ID_LENGTH or not SANDBOX_ID.fullmatch(sandbox_id):
        raise InvalidArgument(
            f"invalid sandbox id {sandbox_id[:80]!r}: expected 2-{MAX_ID_LENGTH} characters of "
            f"[a-zA-Z0-9_.-], not starting with . _ or -"
        )
    return sandbox_id


def vm_size(
    annotations: Mapping[str, str],
    default: VmSize,
    *,
    host_memory_mb: int | None = None,
) -> VmSize:
    """The VM size the annotations ask for (0 or absent: ``default``)."""
    cpus = _count(annotations, VCPUS_ANNOTATION, default.cpus)
    memory = _count(annotations, MEMORY_ANNOTATION, default.memory_mb)
    if cpus > MAX_VCPUS:
        raise InvalidArgument(f"{VCPUS_ANNOTATION}={cpus}: at most {MAX_VCPUS} vCPUs")
    memory = max(memory, MIN_MEMORY_MB)  # e.g. one small container's limit, from static sizing
    host = host_memory_mb if host_memory_mb is not None else _host_memory_mb()
    if host and memory > host:
        raise InvalidArgument(
            f"{MEMORY_ANNOTATION}={memory}: more than the host's {host} MiB of memory"
        )
    return VmSize(cpus=cpus, memory_mb=memory)


def _count(annotations: Mapping[str, str], key: str, default: int) -> int:
    text = annotations.get(key, "").strip()
    if not text:
        return default
    try:
        value = int(text, 10)
    except ValueError:
        raise InvalidArgument(f"{key}={text[:40]!r}: not a whole number") from None
    if value < 0:
        raise InvalidArgument(f"{key}={value}: must not be negative")
    return value or default


def _host_memory_mb() -> int:
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") >> 20
    except (OSError, ValueError):
        return 0
