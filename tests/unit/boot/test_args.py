"""agent.boot.args: the BootArgs every start-up step reads, parsed once; its early facts agree with
the full configuration (or start-up would bind the wrong address and drop it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent import config as cfg
from agent.boot import args
from agent.boot.args import BootArgs, cmdline_words

PORT = "serial:///dev/virtio-ports/agent.channel.0"


def parse(argv: list[str], env: dict[str, str], cmdline: str) -> BootArgs:
    return args.parse(argv, env, cmdline_words(cmdline))


def test_words_are_split_once_and_keep_bare_flags_apart() -> None:
    assert cmdline_words(" quiet  agent.log=debug agent.trace= a=b=c\n") == (
        ("quiet", None),
        ("agent.log", "debug"),
        ("agent.trace", ""),
        ("a", "b=c"),
    )


@pytest.mark.parametrize(
    ("argv", "env", "cmdline", "expected"),
    [
        ([], {}, "", "vsock://-1:1024"),
        ([], {}, "quiet agent.server_addr=vsock://-1:2000", "vsock://-1:2000"),
        (
            [],
            {"KATA_AGENT_SERVER_ADDR": "unix:///run/e.sock"},
            "agent.server_addr=vsock://3:1",
            "unix:///run/e.sock",
        ),
        (["--server-addr", "unix://@a"], {"KATA_AGENT_SERVER_ADDR": "unix:///e"}, "", "unix://@a"),
        (["--server-addr=unix:///f.sock"], {}, "", "unix:///f.sock"),
        (["--server-addr", PORT], {}, "", PORT),
        ([], {}, f"agent.server_addr={PORT} agent.server_addr={PORT}x", PORT + "x"),
        (["--config", "/etc/a.toml"], {}, "", None),
        (["-c", "/etc/a.toml"], {}, "", None),
        (["-c/etc/a.toml"], {}, "", None),
        (["--help"], {}, "", None),
        (["--version"], {}, "", None),
        ([], {}, "agent.config_file=/etc/a.toml", None),
        ([], {"KATA_AGENT_SERVER_ADDR": "unix:///e"}, "agent.config_file=/a.toml", "unix:///e"),
    ],
)
def test_the_listen_address_follows_the_configurations_precedence(
    tmp_path: Path, argv: list[str], env: dict[str, str], cmdline: str, expected: str | None
) -> None:
    cmdline_file = tmp_path / "cmdline"
    cmdline_file.write_text(cmdline + "\n")
    boot = args.read([*argv, "--cmdline-file", str(cmdline_file)], env)
    assert boot.server_addr == expected
    if expected is not None:  # the full parse must agree, or the early listener is dropped
        flag = argv[-1].partition("=")[2] or argv[-1] if argv else None
        conf, _ = cfg.load(
            cmdline=boot.cmdline,
            env=boot.env,
            read_file=lambda p: "",
            overrides={("server", "server_addr"): flag} if flag else None,
        )
        assert conf.server.server_addr == expected


def test_without_a_command_line() -> None:
    assert args.read(["--cmdline-file", "none"], {}).cmdline is None
    assert args.read(["--cmdline-file", "/nonexistent"], {}).server_addr == "vsock://-1:1024"
    assert args.read(["--config", "/etc/a.toml"], {}).cmdline is None  # the file replaces it


def test_only_the_agents_environment_is_kept() -> None:
    boot = parse([], {"PATH": "/bin", "KATA_AGENT_TRACING": "1"}, "")
    assert boot.env == {"KATA_AGENT_TRACING": "1"}


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
def test_the_serial_port_pid1_opens_first(
    cmdline: str, env: dict[str, str], expected: str | None
) -> None:
    assert parse([], env, cmdline).serial_port == expected


@pytest.mark.parametrize(
    ("cmdline", "v2", "switch"),
    [
        ("console=ttyS0 quiet", True, True),
        ("systemd.unified_cgroup_hierarchy=0", False, True),
        ("systemd.unified_cgroup_hierarchy=false agent.switchroot=0", False, False),
        ("systemd.unified_cgroup_hierarchy=0 cgroup_no_v1=all", True, True),
        ("systemd.unified_cgroup_hierarchy=1", True, True),
        ("agent.switchroot=1", True, True),
        ("agent.switchroot=off", True, False),
    ],
)
def test_pid1s_choices(cmdline: str, v2: bool, switch: bool) -> None:
    boot = parse([], {}, cmdline)
    assert (boot.cgroup_v2, boot.switch_root) == (v2, switch)


def test_the_log_level_as_requested() -> None:
    assert parse([], {}, "agent.log=debug").log_level == "debug"
    assert parse([], {"KATA_AGENT_LOG_LEVEL": "warn"}, "agent.log=debug").log_level == "warn"
    assert parse(["--log-level", "trace"], {}, "agent.log=debug").log_level == "trace"
    assert parse([], {}, "quiet").log_level is None


def test_frozen_and_equal_by_value() -> None:
    boot = parse([], {}, "agent.log=debug")
    assert boot == parse([], {}, "agent.log=debug")
    assert boot != parse([], {}, "agent.log=info")
    with pytest.raises(AttributeError, match="frozen"):
        boot.server_addr = "unix:///x"
    assert "server_addr='vsock://-1:1024'" in repr(boot)
