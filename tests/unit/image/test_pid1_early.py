"""agent/pid1_early.py on a host: which listen addresses take the fast path; no action unless
PID 1."""

from __future__ import annotations

import pytest

from agent import pid1_early

PORT = "serial:///dev/virtio-ports/agent.channel.0"


@pytest.mark.parametrize(
    ("cmdline", "env", "expected"),
    [
        (f"quiet agent.server_addr={PORT}", {}, "agent.channel.0"),
        # the environment comes before the command line, as in agent.config
        (f"agent.server_addr={PORT}", {"KATA_AGENT_SERVER_ADDR": "vsock://-1:1024"}, None),
        ("agent.server_addr=vsock://-1:1024", {"KATA_AGENT_SERVER_ADDR": PORT}, "agent.channel.0"),
        ("quiet", {}, None),  # the default address is vsock
        (f"agent.server_addr={PORT} agent.server_addr={PORT}x", {}, "agent.channel.0x"),
        ("agent.server_addr=unix:///run/a.sock", {}, None),
        (f"agent.server_addr={PORT} agent.config_file=/etc/agent.toml", {}, None),
        ("agent.server_addr=serial:///dev/ttyS1", {}, None),  # not a named virtio port
        ("agent.server_addr=serial:///dev/virtio-ports/", {}, None),
        ("agent.server_addr=serial:///dev/virtio-ports/a/b", {}, None),
    ],
)
def test_fast_path_only_for_a_named_virtio_serial_port(
    cmdline: str, env: dict[str, str], expected: str | None
) -> None:
    assert pid1_early.serial_port_name(cmdline, env) == expected


def test_switch_root_unless_disabled() -> None:
    assert pid1_early._switch_root_wanted("quiet")
    assert pid1_early._switch_root_wanted("agent.switchroot=1")
    assert not pid1_early._switch_root_wanted("agent.switchroot=0")
    assert not pid1_early._switch_root_wanted("agent.switchroot=off")


def test_not_pid1_takes_the_ordinary_path(monkeypatch: pytest.MonkeyPatch) -> None:
    called: list[str] = []
    from agent import pid1

    def fake_main() -> int:
        called.append("pid1.main")
        return 0

    monkeypatch.setattr(pid1, "main", fake_main)
    assert pid1_early.main() == 0
    assert called == ["pid1.main"]
