"""agent.config: kernel command line, environment, TOML, flags, precedence, errors."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent import config as cfg
from agent.boot.args import cmdline_words
from agent.config import AgentConfig, ConfigError

REPO = Path(__file__).resolve().parents[3]


def load(
    cmdline: str | None = None,
    env: dict[str, str] | None = None,
    files: dict[str, str] | None = None,
    config_file: str | None = None,
    overrides: dict[tuple[str, ...], object] | None = None,
) -> AgentConfig:
    files = files or {}

    def read(p: Path) -> str:
        if str(p) not in files:
            raise FileNotFoundError(2, "No such file or directory", str(p))
        return files[str(p)]

    conf, _ = cfg.load(
        cmdline=None if cmdline is None else cmdline_words(cmdline),
        env=env or {},
        read_file=read,
        config_file=Path(config_file) if config_file else None,
        overrides=overrides,
    )
    return conf


def test_defaults_are_katas() -> None:
    c = cfg.defaults()
    assert c.server.server_addr == "vsock://-1:1024"
    assert c.server.grpc_addr is None
    assert c.log.level == "info"
    assert c.log.vport == 0
    assert c.debug_console == cfg.DebugConsoleConfig(enabled=False, vport=0)
    assert c.timeouts.hotplug == 3
    assert c.timeouts.cdh_api == 50
    assert c.timeouts.image_pull == 1200
    assert c.timeouts.cdi == 100
    assert c.timeouts.launch_process == 6
    assert c.container_pipe_size == 0
    assert c.paths.run_dir == Path("/run/kata-containers")
    assert c.paths.sandbox_ns_dir == Path("/var/run/sandbox-ns")
    assert c.paths.shared_containers_dir == Path("/run/kata-containers/shared/containers")
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.trace = True  # type: ignore[misc]


@pytest.mark.parametrize(
    ("cmdline", "attr", "expected"),
    [
        ("agent.server_addr=unix:///run/a.sock", ("server", "server_addr"), "unix:///run/a.sock"),
        ("agent.server_addr=vsock://3:1025", ("server", "server_addr"), "vsock://3:1025"),
        ("agent.log=debug", ("log", "level"), "debug"),
        ("agent.log=warning", ("log", "level"), "warn"),
        ("agent.log=fatal", ("log", "level"), "critical"),
        ("agent.log=TRACE", ("log", "level"), "trace"),
        ("agent.log_vport=1025", ("log", "vport"), 1025),
        ("agent.debug_console", ("debug_console", "enabled"), True),
        ("agent.debug_console=false", ("debug_console", "enabled"), False),
        ("agent.debug_console_vport=1026", ("debug_console", "vport"), 1026),
        ("agent.hotplug_timeout=10", ("timeouts", "hotplug"), 10.0),
        ("agent.container_pipe_size=65536", ("container_pipe_size",), 65536),
        ("agent.trace", ("trace",), True),
        ("agent.trace=true", ("trace",), True),
        ("agent.trace=0", ("trace",), False),
        ("agent.trace=2", ("trace",), True),
        ("agent.devmode", ("dev_mode",), True),
        ("agent.cdh_api_timeout=5", ("timeouts", "cdh_api"), 5.0),
        ("agent.image_pull_timeout=60", ("timeouts", "image_pull"), 60.0),
        ("agent.cdi_timeout=7", ("timeouts", "cdi"), 7.0),
        ("agent.launch_process_timeout=9", ("timeouts", "launch_process"), 9.0),
        ("agent.passfd_listener_port=1027", ("passfd_listener_port",), 1027),
        ("agent.visible_cdi_devices=true", ("visible_cdi_devices",), True),
        ("agent.guest_components_procs=none", ("guest_components", "procs"), "none"),
        ("agent.guest_components_rest_api=all", ("guest_components", "rest_api"), "all"),
        (
            "agent.secure_storage_integrity=false",
            ("guest_components", "secure_storage_integrity"),
            False,
        ),
        ("agent.https_proxy=http://p:3128", ("guest_components", "https_proxy"), "http://p:3128"),
        ("systemd.unified_cgroup_hierarchy=1", ("unified_cgroup_hierarchy",), True),
        ("cgroup_no_v1=all", ("unified_cgroup_hierarchy",), True),
        ("cgroup_no_v1=memory", ("unified_cgroup_hierarchy",), False),
        ("agent.idle_frame_timeout=5", ("server", "idle_frame_timeout"), 5.0),
        ("agent.frame_memory_limit=8M", ("server", "frame_memory"), 8 << 20),
        ("agent.frame_memory_limit=512KiB", ("server", "frame_memory"), 512 << 10),
        ("agent.frame_memory_limit=1000000", ("server", "frame_memory"), 1000000),
        ("agent.max_connections=16", ("server", "max_connections"), 16),
        ("agent.preload_areas=auto", ("preload_areas",), None),
        ("agent.preload_areas=none", ("preload_areas",), ()),
        ("agent.preload_areas=all", ("preload_areas",), cfg.AREA_NAMES),
        (
            "agent.preload_areas=guest,containers,guest",
            ("preload_areas",),
            ("guest", "containers"),
        ),
    ],
)
def test_cmdline_options(cmdline: str, attr: tuple[str, ...], expected: object) -> None:
    c = load(f"console=ttyS0 quiet {cmdline} panic=-1")
    value: object = c
    for part in attr:
        value = getattr(value, part)
    assert value == expected


@pytest.mark.parametrize(
    ("cmdline", "message"),
    [
        (
            "agent.hotplug_timeout=abc",
            'agent.hotplug_timeout: invalid value "abc": expected a whole number of seconds > 0',
        ),
        ("agent.hotplug_timeout=0", 'agent.hotplug_timeout: invalid value "0"'),
        ("agent.log=loud", 'agent.log: invalid value "loud": expected one of trace, debug'),
        ("agent.log_vport=-1", 'agent.log_vport: invalid value "-1": expected an integer >= 0'),
        (
            "agent.server_addr=tcp://1.2.3.4:5",
            'agent.server_addr: invalid value "tcp://1.2.3.4:5": unknown scheme "tcp"',
        ),
        ("agent.server_addr=vsock://x:1", "vsock CID and port must be integers"),
        ("agent.server_addr=vsock://-1", "needs CID:PORT"),
        ("agent.server_addr=unix://relative", "must be absolute"),
        (
            "agent.trace=maybe",
            'agent.trace: invalid value "maybe": expected true, false or an integer',
        ),
        ("agent.guest_components_procs=all", "expected one of none, attestation-agent"),
        (
            "agent.preload_areas=containers,disk",
            "agent.preload_areas: invalid value \"containers,disk\": unknown area 'disk': "
            "expected auto, none, all or a comma-separated list of policy, network, containers, "
            "guest, storage",
        ),
        ("agent.preload_areas=containers,", "unknown area ''"),
        (
            "agent.container_pipe_size",
            'agent.container_pipe_size: invalid value "": expected a value',
        ),
        ("agent.frame_memory_limit=lots", "expected a size in bytes (e.g. 16M)"),
        ("agent.frame_memory_limit=0", "expected a size in bytes > 0"),
        ("agent.max_connections=0", 'agent.max_connections: invalid value "0": expected an'),
        ("agent.idle_frame_timeout=-3", "agent.idle_frame_timeout: invalid value"),
    ],
)
def test_cmdline_errors_name_the_option(cmdline: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(cmdline)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_unknown_agent_options_are_ignored_and_reported() -> None:
    result = cfg.parse_cmdline(cmdline_words("agent.frobnicate=1 agent.log=debug foo=bar"))
    assert result.ignored == ("agent.frobnicate=1",)
    assert result.values == {("log", "level"): "debug"}


def test_config_file_on_cmdline_replaces_the_cmdline() -> None:
    files = {"/etc/agent.toml": 'server_addr = "unix:///run/f.sock"\nlog_level = "warn"\n'}
    c = load("agent.log=debug agent.config_file=/etc/agent.toml agent.trace", files=files)
    assert c.server.server_addr == "unix:///run/f.sock"
    assert c.log.level == "warn"  # the file is the whole config: agent.log=debug is dropped
    assert c.trace is False  # parsing stopped at agent.config_file
    assert c.config_file == Path("/etc/agent.toml")


def test_toml_keys_tables_and_durations() -> None:
    text = """
    debug_console = true
    dev_mode = true
    log_level = "debug"
    hotplug_timeout = { secs = 5, nanos = 500000000 }
    cdh_api_timeout = 7
    container_pipe_size = 4096
    tracing = true
    grpc_addr = "unix:///run/g.sock"
    preload_areas = ["network", "containers"]
    [paths]
    run_dir = "/tmp/r"
    sandbox_ns_dir = "/tmp/ns"
    """
    c = load(files={"/c.toml": text}, config_file="/c.toml")
    assert c.debug_console.enabled
    assert c.dev_mode
    assert c.trace
    assert c.timeouts.hotplug == 5.5
    assert c.timeouts.cdh_api == 7
    assert c.container_pipe_size == 4096
    assert c.server.grpc_addr == "unix:///run/g.sock"
    assert c.preload_areas == ("network", "containers")
    assert c.paths.run_dir == Path("/tmp/r")
    assert c.paths.sandbox_ns_dir == Path("/tmp/ns")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("nonsense = 1\n", "/c.toml: nonsense: invalid value 1: unknown setting"),
        ("[paths]\nfoo = 1\n", "/c.toml: paths.foo"),
        ("log_level = \n", "not valid TOML"),
        ("hotplug_timeout = -1\n", "hotplug_timeout: invalid value -1"),
        (
            '[paths]\nrun_dir = "relative"\n',
            'paths.run_dir: invalid value "relative": expected an absolute path',
        ),
    ],
)
def test_toml_errors(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(files={"/c.toml": text}, config_file="/c.toml")
    assert message in str(info.value)


def test_toml_connection_limits() -> None:
    values = cfg.parse_toml(
        'max_connections = 8\n[server]\nidle_frame_timeout = 2\nframe_memory_limit = "4M"\n'
    )
    assert values == {
        ("server", "max_connections"): 8,
        ("server", "idle_frame_timeout"): 2.0,
        ("server", "frame_memory"): 4 << 20,
    }


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match=r'config file: invalid value "/nope\.toml": No such'):
        load(config_file="/nope.toml")


def test_precedence_cmdline_env_flags() -> None:
    c = load(
        "agent.server_addr=vsock://-1:2000 agent.log=warn",
        env={"KATA_AGENT_SERVER_ADDR": "unix:///run/env.sock", "KATA_AGENT_TRACING": "true"},
    )
    assert c.server.server_addr == "unix:///run/env.sock"  # env beats cmdline
    assert c.log.level == "warn"
    assert c.trace is True
    c = load(
        "agent.server_addr=vsock://-1:2000",
        env={"KATA_AGENT_SERVER_ADDR": "unix:///run/env.sock", "KATA_AGENT_LOG_LEVEL": "error"},
        overrides={("server", "server_addr"): "unix:///run/flag.sock"},
    )
    assert c.server.server_addr == "unix:///run/flag.sock"  # flags beat everything
    assert c.log.level == "error"


def test_env_errors_name_the_variable() -> None:
    with pytest.raises(ConfigError, match='KATA_AGENT_LOG_LEVEL: invalid value "nope"'):
        load(env={"KATA_AGENT_LOG_LEVEL": "nope"})


@pytest.mark.parametrize(
    ("cmdline", "init_daemon", "expected"),
    [
        ("", True, cfg.GUEST_PRELOAD),  # the guest's init
        ("agent.server_addr=vsock://-1:1024", False, cfg.GUEST_PRELOAD),  # a guest's service
        ("agent.server_addr=serial:///dev/virtio-ports/ch", False, cfg.GUEST_PRELOAD),
        ("agent.server_addr=unix:///run/a.sock", False, ()),  # development, tests, benches
        ("agent.server_addr=unix:///run/a.sock agent.preload_areas=all", False, cfg.AREA_NAMES),
        ("agent.preload_areas=none", True, ()),
        ("agent.preload_areas=network", True, ("network",)),
    ],
)
def test_areas_to_preload(cmdline: str, init_daemon: bool, expected: tuple[str, ...]) -> None:
    """auto: an agent that serves a guest's channel (or is the guest's init) preloads what every
    pod start calls; one on a unix socket stays lazy. A setting wins either way."""
    assert cfg.areas_to_preload(load(cmdline), init_daemon=init_daemon) == expected


def test_with_values_is_pure() -> None:
    base = cfg.defaults()
    changed = cfg.with_values(base, {("paths", "run_dir"): Path("/x"), ("trace",): True})
    assert base.paths.run_dir == Path("/run/kata-containers")
    assert not base.trace
    assert changed.paths.run_dir == Path("/x")
    assert changed.trace
    assert changed.paths.sandbox_ns_dir == base.paths.sandbox_ns_dir


# -- the CLI ---------------------------------------------------------------------------------------


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent", "--cmdline-file", "none", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO), **(env or {})},
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--hotplug-timeout", "soon"],
            'kata-agent: --hotplug-timeout: invalid value "soon": expected a whole number',
        ),
        (
            ["--server-addr", "tcp://x"],
            'kata-agent: --server-addr: invalid value "tcp://x": unknown scheme "tcp"',
        ),
        (["--log-level", "verbose"], 'kata-agent: --log-level: invalid value "verbose"'),
        (["--max-connections", "none"], 'kata-agent: --max-connections: invalid value "none"'),
        (["--frame-memory-limit", "x"], 'kata-agent: --frame-memory-limit: invalid value "x"'),
        (["--idle-frame-timeout", "0"], 'kata-agent: --idle-frame-timeout: invalid value "0"'),
        (
            ["--preload-areas", "everything"],
            'kata-agent: --preload-areas: invalid value "everything": unknown area',
        ),
        (
            ["--run-dir", "relative/dir"],
            'kata-agent: --run-dir: invalid value "relative/dir": expected an absolute path',
        ),
        (
            ["--config", "/nonexistent.toml"],
            'kata-agent: config file: invalid value "/nonexistent.toml": No such file or directory',
        ),
    ],
)
def test_cli_bad_values_exit_2_with_one_line(args: list[str], message: str) -> None:
    done = _cli(*args)
    assert done.returncode == 2
    assert done.stderr.strip().startswith(message), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_cli_bad_env_exits_2() -> None:
    done = _cli(env={"KATA_AGENT_LOG_LEVEL": "shouty"})
    assert done.returncode == 2
    assert done.stderr.strip() == (
        'kata-agent: KATA_AGENT_LOG_LEVEL: invalid value "shouty": expected one of trace, debug, '
        "info, warn, error, critical"
    )


def test_cli_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.startswith("kata-agent 0.1.0 (API 0.0.1")


def test_cli_cmdline_file(tmp_path: Path) -> None:
    cmdline = tmp_path / "cmdline"
    cmdline.write_text("quiet agent.log=bogus\n")
    done = subprocess.run(
        [sys.executable, "-m", "agent", "--cmdline-file", str(cmdline)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
        env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)},
        check=False,
    )
    assert done.returncode == 2
    expected = 'kata-agent: agent.log: invalid value "bogus": expected one of trace, debug, '
    assert done.stderr.strip() == expected + "info, warn, error, critical"


def test_cli_bad_value_after_early_bind_leaves_no_socket(tmp_path: Path) -> None:
    sock = Path(f"/tmp/kagcli-{os.getpid()}.sock")
    done = _cli("--server-addr", f"unix://{sock}", "--log-level", "bogus")
    assert done.returncode == 2
    assert done.stderr.strip().startswith('kata-agent: --log-level: invalid value "bogus"')
    assert not sock.exists()
