"""agent.rpc.server.FrameMemory: the shared budget of partial-frame bytes, with fake
connections (the real server over a socket: tests/integration/rpc/test_limits.py)."""

from __future__ import annotations

import asyncio
from typing import Any

from agent.rpc.server import FrameMemory


class FakeConn:
    def __init__(self, memory: FrameMemory, started: float) -> None:
        self.memory = memory
        self.frame_started = started
        self.woken = 0
        self.evicted = False

    def memory_available(self) -> None:
        self.woken += 1

    def evict(self, after: float) -> None:
        self.evicted = True
        self.memory.release(self)  # type: ignore[arg-type]


def _conns(memory: FrameMemory, *starts: float) -> list[Any]:
    return [FakeConn(memory, s) for s in starts]


async def test_allowance_is_free_and_the_budget_shared() -> None:
    mem = FrameMemory(100, allowance=10, evict_after=1e9)
    a, b = _conns(mem, 1.0, 2.0)
    assert mem.charge(a, 10)  # within the allowance: nothing charged
    assert mem.used == 0
    assert mem.charge(a, 70)
    assert mem.used == 60
    assert not mem.charge(b, 60)  # 60 + 50 > 100: b must wait
    assert mem.used == 110
    mem.charge(a, 0)  # a's frame completed: b is woken
    assert b.woken == 1
    assert mem.used == 50


async def test_oldest_frame_is_evicted_for_a_waiter() -> None:
    loop = asyncio.get_running_loop()
    now = loop.time()
    mem = FrameMemory(100, allowance=0, evict_after=2.0)
    old, older, fresh = _conns(mem, now - 5, now - 10, now)
    assert mem.charge(old, 50)
    assert mem.charge(older, 50)
    assert not mem.charge(fresh, 30)
    assert older.evicted  # the frame that started longest ago
    assert not old.evicted
    assert fresh.woken == 1
    assert mem.used == 80
    assert mem.evicted == 1


async def test_young_frames_are_not_evicted_until_due() -> None:
    loop = asyncio.get_running_loop()
    mem = FrameMemory(100, allowance=0, evict_after=0.2)
    holder, waiter = _conns(mem, loop.time(), loop.time())
    assert mem.charge(holder, 100)
    assert not mem.charge(waiter, 10)
    assert not holder.evicted
    await asyncio.sleep(0.4)  # the re-check the budget scheduled has run
    assert holder.evicted
    assert waiter.woken == 1


async def test_release_forgets_a_waiter() -> None:
    mem = FrameMemory(10, allowance=0, evict_after=1e9)
    a, b = _conns(mem, 1.0, 2.0)
    assert mem.charge(a, 10)
    assert not mem.charge(b, 5)
    mem.release(b)  # b went away while waiting
    mem.charge(a, 0)
    assert b.woken == 0
    assert mem.used == 0
