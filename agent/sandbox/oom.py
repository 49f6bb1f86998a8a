"""The sandbox's OOM event queue, served by GetOOMEvent.

As in Kata: one shared queue (capacity 100) fed by the per-container OOM watchers; each event goes
to exactly one caller of `get`, in order; when the sandbox is destroyed the queue is closed and
every pending and later `get` fails.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

from agent.errors import Internal

log = logging.getLogger(__name__)

CAPACITY = 100


class OomEvents:
    def __init__(self, capacity: int = CAPACITY) -> None:
        self._capacity = capacity
        self._events: deque[str] = deque()
        self._getters: deque[asyncio.Future[str]] = deque()
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        return len(self._events)

    def put(self, container_id: str) -> None:
        """Report an OOM kill in ``container_id``. Never blocks; drops when full (logged)."""
        if self._closed:
            return
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_result(container_id)
                return
        if len(self._events) >= self._capacity:
            log.warning("OOM event queue full, event dropped", extra={"container_id": container_id})
            return
        self._events.append(container_id)

    async def get(self) -> str:
        """The next OOM event's container id; waits for one. Fails once the queue is closed."""
        if self._events:
            return self._events.popleft()
        if self._closed:
            raise Internal("sandbox destroyed: no more OOM events")
        getter: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._getters.append(getter)
        try:
            return await getter
        except asyncio.CancelledError:
            # A cancelled getter may have been handed an event in the same loop step: requeue it.
            if getter.done() and not getter.cancelled() and getter.exception() is None:
                self._events.appendleft(getter.result())
            raise
        finally:
            if getter in self._getters:
                self._getters.remove(getter)

    def close(self) -> None:
        self._closed = True
        self._events.clear()
        while self._getters:
            getter = self._getters.popleft()
            if not getter.done():
                getter.set_exception(Internal("sandbox destroyed: no more OOM events"))
