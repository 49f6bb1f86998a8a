"""Many containers and many execs against one real agent: all work, nothing accumulates."""

from __future__ import annotations

import asyncio

from tests.root.lifecycle.conftest import (
    Pod,
    agent_fds,
    agent_mounts,
    live_descendants,
    rss_kib,
)


async def test_fifty_containers_at_once(pod: Pod) -> None:
    fds = agent_fds(pod.agent)
    ids = [f"c{i:02d}" for i in range(50)]
    await asyncio.gather(
        *(pod.create(cid, ["sh", "-c", f"echo {cid}; exec sleep 1000"]) for cid in ids)
    )
    firsts = await asyncio.gather(*(pod.a.ReadStdout(_read(cid)) for cid in ids))
    assert [f.data for f in firsts] == [f"{cid}\n".encode() for cid in ids]
    assert len(live_descendants(pod.agent.pid)) == 1 + 50
    # exec into each of them concurrently
    results = await asyncio.gather(
        *(pod.run_exec(cid, "x", ["sh", "-c", f"echo in-{cid}"]) for cid in ids)
    )
    assert [r[1] for r in results] == [f"in-{cid}\n".encode() for cid in ids]
    await asyncio.gather(*(pod.signal(cid, "", 9) for cid in ids))
    statuses = await asyncio.gather(*(pod.wait(cid, cid) for cid in ids))
    assert statuses == [137] * 50
    await asyncio.gather(*(pod.remove(cid) for cid in ids))
    assert agent_mounts(pod.agent, pod.agent.run_dir) == []
    assert len(live_descendants(pod.agent.pid)) == 1
    assert agent_fds(pod.agent) == fds


def _read(cid: str) -> object:
    from agent.rpc.pb import agent_pb2

    return agent_pb2.ReadStreamRequest(container_id=cid, exec_id=cid, len=100)


async def test_thousand_short_execs_no_growth(pod: Pod) -> None:
    await pod.create("c1", ["sleep", "100000"])
    pid = pod.agent.pid

    async def batch(start: int, n: int) -> None:
        for i in range(start, start + n):
            status, out, _ = await pod.run_exec("c1", f"e{i}", ["echo", str(i)])
            assert (status, out) == (0, f"{i}\n".encode())

    await batch(0, 100)  # warm-up: caches, allocator arenas, lazy imports
    fds, rss = agent_fds(pod.agent), rss_kib(pid)
    await batch(100, 900)
    assert agent_fds(pod.agent) == fds
    # No per-exec growth: 900 leaked entries of even 4 KiB would be 3.5 MiB.
    assert rss_kib(pid) - rss < 2048, (rss, rss_kib(pid))
    assert len(live_descendants(pid)) == 2  # the spawner and the container's init
