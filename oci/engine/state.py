"""Per-container state on disk: ``<root>/<id>/state.json`` (+ ``exec.fifo`` while created).

The record is written once at create (atomically, via rename) and read by every later command;
the live status is derived from it (``oci.engine.status``), as runc does.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import ContainerExists, ContainerNotFound, InvalidArgument

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")

FIFO = "exec.fifo"
STATE = "state.json"


def check_id(container_id: str) -> None:
    if not container_id or not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id format: {container_id!r}")


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """The persisted facts about one container.

    ``config`` is the spec as JSON data; ``cgroup`` what the engine keeps of the container's
    cgroup (``oci.engine.cgroup.record_of``)."""

    id: str
    pid: int
    pid_start: int
    bundle: str
    rootfs: str
    created: str
    config: dict[str, Any]
    owner: str = ""
    cgroup: dict[str, Any] = field(default_factory=dict)
    namespaces: list[str] = field(default_factory=list)

    def to_json(self, config_json: str | None = None) -> str:
        """The state file's text. ``config_json``: ``config_json(self.config)``, encoded
        beforehand (create does it while the container is being set up); same text."""
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        if config_json is None:
            return json.dumps(fields, separators=(",", ":"))
        fields["config"] = _CONFIG_SLOT
        text = json.dumps(fields, separators=(",", ":"))
        return text.replace(json.dumps(_CONFIG_SLOT), config_json, 1)

    @property
    def cgroups_path(self) -> str | None:
        """The spec's ``linux.cgroupsPath``."""
        path = (self.config.get("linux") or {}).get("cgroupsPath")
        return str(path) if path is not None else None


# Stands for the config in ``Record.to_json``: NUL is in no path, id or other field, and
# json.dumps escapes it, so its encoding occurs exactly once in the record's text.
_CONFIG_SLOT = "\0config\0"


def config_json(config: dict[str, Any]) -> str:
    """A record's config as ``Record.to_json`` encodes it."""
    return json.dumps(config, separators=(",", ":"))


def rfc3339_now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def state_dir(root: str, container_id: str) -> str:
    return os.path.join(root, container_id)


def fifo_path(root: str, container_id: str) -> str:
    return os.path.join(root, container_id, FIFO)


def make_dir(root: str, container_id: str) -> None:
    """The container's state directory; ContainerExists when it is there already."""
    os.makedirs(root, mode=0o711, exist_ok=True)
    try:
        os.mkdir(state_dir(root, container_id), 0o711)
    except FileExistsError:
        raise ContainerExists(container_id) from None


def make_fifo(root: str, container_id: str, opened: contextlib.ExitStack) -> int:
    """The exec fifo a created init waits on, opened O_RDWR for the init (closed with
    ``opened``): ``start`` writes to it, and it is gone once started."""
    path = fifo_path(root, container_id)
    os.mkfifo(path, 0o622)
    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
    opened.callback(os.close, fd)
    return fd


def save(root: str, rec: Record, *, config_json: str | None = None) -> None:
    """Write the record (atomically: a temporary file renamed). ``config_json``: see
    ``Record.to_json``."""
    d = state_dir(root, rec.id)
    tmp = os.path.join(d, STATE + ".tmp")
    data = rec.to_json(config_json).encode()  # ASCII: json.dumps escapes the rest
    # os-level writes: the spawner's worker is a fresh fork, where a text layer's first use
    # copies pages on a create's path
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o666)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
    os.rename(tmp, os.path.join(d, STATE))


def load(root: str, container_id: str) -> Record:
    check_id(container_id)
    try:
        with open(os.path.join(state_dir(root, container_id), STATE)) as f:
            data = json.load(f)
    except (FileNotFoundError, NotADirectoryError):
        raise ContainerNotFound(container_id) from None
    return Record(**data)


def list_ids(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.exists(os.path.join(root, n, STATE))]


def remove(root: str, container_id: str) -> None:
    d = state_dir(root, container_id)
    for name in (FIFO, STATE, STATE + ".tmp"):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(d, name))
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
    except OSError:
        shutil.rmtree(d, ignore_errors=True)


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (None if the process is gone or a zombie)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return None
    rest = data[data.rindex(b")") + 2 :].split()
    if rest[0] in (b"Z", b"X"):
        return None
    return int(rest[19])


def exiting(pid: int) -> bool:
    """True once ``pid`` is gone, a zombie, or inside exit (PF_EXITING: e.g. a PID 1 waiting in
    zap_pid_ns_processes for its namespace to be reaped by someone else)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except OSError:
        return True
    rest = data[data.rindex(b")") + 2 :].split()
    return rest[0] in (b"Z", b"X") or bool(int(rest[6]) & 0x4)


def alive(rec: Record) -> bool:
    return rec.pid > 0 and proc_start_time(rec.pid) == rec.pid_start
