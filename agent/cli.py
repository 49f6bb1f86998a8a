"""``kata-agent``: command-line flags -> configuration overrides -> ``agent.app.run``.

Flags override the TOML file / kernel command line / environment (see ``agent.config``). A bad
value prints one line naming the option and exits with status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from agent import API_VERSION, __version__
from agent import config as cfg

# flag dest -> (option name shown in errors, target in AgentConfig, parser)
_FLAG_TARGETS: dict[str, tuple[str, tuple[str, ...], cfg.Parser]] = {
    "server_addr": ("--server-addr", ("server", "server_addr"), cfg.parse_server_addr),
    "grpc_addr": ("--grpc-addr", ("server", "grpc_addr"), cfg.parse_grpc_addr),
    "log_level": ("--log-level", ("log", "level"), cfg.parse_log_level),
    "log_vport": ("--log-vport", ("log", "vport"), cfg.parse_port),
    "hotplug_timeout": ("--hotplug-timeout", ("timeouts", "hotplug"), cfg.parse_seconds),
    "container_pipe_size": ("--container-pipe-size", ("container_pipe_size",), cfg.parse_uint),
    "debug_console_vport": (
        "--debug-console-vport",
        ("debug_console", "vport"),
        cfg.parse_port,
    ),
    "run_dir": ("--run-dir", ("paths", "run_dir"), lambda o, v: _abs_path(o, v)),
    "sandbox_ns_dir": (
        "--sandbox-ns-dir",
        ("paths", "sandbox_ns_dir"),
        lambda o, v: _abs_path(o, v),
    ),
}


def _abs_path(option: str, value: object) -> Path:
    path = Path(str(value))
    if not path.is_absolute():
        raise cfg.ConfigError(option, value, "expected an absolute path")
    return path


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kata-agent",
        description="The Kata Containers in-guest agent (ttrpc server).",
    )
    p.add_argument("--version", action="store_true", help="print version information and exit")
    p.add_argument(
        "-c",
        "--config",
        type=Path,
        help="TOML configuration file (replaces the kernel command line)",
    )
    p.add_argument(
        "--cmdline-file",
        type=Path,
        default=Path("/proc/cmdline"),
        help="where to read agent.* options from (default /proc/cmdline); 'none' to skip",
    )
    p.add_argument(
        "--server-addr",
        help="listen address: vsock://CID:PORT, unix:///path, unix://@name, serial:///dev/...",
    )
    p.add_argument("--grpc-addr", help="also serve gRPC on unix:///path or vsock://CID:PORT")
    p.add_argument("--log-level", help="trace, debug, info, warn, error or critical")
    p.add_argument("--log-vport", help="send logs to the first connection on this vsock port")
    p.add_argument("--hotplug-timeout", help="seconds to wait for a hot-plugged device")
    p.add_argument("--container-pipe-size", help="F_SETPIPE_SZ for container stdio pipes")
    p.add_argument(
        "--debug-console", action="store_true", default=None, help="start a debug console"
    )
    p.add_argument("--debug-console-vport", help="serve the debug console on this vsock port")
    p.add_argument("--trace", action="store_true", default=None, help="enable tracing")
    p.add_argument("--run-dir", help="state root (default /run/kata-containers)")
    p.add_argument(
        "--sandbox-ns-dir", help="persistent namespaces dir (default /var/run/sandbox-ns)"
    )
    return p


def overrides_from_args(ns: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    values: dict[tuple[str, ...], Any] = {}
    for dest, (option, target, parse) in _FLAG_TARGETS.items():
        raw = getattr(ns, dest)
        if raw is not None:
            values[target] = parse(option, raw)
    if ns.debug_console:
        values[("debug_console", "enabled")] = True
    if ns.trace:
        values[("trace",)] = True
    return values


def main(argv: list[str] | None = None) -> int:
    ns = build_parser().parse_args(argv)
    if ns.version:
        print(f"kata-agent {__version__} (API {API_VERSION}, Python {sys.version.split()[0]})")
        return 0
    from agent import app

    cmdline_file = None if str(ns.cmdline_file) == "none" else ns.cmdline_file
    try:
        config, _ignored = app.load_config(
            config_file=ns.config,
            cmdline_file=cmdline_file,
            overrides=overrides_from_args(ns),
        )
    except cfg.ConfigError as err:
        print(f"kata-agent: {err}", file=sys.stderr)
        return 2
    return app.run(config)


if __name__ == "__main__":
    sys.exit(main())
