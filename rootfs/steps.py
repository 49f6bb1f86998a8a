"""Build-step plumbing shared by `rootfs/` and `image-build/`.

Every external command a build runs goes through :func:`run`, which writes the command's output to
``<logs>/<step>.log`` and turns a failure into a :class:`BuildError` naming the step and the log, so
that a user reads "step kernel-download failed (exit 100): see build/logs/kernel-download.log" and
not a Python traceback. A full disk (ENOSPC) becomes the same kind of error, naming the path.

Stdlib only: this runs on the host with whatever python3 is there.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

#: Fixed timestamp for reproducible archives (2024-01-01T00:00:00Z) unless SOURCE_DATE_EPOCH is set.
DEFAULT_EPOCH = 1704067200


class BuildError(Exception):
    """A build step failed; the message names the step and where its log is."""


@dataclass(frozen=True, slots=True)
class Logs:
    """Where step logs go."""

    directory: Path

    def path(self, step: str) -> Path:
        self.directory.mkdir(parents=True, exist_ok=True)
        return self.directory / f"{step}.log"


def source_date_epoch(env: Mapping[str, str]) -> int:
    value = env.get("SOURCE_DATE_EPOCH", "")
    return int(value) if value.isdigit() else DEFAULT_EPOCH


def say(msg: str) -> None:
    print(f"[image] {msg}", file=sys.stderr, flush=True)


def run(
    step: str,
    argv: Sequence[str | os.PathLike[str]],
    logs: Logs,
    *,
    cwd: Path | None = None,
    stdin: int | None = None,
    stdout: int | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 600,
) -> None:
    """Run one external command of build step `step`; raise BuildError naming the log on failure."""
    log = logs.path(step)
    args = [os.fspath(a) for a in argv]
    with open(log, "ab") as fh:
        fh.write(f"$ {' '.join(args)}\n".encode())
        fh.flush()
        try:
            proc = subprocess.run(
                args,
                cwd=cwd,
                stdin=stdin if stdin is not None else subprocess.DEVNULL,
                stdout=stdout if stdout is not None else fh,
                stderr=fh,
                env=dict(env) if env is not None else None,
                timeout=timeout,
                check=False,
            )
        except FileNotFoundError as err:
            raise BuildError(
                f"step {step}: command {args[0]!r} not found (install it; see README); log: {log}"
            ) from err
        except subprocess.TimeoutExpired as err:
            raise BuildError(
                f"step {step}: {args[0]} timed out after {timeout:.0f}s; log: {log}"
            ) from err
    if proc.returncode != 0:
        tail = _tail(log)
        raise BuildError(f"step {step} failed (exit {proc.returncode}): see {log}\n{tail}")


def capture(step: str, argv: Sequence[str], logs: Logs, *, timeout: float = 120) -> str:
    """Run a query command and return its stdout; failures raise BuildError naming the log."""
    log = logs.path(step)
    try:
        proc = subprocess.run(
            list(argv), capture_output=True, text=True, timeout=timeout, check=False
        )
    except FileNotFoundError as err:
        raise BuildError(f"step {step}: command {argv[0]!r} not found; log: {log}") from err
    with open(log, "a") as fh:
        fh.write(f"$ {' '.join(argv)}\n{proc.stdout}{proc.stderr}")
    if proc.returncode != 0:
        raise BuildError(f"step {step} failed (exit {proc.returncode}): see {log}\n{_tail(log)}")
    return proc.stdout


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").splitlines()[-lines:]
    except OSError:
        return ""
    return "\n".join("    " + line for line in text)


@contextlib.contextmanager
def step(name: str, logs: Logs) -> Iterator[None]:
    """Name a step for its Python-side failures: disk full, missing input, permission."""
    t0 = time.monotonic()
    say(f"{name} ...")
    try:
        yield
    except BuildError:
        raise
    except OSError as err:
        where = f" {err.filename}" if err.filename else ""
        if err.errno == errno.ENOSPC:
            raise BuildError(f"step {name}: disk full writing{where} (free some space)") from err
        raise BuildError(
            f"step {name}: {os.strerror(err.errno or 0) or err}{where}; logs in {logs.directory}"
        ) from err
    say(f"{name} done in {time.monotonic() - t0:.1f}s")


def digest(parts: Iterable[str | bytes]) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part if isinstance(part, bytes) else part.encode())
        h.update(b"\0")
    return h.hexdigest()[:24]


def tree_digest(root: Path, *, suffixes: tuple[str, ...] = (".py",)) -> str:
    """Content hash of every file below `root` with one of `suffixes` (sorted, path-qualified)."""
    parts: list[str | bytes] = []
    for path in sorted(root.rglob("*")):
        if path.is_file() and path.suffix in suffixes and "__pycache__" not in path.parts:
            parts.append(str(path.relative_to(root)))
            parts.append(path.read_bytes())
    return digest(parts)


def cached(stamp: Path, key: str) -> bool:
    """True when `stamp` records `key` (the output it guards is up to date)."""
    try:
        return bool(json.loads(stamp.read_text()).get("key") == key)
    except (OSError, ValueError):
        return False


def mark(stamp: Path, key: str, **info: object) -> None:
    stamp.parent.mkdir(parents=True, exist_ok=True)
    tmp = stamp.with_suffix(".tmp")
    tmp.write_text(json.dumps({"key": key, **info}, indent=1, sort_keys=True) + "\n")
    tmp.replace(stamp)
