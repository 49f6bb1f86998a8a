"""Structured JSON logs with Kata's field names.

Every module logs through ``logging.getLogger(__name__)``; the subsystem comes from the logger name
(``agent.rpc.server`` -> ``rpc``, ``agent.network.routes`` -> ``network``, ``oci.engine.init`` ->
``engine``). One JSON object per line::

    {"ts": "2026-11-27T06:00:00.123456Z", "level": "INFO", "msg": "...", "name": "kata-agent",
     "pid": "1", "source": "agent", "subsystem": "rpc", "version": "0.1.0", ...extra fields}

Fields passed with ``extra={...}`` are added as they are; the context variables below (the RPC
method, sandbox, container and exec ids) are added to every record logged inside their context
(the RPC server sets ``rpc_method``; services set the ids they work on with ``bind``).

Levels: Kata's names (``trace``, ``debug``, ``info``, ``warn``, ``error``, ``critical``), shown as
slog's short upper-case names (``TRCE``, ``DEBG``, ``INFO``, ``WARN``, ``ERRO``, ``CRIT``).

Sink: stdout by default, or (``agent.log_vport``) the first connection accepted on a vsock port:
``LogSink`` buffers records (bounded) until ``attach(stream)`` is called by ``agent.boot.phase1``.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Iterator
from typing import IO, Any

from agent import __version__

TRACE = 5
logging.addLevelName(TRACE, "TRACE")

_LEVELS = {
    "trace": TRACE,
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warn": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}
_SHORT = {
    TRACE: "TRCE",
    logging.DEBUG: "DEBG",
    logging.INFO: "INFO",
    logging.WARNING: "WARN",
    logging.ERROR: "ERRO",
    logging.CRITICAL: "CRIT",
}

# The loggers of the subsystems, for reference (modules use getLogger(__name__)).
SUBSYSTEMS = ("rpc", "sandbox", "network", "storage", "devices", "reaper", "spawn", "engine")

rpc_method: contextvars.ContextVar[str | None] = contextvars.ContextVar("rpc_method", default=None)
sandbox_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("sandbox_id", default=None)
container_id: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "container_id", default=None
)
exec_id: contextvars.ContextVar[str | None] = contextvars.ContextVar("exec_id", default=None)
_CONTEXT = (
    ("method", rpc_method),
    ("sandbox", sandbox_id),
    ("container", container_id),
    ("exec", exec_id),
)

# Attributes every LogRecord has; anything else came from extra={...}.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def level_number(name: str) -> int:
    """Kata level name -> logging level number."""
    return _LEVELS[name]


def subsystem_of(logger_name: str) -> str:
    parts = logger_name.split(".")
    if len(parts) >= 2 and parts[0] in ("agent", "oci"):
        return parts[1]
    return "root" if parts[0] in ("agent", "root", "") else parts[0]


class JsonFormatter(logging.Formatter):
    def __init__(self, *, name: str = "kata-agent", source: str = "agent") -> None:
        super().__init__()
        self.name = name
        self.source = source
        self.pid = str(os.getpid())

    def format(self, record: logging.LogRecord) -> str:
        ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        out: dict[str, Any] = {
            "ts": f"{ts}.{int(record.created % 1 * 1e6):06d}Z",
            "level": _SHORT.get(record.levelno, record.levelname),
            "msg": record.getMessage(),
            "name": self.name,
            "pid": self.pid,
            "source": self.source,
            "subsystem": subsystem_of(record.name),
            "version": __version__,
        }
        for key, var in _CONTEXT:
            value = var.get()
            if value is not None:
                out[key] = value
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in out:
                out[key] = value
        if record.exc_info:
            out["error"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str, ensure_ascii=False)


class LogSink(logging.Handler):
    """Writes formatted records to a stream; until one is attached, keeps the last ``backlog``."""

    def __init__(self, stream: IO[str] | None, *, backlog: int = 1000) -> None:
        super().__init__()
        self._stream = stream
        self._pending: deque[str] = deque(maxlen=backlog)

    def attach(self, stream: IO[str]) -> None:
        self.acquire()
        try:
            self._stream = stream
            while self._pending:
                self._write(self._pending.popleft())
        finally:
            self.release()

    def detach(self) -> None:
        self.acquire()
        try:
            self._stream = None
        finally:
            self.release()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # a broken record must never take the agent down
            self.handleError(record)
            return
        if self._stream is None:
            self._pending.append(line)
            return
        self._write(line)

    def _write(self, line: str) -> None:
        stream = self._stream
        if stream is None:
            self._pending.append(line)
            return
        try:
            stream.write(line + "\n")
            stream.flush()
        except (OSError, ValueError):
            # The log connection went away: keep buffering until a new one is attached.
            self._stream = None
            self._pending.append(line)


def setup(level: str, *, stream: IO[str] | None = sys.stdout) -> LogSink:
    """Install the JSON sink on the root logger at Kata level ``level``; returns the sink.
    ``stream=None`` buffers until ``LogSink.attach`` (the vsock log port)."""
    sink = LogSink(stream)
    sink.setFormatter(JsonFormatter())
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    root.addHandler(sink)
    root.setLevel(level_number(level))
    return sink


@contextlib.contextmanager
def bind(
    *, sandbox: str | None = None, container: str | None = None, exec_: str | None = None
) -> Iterator[None]:
    """Add ids to every record logged inside the block (and tasks created from it)."""
    tokens: list[tuple[contextvars.ContextVar[str | None], contextvars.Token[str | None]]] = []
    for var, value in ((sandbox_id, sandbox), (container_id, container), (exec_id, exec_)):
        if value is not None:
            tokens.append((var, var.set(value)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)
