"""OCI hooks: run each with the state JSON on stdin, its env and args, and a timeout.

Runs in the launcher's process (prestart, createRuntime, poststart, poststop: the runtime
namespaces) or in the container's init (createContainer, startContainer). Both are
single-threaded plain processes, so ``subprocess`` is fine here (the agent never runs this code
itself: it runs in the engine's spawner worker).
"""

from __future__ import annotations

from collections.abc import Sequence

from .errors import HookError


def run_hooks(kind: str, hooks: Sequence[object], state_json: str) -> None:
    """Run ``hooks`` in order; the first failure raises HookError naming kind, index and path."""
    import subprocess  # lazily: most containers have no hooks

    for i, hook in enumerate(hooks):
        g = hook.__getattribute__
        path: str = g("path")
        args = list(g("args")) or [path]
        env = dict(e.partition("=")[::2] for e in g("env"))
        timeout = g("timeout")
        try:
            done = subprocess.run(
                args,
                executable=path,
                input=state_json.encode(),
                env=env,
                capture_output=True,
                timeout=timeout if timeout else None,
                close_fds=True,
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise HookError(f"{kind} hook #{i} {path}: timed out after {timeout}s") from None
        except OSError as err:
            raise HookError(f"{kind} hook #{i} {path}: {err.strerror}") from None
        if done.returncode != 0:
            how = (
                f"exit status {done.returncode}"
                if done.returncode > 0
                else f"killed by signal {-done.returncode}"
            )
            detail = done.stderr.decode(errors="replace").strip()
            raise HookError(f"{kind} hook #{i} {path}: {how}" + (f": {detail}" if detail else ""))


def run_hooks_logged(kind: str, hooks: Sequence[object], state_json: str) -> None:
    """Like run_hooks, but every hook runs and failures are only logged (poststop)."""
    for i, hook in enumerate(hooks):
        try:
            run_hooks(kind, [hook], state_json)
        except HookError as err:
            import logging  # lazily: the init imports this module, and it rarely logs

            logging.getLogger(__name__).warning("%s (hook #%d)", err, i)
