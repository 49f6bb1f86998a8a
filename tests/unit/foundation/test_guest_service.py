"""agent.services.guest on a temporary state root (real files, no fakes needed)."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import stat
from pathlib import Path

import pytest

from agent import config as cfg
from agent.errors import Internal, InvalidArgument, PermissionDenied
from agent.metrics import MetricsCollector
from agent.services.guest import CopyFileArgs, GuestService


@pytest.fixture
def service(tmp_path: Path) -> GuestService:
    config = cfg.with_values(cfg.defaults(), {("paths", "run_dir"): tmp_path / "run"})
    return GuestService(config, sysfs_root=tmp_path / "sys", random_device=tmp_path / "random")


def _base(service: GuestService) -> Path:
    return service.config.paths.shared_containers_dir


def _args(service: GuestService, rel: str, **kw: object) -> CopyFileArgs:
    defaults: dict[str, object] = dict(
        path=f"{_base(service)}/{rel}",
        file_size=0,
        file_mode=stat.S_IFREG | 0o644,
        dir_mode=0o750,
        uid=0,
        gid=0,
        offset=0,
        data=b"",
    )
    defaults.update(kw)
    return CopyFileArgs(**defaults)  # type: ignore[arg-type]


async def test_copy_regular_file_with_mode_owner_and_parents(service: GuestService) -> None:
    data = b"hello\n" * 100
    await service.copy_file(
        _args(
            service,
            "c1-abc-hosts/sub/hosts",
            file_size=len(data),
            data=data,
            file_mode=stat.S_IFREG | 0o640,
            uid=1000,
            gid=1001,
        )
    )
    target = _base(service) / "c1-abc-hosts/sub/hosts"
    assert target.read_bytes() == data
    st = target.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640
    assert (st.st_uid, st.st_gid) == (1000, 1001)
    parent = target.parent.stat()
    assert stat.S_IMODE(parent.st_mode) == 0o750
    assert (parent.st_uid, parent.st_gid) == (1000, 1001)  # the immediate parent is chowned
    assert target.parent.parent.stat().st_uid == 0  # only the immediate parent
    assert not (target.parent / "hosts.tmp").exists()


async def test_chunked_copy_is_atomic(service: GuestService) -> None:
    data = os.urandom(3000)
    target = _base(service) / "f"
    await service.copy_file(_args(service, "f", file_size=3000, data=b"old" * 10))  # too short
    await service.copy_file(_args(service, "g", file_size=3, data=b"old"))
    first = _args(service, "f", file_size=3000, data=data[:1000])
    await service.copy_file(first)
    assert not target.exists()  # not visible until complete
    with pytest.raises(InvalidArgument, match="offset 2000 leaves a gap after byte 1000"):
        await service.copy_file(dataclasses.replace(first, offset=2000, data=data[2000:]))
    await service.copy_file(dataclasses.replace(first, offset=1000, data=data[1000:2000]))
    assert not target.exists()
    await service.copy_file(dataclasses.replace(first, offset=2000, data=data[2000:]))
    assert target.read_bytes() == data


async def test_copy_replaces_existing_file(service: GuestService) -> None:
    await service.copy_file(_args(service, "r", file_size=3, data=b"one"))
    old_inode = (_base(service) / "r").stat().st_ino
    await service.copy_file(_args(service, "r", file_size=3, data=b"two"))
    target = _base(service) / "r"
    assert target.read_bytes() == b"two"
    assert target.stat().st_ino != old_inode  # renamed into place, not rewritten


async def test_copy_empty_file(service: GuestService) -> None:
    await service.copy_file(_args(service, "empty"))
    assert (_base(service) / "empty").read_bytes() == b""


async def test_copy_directory_and_symlink(service: GuestService) -> None:
    await service.copy_file(_args(service, "d", file_mode=stat.S_IFDIR | 0o711, uid=5, gid=6))
    d = _base(service) / "d"
    assert d.is_dir()
    assert stat.S_IMODE(d.stat().st_mode) == 0o711
    assert (d.stat().st_uid, d.stat().st_gid) == (5, 6)
    await service.copy_file(_args(service, "d", file_mode=stat.S_IFDIR | 0o700))  # again: fine
    await service.copy_file(_args(service, "d/link", file_mode=stat.S_IFLNK | 0o777, data=b"../x"))
    assert os.readlink(d / "link") == "../x"
    await service.copy_file(_args(service, "d/link", file_mode=stat.S_IFLNK | 0o777, data=b"y"))
    assert os.readlink(d / "link") == "y"


@pytest.mark.parametrize(
    ("path", "error", "message"),
    [
        ("/etc/passwd", PermissionDenied, "only paths below"),
        ("relative/file", InvalidArgument, "path must be absolute"),
        ("{base}/../../escape", PermissionDenied, "'..' is not allowed"),
        ("{base}", PermissionDenied, "only paths below"),
        ("{run}/shared/containersX/f", PermissionDenied, "only paths below"),
    ],
)
async def test_copy_refuses_paths_outside(
    service: GuestService, path: str, error: type[Exception], message: str
) -> None:
    path = path.format(base=_base(service), run=service.config.paths.run_dir)
    with pytest.raises(error, match=message):
        await service.copy_file(_args(service, "x", path=path, file_size=1, data=b"x"))


async def test_copy_does_not_follow_symlinks(service: GuestService, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    base = _base(service)
    base.mkdir(parents=True)
    (base / "evil").symlink_to(outside)
    with pytest.raises(PermissionDenied, match="is a symlink or not a directory"):
        await service.copy_file(_args(service, "evil/x", file_size=1, data=b"x"))
    # a planted <name>.tmp symlink is not followed either
    (base / "f.tmp").symlink_to(outside / "victim")
    with pytest.raises(PermissionDenied, match=r"f\.tmp is a symlink"):
        await service.copy_file(_args(service, "f", file_size=1, data=b"x"))
    assert list(outside.iterdir()) == []


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        (dict(file_size=2, data=b"xyz"), "goes past file_size 2"),
        (dict(file_size=10, offset=5, data=b"x"), "no transfer in progress"),
        (dict(offset=-1), "offset: must be >= 0"),
        (dict(file_size=-5), "file_size: must be >= 0"),
        (dict(uid=-2), "uid: must be -1 or"),
        (dict(gid=1 << 32), "gid: must be -1 or"),
        (dict(file_mode=stat.S_IFIFO | 0o600), "unsupported file type"),
        (dict(file_mode=stat.S_IFLNK | 0o777, data=b""), "symlink with an empty target"),
    ],
)
async def test_copy_bad_requests(
    service: GuestService, kw: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=message):
        await service.copy_file(_args(service, "bad", **kw))


async def test_copy_refuses_planted_fifo_without_blocking(service: GuestService) -> None:
    """A FIFO at <name>.tmp used to block the worker thread forever (open without O_NONBLOCK);
    now it is refused by type, before it is opened, for a first chunk and a later one alike."""
    base = _base(service)
    base.mkdir(parents=True)
    os.mkfifo(base / "f.tmp")
    for offset in (0, 1):
        with pytest.raises(InvalidArgument, match=r"f\.tmp is a FIFO"):
            await service.copy_file(_args(service, "f", file_size=2, offset=offset, data=b"x"))
    os.mkfifo(base / "d")
    with pytest.raises(InvalidArgument, match="d is a FIFO"):
        await service.copy_file(_args(service, "d", file_mode=stat.S_IFDIR | 0o755))


async def test_many_planted_fifos_do_not_starve_an_innocent_copy(service: GuestService) -> None:
    """More calls than the filesystem pool has workers, each at a planted FIFO, then a normal
    copy: all answer (the FIFO ones with INVALID_ARGUMENT)."""
    base = _base(service)
    base.mkdir(parents=True)
    calls = []
    for i in range(3 * service.fs.workers):
        os.mkfifo(base / f"p{i}.tmp")
        calls.append(service.copy_file(_args(service, f"p{i}", file_size=1, data=b"x")))
    results = await asyncio.gather(*calls, return_exceptions=True)
    assert all(isinstance(r, InvalidArgument) for r in results), results
    await service.copy_file(_args(service, "innocent", file_size=1, data=b"x"))
    assert (base / "innocent").read_bytes() == b"x"


async def test_copy_directory_mode_lands_on_the_directory_not_a_link(
    service: GuestService, tmp_path: Path
) -> None:
    """The directory branch sets mode and owner on the opened directory: an existing symlink at
    the name is refused and its target keeps its mode."""
    outside = tmp_path / "victim"
    outside.write_text("x")
    outside.chmod(0o600)
    base = _base(service)
    base.mkdir(parents=True)
    (base / "d").symlink_to(outside)
    with pytest.raises(PermissionDenied, match="d is a symlink"):
        await service.copy_file(_args(service, "d", file_mode=stat.S_IFDIR | 0o777))
    assert stat.S_IMODE(outside.stat().st_mode) == 0o600


def test_guest_details(service: GuestService, tmp_path: Path) -> None:
    memory = tmp_path / "sys/devices/system/memory"
    details = service.guest_details(mem_block_size=True, mem_hotplug_probe=True)
    assert details.mem_block_size_bytes == 0  # no sysfs file: 0, as Kata
    assert details.support_mem_hotplug_probe is False
    memory.mkdir(parents=True)
    (memory / "block_size_bytes").write_text("8000000\n")
    (memory / "probe").write_text("")
    details = service.guest_details(mem_block_size=True, mem_hotplug_probe=True)
    assert details.mem_block_size_bytes == 0x8000000
    assert details.support_mem_hotplug_probe is True
    assert (
        service.guest_details(mem_block_size=False, mem_hotplug_probe=False).mem_block_size_bytes
        == 0
    )
    assert details.agent.version == "0.1.0"
    assert details.agent.init_daemon is False
    (memory / "block_size_bytes").write_text("zz\n")
    with pytest.raises(Internal, match="block_size_bytes"):
        service.guest_details(mem_block_size=True, mem_hotplug_probe=False)


def test_set_date_time(service: GuestService) -> None:
    seen: list[float] = []
    svc = dataclasses.replace(service, set_clock=seen.append)
    svc.set_date_time(1_700_000_000, 250_000)
    assert seen == [1_700_000_000.25]
    with pytest.raises(InvalidArgument, match="microseconds"):
        svc.set_date_time(1, 1_000_000)
    with pytest.raises(InvalidArgument, match="seconds must be >= 0"):
        svc.set_date_time(-1, 0)

    def refuse(_: float) -> None:
        raise PermissionError(1, "Operation not permitted")

    with pytest.raises(Internal, match=r"Operation not permitted \(EPERM\)"):
        dataclasses.replace(service, set_clock=refuse).set_date_time(5, 0)


async def test_reseed_random(service: GuestService) -> None:
    with pytest.raises(InvalidArgument, match="data is empty"):
        await service.reseed_random(b"")
    service.random_device.write_bytes(b"")
    await service.reseed_random(b"entropy!")
    assert service.random_device.read_bytes() == b"entropy!"
    with pytest.raises(Internal, match="No such file"):
        await dataclasses.replace(service, random_device=Path("/nonexistent/random")).reseed_random(
            b"x"
        )


def test_metrics_names_and_format(tmp_path: Path) -> None:
    text = MetricsCollector().collect()
    for name in (
        "kata_agent_scrape_count 1",
        "kata_agent_threads",
        "kata_agent_total_time",
        "kata_agent_total_vm",
        "kata_agent_total_rss",
        'kata_agent_proc_status{item="VmRSS"}',
        'kata_agent_proc_stat{item="utime"}',
        'kata_guest_load{item="load1"}',
        'kata_guest_tasks{item="total"}',
        'kata_guest_cpu_time{cpu="total",item="user"}',
        'kata_guest_vm_stat{item="nr_free_pages"}',
        'kata_guest_netdev_stat{interface="lo",item="recv_bytes"}',
        'kata_guest_meminfo{item="MemTotal"}',
        "# TYPE kata_guest_meminfo gauge",
    ):
        assert name in text, name
    for line in text.splitlines():
        if not line.startswith("#"):
            float(line.rsplit(" ", 1)[1])  # every sample has a number


def test_metrics_on_a_partial_proc(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    (proc / "self").mkdir(parents=True)
    (proc / "loadavg").write_text("0.50 0.25 0.10 2/345 999\n")
    (proc / "meminfo").write_text("MemTotal:  1000 kB\nHugePages_Total: 0\n")
    collector = MetricsCollector(proc)
    text = collector.collect()
    assert 'kata_guest_load{item="load1"} 0.5' in text
    assert 'kata_guest_tasks{item="running"} 2' in text
    assert 'kata_guest_meminfo{item="MemTotal"} 1024000' in text
    assert 'kata_guest_meminfo{item="HugePages_Total"} 0' in text
    assert "kata_agent_threads" not in text  # /proc/self/stat missing: skipped, no failure
    assert "kata_agent_scrape_count 2" in collector.collect()
