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

    def __init__(self, root: str, *, cgroup_layout: object = None) -> None:
        self.root = root
        self.cgroup_layout = cgroup_layout

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
    import oci.engine.facade

    FakeEngine.calls = []
    FakeEngine.fail = None
    monkeypatch.setattr(oci.engine.facade, "Engine", FakeEngine)
    return FakeEngine


def container(
    client: FakeClient, *, start_hooks: bool = True, stop_hooks: bool = True
) -> OciContainer:
    return OciContainer(
        container_id="c1",
        client=client,  # type: ignore[arg-type]
        reaper=None,  # type: ignore[arg-type]
        cgroup=None,  # type: ignore[arg-type]
        start_hooks=start_hooks,
        stop_hooks=stop_hooks,
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
    # the agent imports oci_runtime at start-up; the engine is loaded on the first start
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


class RecordingCgroup:
    def __init__(self, fail: Exception | None = None) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail = fail

    def apply(self, resources: Any) -> None:
        self.calls.append(("apply", resources))

    def refresh_cpuset(self, cpus: str | None) -> None:
        self.calls.append(("refresh_cpuset", cpus))
        if self.fail is not None:
            raise self.fail


async def test_refresh_cpuset_keeps_the_containers_own_list() -> None:
    """The spec's cpu.cpus, then the last update's, is what the cgroup keeps after hot-plug."""
    from oci.cgroups import errors as cgerr
    from oci.spec import LinuxCPU, LinuxResources

    cg = RecordingCgroup()
    c = OciContainer(
        container_id="c1",
        client=FakeClient(),  # type: ignore[arg-type]
        reaper=None,  # type: ignore[arg-type]
        cgroup=cg,  # type: ignore[arg-type]
    )
    await c.refresh_cpuset()
    c2 = OciContainer(
        container_id="c2",
        client=FakeClient(),  # type: ignore[arg-type]
        reaper=None,  # type: ignore[arg-type]
        cgroup=cg,  # type: ignore[arg-type]
        cpus="0",
    )
    await c2.refresh_cpuset()
    await c2.update(LinuxResources(cpu=LinuxCPU(shares=512)))
    await c2.refresh_cpuset()
    await c2.update(LinuxResources(cpu=LinuxCPU(cpus="1-2")))
    await c2.refresh_cpuset()
    assert [x for x in cg.calls if x[0] == "refresh_cpuset"] == [
        ("refresh_cpuset", None),
        ("refresh_cpuset", "0"),
        ("refresh_cpuset", "0"),
        ("refresh_cpuset", "1-2"),
    ]
    cg.fail = cgerr.CgroupInvalid("write 0 to cpuset.cpus: EINVAL")
    with pytest.raises(errors.InvalidArgument, match="container c2: cpuset after CPU hot-plug"):
        await c2.refresh_cpuset()


def test_spec_cpus() -> None:
    from oci.spec import Linux, LinuxCPU, LinuxResources, Spec

    assert oci_runtime._spec_cpus(Spec()) is None
    assert oci_runtime._spec_cpus(Spec(linux=Linux(resources=LinuxResources()))) is None
    cpu = LinuxResources(cpu=LinuxCPU(cpus=""))
    assert oci_runtime._spec_cpus(Spec(linux=Linux(resources=cpu))) is None
    cpu = LinuxResources(cpu=LinuxCPU(cpus="0-1"))
    assert oci_runtime._spec_cpus(Spec(linux=Linux(resources=cpu))) == "0-1"
