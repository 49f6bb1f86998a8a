"""Fixtures for the lifecycle root tests: a real agent in its own private mount namespace, a
busybox rootfs per test, a unique cgroup parent removed at teardown, and `Pod`, a thin helper that
speaks the shim's call sequence over ttrpc."""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from agent.ctl.container_spec import container_spec, exec_process
from agent.rpc.pb import agent_pb2, oci_pb2
from tests.support.agent import AgentProcess
from tests.support.rootfs import make_busybox_rootfs

PRIVATE_MNT = ["unshare", "--mount", "--propagation", "private"]
CGROUP_ROOT = Path("/sys/fs/cgroup")
READ_LEN = 32768


def cgroup_dirs(rel: str) -> list[Path]:
    """Every existing directory of cgroup ``rel`` (v1 controllers and the unified one)."""
    found = []
    for top in sorted(CGROUP_ROOT.iterdir()):
        d = top / rel.lstrip("/")
        if top.is_dir() and d.is_dir():
            found.append(d)
    return found


@pytest.fixture
def cgroup_parent() -> Iterator[str]:
    """A unique cgroup parent for the test's containers; removed (deepest first) at teardown."""
    name = f"kag-lifecycle-{uuid.uuid4().hex[:10]}"
    yield name
    for _ in range(3):
        left = cgroup_dirs(name)
        if not left:
            break
        for d in left:
            for sub in sorted(d.rglob("*"), key=lambda p: len(p.parts), reverse=True):
                if sub.is_dir():
                    with contextlib.suppress(OSError):
                        sub.rmdir()
            with contextlib.suppress(OSError):
                d.rmdir()


@pytest.fixture
def rootfs(tmp_path: Path) -> Path:
    return make_busybox_rootfs(tmp_path / "rootfs")


@pytest.fixture
def agent_mnt(agent_factory: Callable[..., AgentProcess]) -> AgentProcess:
    return agent_factory(prefix=PRIVATE_MNT, log_level="debug")


@dataclass
class Pod:
    """The shim's side of the conversation, for tests."""

    agent: AgentProcess
    client: Any
    rootfs: Path
    cgroup_parent: str
    created: list[str] = field(default_factory=list)

    @property
    def a(self) -> Any:
        return self.client.agent

    def spec(self, cid: str, args: list[str], **kw: Any) -> oci_pb2.Spec:
        return container_spec(
            str(self.rootfs), args, cgroups_path=f"/{self.cgroup_parent}/{cid}", **kw
        )

    async def create(self, cid: str, args: list[str], *, start: bool = True, **kw: Any) -> None:
        await self.a.CreateContainer(
            agent_pb2.CreateContainerRequest(
                container_id=cid, exec_id=cid, OCI=self.spec(cid, args, **kw)
            ),
            timeout=60,
        )
        self.created.append(cid)
        if start:
            await self.a.StartContainer(agent_pb2.StartContainerRequest(container_id=cid))

    async def exec(self, cid: str, eid: str, args: list[str], *, terminal: bool = False) -> None:
        await self.a.ExecProcess(
            agent_pb2.ExecProcessRequest(
                container_id=cid, exec_id=eid, process=exec_process(args, terminal=terminal)
            )
        )

    async def read(self, cid: str, eid: str, *, stderr: bool = False) -> bytes:
        """Read until EOF (the shim's copy loop)."""
        call = self.a.ReadStderr if stderr else self.a.ReadStdout
        out = b""
        while True:
            resp = await call(
                agent_pb2.ReadStreamRequest(container_id=cid, exec_id=eid, len=READ_LEN),
                timeout=120,
            )
            if not resp.data:
                return out
            out += resp.data

    async def write(self, cid: str, eid: str, data: bytes) -> None:
        await self.a.WriteStdin(
            agent_pb2.WriteStreamRequest(container_id=cid, exec_id=eid, data=data)
        )

    async def close_stdin(self, cid: str, eid: str) -> None:
        await self.a.CloseStdin(agent_pb2.CloseStdinRequest(container_id=cid, exec_id=eid))

    async def wait(self, cid: str, eid: str) -> int:
        resp = await self.a.WaitProcess(
            agent_pb2.WaitProcessRequest(container_id=cid, exec_id=eid), timeout=120
        )
        return int(resp.status)

    async def run(self, cid: str, args: list[str], **kw: Any) -> tuple[int, bytes, bytes]:
        """Create, start, read both outputs to EOF, wait, remove: (status, stdout, stderr)."""
        await self.create(cid, args, **kw)
        out, err = await asyncio.gather(self.read(cid, cid), self.read(cid, cid, stderr=True))
        status = await self.wait(cid, cid)
        await self.remove(cid)
        return status, out, err

    async def run_exec(self, cid: str, eid: str, args: list[str]) -> tuple[int, bytes, bytes]:
        await self.exec(cid, eid, args)
        out, err = await asyncio.gather(self.read(cid, eid), self.read(cid, eid, stderr=True))
        return await self.wait(cid, eid), out, err

    async def signal(self, cid: str, eid: str, sig: int) -> None:
        await self.a.SignalProcess(
            agent_pb2.SignalProcessRequest(container_id=cid, exec_id=eid, signal=sig)
        )

    async def remove(self, cid: str) -> None:
        await self.a.RemoveContainer(
            agent_pb2.RemoveContainerRequest(container_id=cid, timeout=0), timeout=60
        )
        if cid in self.created:
            self.created.remove(cid)


@pytest.fixture
async def pod(agent_mnt: AgentProcess, rootfs: Path, cgroup_parent: str) -> AsyncIterator[Pod]:
    async with await agent_mnt.client() as client:
        await client.agent.CreateSandbox(
            agent_pb2.CreateSandboxRequest(hostname="pod", sandbox_id="sb-test")
        )
        p = Pod(agent_mnt, client, rootfs, cgroup_parent)
        yield p
        for cid in list(p.created):
            with contextlib.suppress(Exception):
                await p.remove(cid)


def agent_mounts(agent: AgentProcess, below: Path) -> list[str]:
    """Mount points below ``below`` as the agent's mount namespace sees them."""
    text = Path(f"/proc/{agent.pid}/mountinfo").read_text()
    prefix = str(below)
    return [
        line.split()[4]
        for line in text.splitlines()
        if line.split()[4] == prefix or line.split()[4].startswith(prefix + "/")
    ]


def agent_fds(agent: AgentProcess) -> int:
    return len(os.listdir(f"/proc/{agent.pid}/fd"))


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    todo = [pid]
    while todo:
        p = todo.pop()
        for task in Path(f"/proc/{p}/task").glob("*"):
            with contextlib.suppress(OSError):
                kids = [int(k) for k in (task / "children").read_text().split()]
                out += kids
                todo += kids
    return out


def _spawner_workers(pid: int) -> set[int]:
    """The children of ``pid``'s engine spawner: its workers (one always waits, forked ahead of
    the next request). Container processes are never among them (they are reparented to the
    agent)."""
    out: set[int] = set()
    for task in Path(f"/proc/{pid}/task").glob("*"):
        with contextlib.suppress(OSError):
            for kid in (task / "children").read_text().split():
                with contextlib.suppress(OSError):
                    if b"oci.engine.spawner" in Path(f"/proc/{kid}/cmdline").read_bytes():
                        for t in Path(f"/proc/{kid}/task").glob("*"):
                            out.update(int(k) for k in (t / "children").read_text().split())
    return out


def live_descendants(pid: int) -> list[int]:
    """`descendants` without zombies (exited, not yet reaped by their parent) and without the
    engine spawner's workers (`_spawner_workers`): the spawner itself is counted. The workers
    are listed after the descendants: the spawner forks a worker's replacement when the worker
    has finished, i.e. just after the call the test made, so one forked in between is either
    in both lists or in neither."""
    alive = []
    everyone = descendants(pid)
    workers = _spawner_workers(pid)
    for p in everyone:
        if p in workers:
            continue
        with contextlib.suppress(OSError):
            stat = Path(f"/proc/{p}/stat").read_text()
            if stat[stat.rindex(")") + 2] != "Z":
                alive.append(p)
    return alive


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0
