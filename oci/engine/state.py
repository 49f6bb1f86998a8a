"""Per-container state on disk: ``<root>/<id>/state.json`` (+ ``exec.fifo`` while created).

The record is written once at create (atomically, via rename) and read by every later command;
the live status is derived, as runc does: pid gone (or reused, or a zombie) → stopped; exec.fifo
present → created; cgroup frozen → paused; else running.
"""

from __future__ import annotations

import os
import time

from .errors import ContainerNotFound, InvalidArgument

TYPE_CHECKING = False  # not typing's: start/kill/state need no typing module (~2 ms)
if TYPE_CHECKING:
    from typing import Any

_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")

FIFO = "exec.fifo"
STATE = "state.json"


def check_id(container_id: str) -> None:
    if not container_id or not _ID_CHARS.issuperset(container_id) or container_id in (".", ".."):
        raise InvalidArgument(f"invalid container id format: {container_id!r}")


class Record:
    """The persisted facts about one container (plain class: no dataclasses import here)."""

    FIELDS = (
        "id",
        "pid",
        "pid_start",
        "bundle",
        "rootfs",
        "created",
        "config",
        "owner",
        "cgroup",
        "namespaces",
    )

    def __init__(
        self,
        *,
        id: str,
        pid: int,
        pid_start: int,
        bundle: str,
        rootfs: str,
        created: str,
        config: dict[str, Any],
        owner: str = "",
        cgroup: dict[str, Any] | None = None,
        namespaces: list[str] | None = None,
    ) -> None:
        self.id = id
        self.pid = pid
        self.pid_start = pid_start
        self.bundle = bundle
        self.rootfs = rootfs
        self.created = created
        self.config = config
        self.owner = owner
        self.cgroup: dict[str, Any] = cgroup or {}
        self.namespaces: list[str] = namespaces or []

    def to_json(self, config_json: str | None = None) -> str:
        """The state file's text. ``config_json``: ``config_json(self.config)``, encoded
        beforehand (create does it while the container is being set up); same text."""
        import json

        if config_json is None:
            return json.dumps({k: getattr(self, k) for k in self.FIELDS}, separators=(",", ":"))
        fields = {k: getattr(self, k) for k in self.FIELDS}
        fields["config"] = _CONFIG_SLOT
        text = json.dumps(fields, separators=(",", ":"))
        return text.replace(json.dumps(_CONFIG_SLOT), config_json, 1)


# Stands for the config in ``Record.to_json``: NUL is in no path, id or other field, and
# json.dumps escapes it, so its encoding occurs exactly once in the record's text.
_CONFIG_SLOT = "\0config\0"


def config_json(config: dict[str, Any]) -> str:
    """A record's config as ``Record.to_json`` encodes it."""
    import json

    return json.dumps(config, separators=(",", ":"))


def rfc3339_now() -> str:
    ns = time.time_ns()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ns // 10**9)) + f".{ns % 10**9:09d}Z"


def state_dir(root: str, container_id: str) -> str:
    return os.path.join(root, container_id)


def save(root: str, rec: Record, *, config_json: str | None = None) -> None:
    """Write the record (atomically: a temporary file renamed). ``config_json``: see
    ``Record.to_json``."""
    d = state_dir(root, rec.id)
    tmp = os.path.join(d, STATE + ".tmp")
    data = rec.to_json(config_json).encode()  # ASCII: json.dumps escapes the rest
    # os-level, not open(): no text and buffer layers to set up (~0.3 ms of a spawner worker)
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
            text = f.read()
    except (FileNotFoundError, NotADirectoryError):
        raise ContainerNotFound(container_id) from None
    return Record(**_json_loads(text))


class _ScanContext:
    """What ``_json.make_scanner`` reads from a ``json.JSONDecoder``: its defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {
        "NaN": float("nan"),
        "Infinity": float("inf"),
        "-Infinity": float("-inf"),
    }.__getitem__


def _json_loads(text: str) -> Any:
    """``json.loads`` for the state file through the C scanner ``json`` itself uses, without
    importing ``json``: json.decoder imports re and enum, ~5 ms of every start, kill, state
    and delete (a fresh interpreter each) for a file this module wrote with ``json.dumps``.
    Anything the scanner cannot read goes to ``json.loads`` for its error."""
    body = text.strip()
    ctx: Any = _ScanContext
    try:
        from _json import make_scanner

        value, end = make_scanner(ctx)(body, 0)
    except (ImportError, StopIteration, ValueError):  # no C accelerator; not JSON
        pass
    else:
        if end == len(body):
            return value
    import json

    return json.loads(text)


def list_ids(root: str) -> list[str]:
    try:
        names = sorted(os.listdir(root))
    except FileNotFoundError:
        return []
    return [n for n in names if os.path.exists(os.path.join(root, n, STATE))]


def remove(root: str, container_id: str) -> None:
    d = state_dir(root, container_id)
    for name in (FIFO, STATE, STATE + ".tmp"):
        try:  # noqa: SIM105 - contextlib costs start/kill/delete ~2 ms to import
            os.unlink(os.path.join(d, name))
        except FileNotFoundError:
            pass
    try:
        os.rmdir(d)
    except FileNotFoundError:
        pass
    except OSError:
        import shutil

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
