"""Pure helpers for Kata's signal semantics (SignalProcess).

* ``exec_id == ""`` with SIGKILL means "every process of the container" (freeze, kill, thaw).
* SIGTERM to a container init that neither catches, ignores nor blocks it is sent as SIGKILL: an
  init is PID 1 of its pid namespace, and the kernel drops signals PID 1 has no handler for.
"""

from __future__ import annotations

import signal
from pathlib import Path

_MASK_KEYS = ("SigCgt:", "SigIgn:", "SigBlk:")


def is_kill_all(exec_id: str, signum: int) -> bool:
    return exec_id == "" and signum == signal.SIGKILL


def handles_signal(status_text: str, signum: int) -> bool:
    """Whether a /proc/<pid>/status text shows ``signum`` caught, ignored or blocked."""
    bit = 1 << (signum - 1)
    for line in status_text.splitlines():
        for key in _MASK_KEYS:
            if line.startswith(key):
                try:
                    mask = int(line[len(key) :].strip(), 16)
                except ValueError:
                    continue
                if mask & bit:
                    return True
    return False


def effective_signal(signum: int, *, is_init: bool, status_text: str | None) -> int:
    """The signal actually sent: SIGTERM becomes SIGKILL for an init that does not handle it.
    ``status_text`` is None when /proc/<pid>/status could not be read (the signal is kept)."""
    if (
        signum == signal.SIGTERM
        and is_init
        and status_text is not None
        and not handles_signal(status_text, signal.SIGTERM)
    ):
        return signal.SIGKILL
    return signum


def read_proc_status(pid: int, proc: Path = Path("/proc")) -> str | None:
    try:
        return (proc / str(pid) / "status").read_text()
    except OSError:
        return None
