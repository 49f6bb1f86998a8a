"""Guest-wide RPCs and configuration sources, through a real agent process."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.rpc.pb import agent_pb2, health_pb2
from agent.rpc.status import Code, RpcError
from tests.support.agent import AgentProcess, remove_workdir, start_agent

Factory = Callable[..., AgentProcess]


def _host_memory_facts() -> tuple[int, bool]:
    block = Path("/sys/devices/system/memory/block_size_bytes")
    size = int(block.read_text(), 16) if block.exists() else 0
    return size, Path("/sys/devices/system/memory/probe").exists()


async def test_get_guest_details(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        resp = await client.agent.GetGuestDetails(
            agent_pb2.GuestDetailsRequest(mem_block_size=True, mem_hotplug_probe=True), timeout=10
        )
    expected_block, expected_probe = _host_memory_facts()
    assert resp.mem_block_size_bytes == expected_block
    assert resp.support_mem_hotplug_probe == expected_probe
    details = resp.agent_details
    assert details.version == "0.1.0"
    assert details.init_daemon is False
    assert details.supports_seccomp is True  # libseccomp2 is installed here
    assert {"virtio-fs", "9p", "blk", "ephemeral"} <= set(details.storage_handlers)
    assert {"blk", "scsi", "vfio-pci"} <= set(details.device_handlers)


async def test_set_guest_date_time(agent_factory: Factory) -> None:
    agent = agent_factory(test_servicer=True)  # fake clock: the host's time is never touched
    async with await agent.client() as client:
        await client.agent.SetGuestDateTime(
            agent_pb2.SetGuestDateTimeRequest(Sec=1_700_000_000, Usec=5), timeout=10
        )
        with pytest.raises(RpcError) as info:
            await client.agent.SetGuestDateTime(
                agent_pb2.SetGuestDateTimeRequest(Sec=1, Usec=2_000_000), timeout=10
            )
    assert info.value.code == Code.INVALID_ARGUMENT
    assert "microseconds" in info.value.message
    clocks = [r["clock"] for r in agent.logs() if r.get("msg") == "fake clock set"]
    assert clocks == [pytest.approx(1_700_000_000.000005)]


async def test_reseed_random_dev(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        with pytest.raises(RpcError) as info:
            await client.agent.ReseedRandomDev(agent_pb2.ReseedRandomDevRequest(), timeout=10)
        assert info.value.code == Code.INVALID_ARGUMENT
        await client.agent.ReseedRandomDev(
            agent_pb2.ReseedRandomDevRequest(data=os.urandom(64)), timeout=10
        )


def _read(path: str) -> bytes:
    return Path(path).read_bytes()


async def test_copy_file_in_1mib_chunks_like_the_runtime(agent: AgentProcess) -> None:
    data = os.urandom((5 << 20) + 123)
    base = agent.run_dir / "shared" / "containers"
    path = f"{base}/c1-0123456789abcdef-resolv.conf"
    async with await agent.client() as client:
        for offset in range(0, len(data), 1 << 20):
            await client.agent.CopyFile(
                agent_pb2.CopyFileRequest(
                    path=path,
                    file_size=len(data),
                    file_mode=stat.S_IFREG | 0o644,
                    dir_mode=0o755,
                    uid=0,
                    gid=0,
                    offset=offset,
                    data=data[offset : offset + (1 << 20)],
                ),
                timeout=30,
            )
        assert _read(path) == data
        with pytest.raises(RpcError) as info:
            await client.agent.CopyFile(
                agent_pb2.CopyFileRequest(path="/etc/shadow", file_size=1, data=b"x"), timeout=10
            )
    assert info.value.code == Code.PERMISSION_DENIED
    assert f"only paths below {base}/" in info.value.message


async def test_get_metrics(agent: AgentProcess) -> None:
    async with await agent.client() as client:
        first = await client.agent.GetMetrics(agent_pb2.GetMetricsRequest(), timeout=30)
        second = await client.agent.GetMetrics(agent_pb2.GetMetricsRequest(), timeout=30)
    assert "kata_agent_scrape_count 1" in first.metrics
    assert "kata_agent_scrape_count 2" in second.metrics
    assert "kata_agent_total_rss" in first.metrics
    assert 'kata_guest_meminfo{item="MemTotal"}' in first.metrics


async def test_mem_agent_answers_as_kata_with_its_mem_agent_disabled(agent: AgentProcess) -> None:
    """MemAgentMemcgSet / MemAgentCompactSet: INTERNAL "mem-agent is disabled", as the Kata agent
    answers without agent.mem_agent_enable; the agent goes on serving."""
    async with await agent.client() as client:
        for call, req in (
            (client.agent.MemAgentMemcgSet, agent_pb2.MemAgentMemcgConfig(swap=True)),
            (client.agent.MemAgentCompactSet, agent_pb2.MemAgentCompactConfig(period_secs=60)),
        ):
            with pytest.raises(RpcError) as info:
                await call(req, timeout=30)
            assert info.value.code == Code.INTERNAL
            assert info.value.message == "mem-agent is disabled"
        await client.health.Check(health_pb2.CheckRequest(), timeout=10)


async def test_config_from_toml_file_and_env(tmp_path: Path) -> None:
    """No flags: the listen address, state root and log level come from the TOML file, then from
    the KATA_AGENT_* environment."""
    sock_dir = Path(tempfile.mkdtemp(prefix="kagc-", dir="/tmp"))
    run_dir = tmp_path / "state"
    toml = tmp_path / "agent.toml"
    toml.write_text(
        f'server_addr = "unix://{sock_dir}/from-toml.sock"\nlog_level = "debug"\n'
        f'[paths]\nrun_dir = "{run_dir}"\nsandbox_ns_dir = "{tmp_path}/ns"\n'
    )
    agents = []
    try:
        agent = start_agent(
            address=f"unix://{sock_dir}/from-toml.sock", args=["--config", str(toml)], bare=True
        )
        agents.append(agent)
        async with await agent.client() as client:
            await client.agent.CopyFile(
                agent_pb2.CopyFileRequest(
                    path=f"{run_dir}/shared/containers/f", file_size=2, data=b"ok"
                ),
                timeout=10,
            )
        assert _read(f"{run_dir}/shared/containers/f") == b"ok"
        assert any(r.get("level") == "DEBG" for r in agent.logs())

        agent = start_agent(
            address=f"unix://{sock_dir}/from-env.sock",
            args=["--config", str(toml)],
            env={
                "KATA_AGENT_SERVER_ADDR": f"unix://{sock_dir}/from-env.sock",
                "KATA_AGENT_LOG_LEVEL": "warn",
            },
            bare=True,
        )
        agents.append(agent)
        async with await agent.client() as client:
            await client.health.Check(health_pb2.CheckRequest(), timeout=10)
        assert not [r for r in agent.logs() if r.get("level") in ("INFO", "DEBG")]
    finally:
        for agent in agents:
            agent.stop()
            remove_workdir(agent.workdir)
        shutil.rmtree(sock_dir, ignore_errors=True)
