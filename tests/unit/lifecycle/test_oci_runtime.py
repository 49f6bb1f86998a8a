"""`agent.sandbox.oci_runtime.OciContainer`: start and delete run the engine's code in a thread
of the agent unless the container has poststart / poststop hooks (child processes: only the
engine's spawner may run them); engine errors become domain errors either way."""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from agent import errors
from agent.sandbox import oci_runtime
from agent.sandbox.oci_runtime import OciContainer
from oci.engine import errors as engerr


class FakeClient:
    root = "/nonexistent-engine-root"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def start(self, cid: str) -> None:
        self.calls.append(("spawner start", cid))

    async def delete(self, cid: str, *, force: bool = False) -> None:
        assert force
        self.calls.append(("spawner delete", cid))


class FakeEngine:
    calls: ClassVar[list[tuple[str, str, str]]] = []
    fail: ClassVar[Exception | None] = None

    def __init__(self, root: str) -> None:
        self.root = root

    def start(self, cid: str) -> None:
        self._record("start", cid)

    def delete(self, cid: str, *, force: bool = False) -> None:
        assert force
        self._record("delete", cid)

    def _record(self, op: str, cid: str) -> None:
        FakeEngine.calls.append((f"agent {op}", cid, self.root))
        if FakeEngine.fail is not None:
            raise FakeEngine.fail


@pytest.fixture
def engine(monkeypatch: pytest.MonkeyPatch) -> type[FakeEngine]:
    import oci.engine.launcher

    FakeEngine.calls = []
    FakeEngine.fail = None
    monkeypatch.setattr(oci.engine.launcher, "Engine", FakeEngine)
    return FakeEngine


def container(client: FakeClient, **hooks: bool) -> OciContainer:
    return OciContainer(
        container_id="c1",
        client=client,  # type: ignore[arg-type]
        reaper=None,  # type: ignore[arg-type]
        cgroup=None,  # type: ignore[arg-type]
        **hooks,
    )


async def test_without_hooks_start_and_delete_run_in_the_agent(engine: Any) -> None:
    client = FakeClient()
    c = container(client, start_hooks=False, stop_hooks=False)
    await c.start()
    await c.destroy()
    assert client.calls == []
    assert engine.calls == [
        ("agent start", "c1", client.root),
        ("agent delete", "c1", client.root),
    ]


async def test_with_hooks_the_spawner_starts_and_deletes(engine: Any) -> None:
    client = FakeClient()
    c = container(client, start_hooks=True, stop_hooks=False)
    await c.start()
    await c.destroy()
    assert client.calls == [("spawner start", "c1")]
    assert engine.calls == [("agent delete", "c1", client.root)]
    client2 = FakeClient()
    c2 = container(client2, start_hooks=False, stop_hooks=True)
    await c2.start()
    await c2.destroy()
    assert client2.calls == [("spawner delete", "c1")]


async def test_the_default_is_the_spawner(engine: Any) -> None:
    client = FakeClient()
    c = container(client)
    await c.start()
    await c.destroy()
    assert client.calls == [("spawner start", "c1"), ("spawner delete", "c1")]
    assert engine.calls == []


async def test_engine_errors_become_domain_errors_in_the_agent_too(engine: Any) -> None:
    c = container(FakeClient(), start_hooks=False, stop_hooks=False)
    engine.fail = engerr.InvalidState("cannot start a container that is running")
    with pytest.raises(errors.FailedPrecondition) as info:
        await c.start()
    assert "start container c1" in str(info.value)
    assert "running" in str(info.value)
    engine.fail = engerr.ContainerNotFound("c1")
    with pytest.raises(errors.NotFound):
        await c.destroy()


def test_module_keeps_the_engine_import_lazy() -> None:
    # the agent imports oci_runtime at start-up; the launcher is loaded on the first start
    assert not hasattr(oci_runtime, "Engine")


def test_the_cgroup_layout_is_probed_once_mounted(tmp_path: Any) -> None:
    from pathlib import PurePosixPath

    from oci.cgroups import V1Manager

    eng = oci_runtime.OciEngine(client=FakeClient(), reaper=None, cgroup_root=tmp_path)  # type: ignore[arg-type]
    # nothing mounted yet: not remembered
    first = eng._cgroup_manager("/pod/c1", "c1")
    assert isinstance(first, V1Manager)
    assert first.dirs == {}
    for name in ("cpu,cpuacct", "memory"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "cgroup.procs").write_text("")
    second = eng._cgroup_manager("/pod/c1", "c1")
    assert isinstance(second, V1Manager)
    assert second.path == PurePosixPath("/pod/c1")
    assert second.dirs == {
        "cpu": tmp_path / "cpu,cpuacct" / "pod" / "c1",
        "cpuacct": tmp_path / "cpu,cpuacct" / "pod" / "c1",
        "memory": tmp_path / "memory" / "pod" / "c1",
    }
    # remembered from then on (the hierarchies do not move while the agent runs)
    (tmp_path / "memory" / "cgroup.procs").unlink()
    third = eng._cgroup_manager(None, "c2")
    assert isinstance(third, V1Manager)
    assert set(third.dirs) == {"cpu", "cpuacct", "memory"}
