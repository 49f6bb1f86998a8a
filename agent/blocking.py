"""Blocking filesystem work on a bounded thread pool of its own.

Calls that can block on something a less trusted party controls (a host-shared filesystem whose
server stalls, a file planted in a shared directory) run here, not on the event loop and not on
the loop's default executor: if every worker of this pool is stuck, filesystem calls queue up
(and a caller that gives up cancels its queued call), while every other request keeps being
served. The context variables of the caller (log fields) travel with the call, as with
``asyncio.to_thread``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_WORKERS = 8


class BlockingPool:
    def __init__(self, workers: int = DEFAULT_WORKERS, name: str = "fs") -> None:
        self.workers = workers
        self._name = name
        self._executor: concurrent.futures.ThreadPoolExecutor | None = None

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        if self._executor is None:
            self._executor = concurrent.futures.ThreadPoolExecutor(
                max_workers=self.workers, thread_name_prefix=self._name
            )
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._executor, call)

    def shutdown(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


_default: BlockingPool | None = None


def fs_pool() -> BlockingPool:
    """The agent's pool for filesystem work (one per process, made on first use)."""
    global _default
    if _default is None:
        _default = BlockingPool()
    return _default
