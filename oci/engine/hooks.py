"""OCI hooks: run each with the state JSON on stdin, its env and args, and a timeout.

Runs in the engine's process (prestart, createRuntime, poststart, poststop: the runtime
namespaces) or in the container's init (createContainer, startContainer, after pivot_root: so
``subprocess`` is imported here, before the fork). Both are single-threaded plain processes (the
agent never runs this code itself: it runs in the engine's spawner worker).
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence

from oci.spec import Hook, State, Status

from .errors import HookError

log = logging.getLogger(__name__)


def state_json(
    container_id: str,
    status: Status,
    bundle: str,
    annotations: Mapping[str, str],
    pid: int | None = None,
) -> str:
    """The OCI state document every hook reads on its stdin."""
    return State(
        id=container_id, status=status, pid=pid, bundle=bundle, annotations=annotations
    ).to_json()


def run_hooks(kind: str, hooks: Sequence[Hook], state: str) -> None:
    """Run ``hooks`` in order; the first failure raises HookError naming kind, index and path."""
    for i, hook in enumerate(hooks):
        args = list(hook.args) or [hook.path]
        env = dict(e.partition("=")[::2] for e in hook.env)
        try:
            done = subprocess.run(
                args,
                executable=hook.path,
                input=state.encode(),
                env=env,
                capture_output=True,
                timeout=hook.timeout if hook.timeout else None,
                close_fds=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HookError(
                f"{kind} hook #{i} {hook.path}: timed out after {hook.timeout}s"
            ) from None
        except OSError as err:
            raise HookError(
                f"{kind} hook #{i} {hook.path}: {err.strerror}", err.errno or 0
            ) from None
        if done.returncode != 0:
            how = (
                f"exit status {done.returncode}"
                if done.returncode > 0
                else f"killed by signal {-done.returncode}"
            )
            detail = done.stderr.decode(errors="replace").strip()
            raise HookError(
                f"{kind} hook #{i} {hook.path}: {how}" + (f": {detail}" if detail else "")
            )


def run_hooks_logged(kind: str, hooks: Sequence[Hook], state: str) -> None:
    """Like run_hooks, but every hook runs and failures are only logged (poststop)."""
    for i, hook in enumerate(hooks):
        try:
            run_hooks(kind, [hook], state)
        except HookError as err:
            log.warning("%s (hook #%d)", err, i)
