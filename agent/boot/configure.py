"""BootArgs -> AgentConfig: ``kata-agent``'s flags over the kernel command line, the environment
and a TOML file (``agent.config`` has the rules and the parsers).

A bad value prints one line naming the option and gives exit status 2; ``--version`` prints the
version and gives 0; ``--help`` and a malformed flag end the process as argparse does.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from agent import API_VERSION, __version__
from agent import config as cfg
from agent.boot.args import BootArgs


def _abs_path(option: str, value: object) -> Path:
    path = Path(str(value))
    if not path.is_absolute():
        raise cfg.ConfigError(option, value, "expected an absolute path")
    return path


#: flag dest -> (option name shown in errors, target in AgentConfig, parser)
FLAG_TARGETS: dict[str, tuple[str, tuple[str, ...], cfg.Parser]] = {
    "server_addr": ("--server-addr", ("server", "server_addr"), cfg.parse_server_addr),
    "grpc_addr": ("--grpc-addr", ("server", "grpc_addr"), cfg.parse_grpc_addr),
    "idle_frame_timeout": (
        "--idle-frame-timeout",
        ("server", "idle_frame_timeout"),
        cfg.parse_seconds,
    ),
    "frame_memory_limit": ("--frame-memory-limit", ("server", "frame_memory"), cfg.parse_bytes),
    "max_connections": ("--max-connections", ("server", "max_connections"), cfg.parse_positive),
    "log_level": ("--log-level", ("log", "level"), cfg.parse_log_level),
    "log_vport": ("--log-vport", ("log", "vport"), cfg.parse_port),
    "hotplug_timeout": ("--hotplug-timeout", ("timeouts", "hotplug"), cfg.parse_seconds),
    "container_pipe_size": ("--container-pipe-size", ("container_pipe_size",), cfg.parse_uint),
    "debug_console_vport": (
        "--debug-console-vport",
        ("debug_console", "vport"),
        cfg.parse_port,
    ),
    "preload_areas": ("--preload-areas", ("preload_areas",), cfg.parse_preload_areas),
    "run_dir": ("--run-dir", ("paths", "run_dir"), _abs_path),
    "sandbox_ns_dir": ("--sandbox-ns-dir", ("paths", "sandbox_ns_dir"), _abs_path),
    "policy_file": ("--policy-file", ("paths", "policy_file"), _abs_path),
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="kata-agent",
        description="The Kata Containers in-guest agent (ttrpc server).",
        formatter_class=_help_formatter,
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
    p.add_argument(
        "--idle-frame-timeout", help="close a connection idle inside a frame this long (30 s)"
    )
    p.add_argument(
        "--frame-memory-limit", help="memory for partial frames of all connections (16M)"
    )
    p.add_argument("--max-connections", help="refuse connections beyond this many (128)")
    p.add_argument("--log-level", help="trace, debug, info, warn, error or critical")
    p.add_argument("--log-vport", help="send logs to the first connection on this vsock port")
    p.add_argument("--hotplug-timeout", help="seconds to wait for a hot-plugged device")
    p.add_argument("--container-pipe-size", help="F_SETPIPE_SZ for container stdio pipes")
    p.add_argument(
        "--debug-console", action="store_true", default=None, help="start a debug console"
    )
    p.add_argument("--debug-console-vport", help="serve the debug console on this vsock port")
    p.add_argument("--trace", action="store_true", default=None, help="enable tracing")
    p.add_argument(
        "--preload-areas",
        help="AgentService areas to import in the background once serving: auto (a guest's "
        "agent: containers,guest), none, all, or a list of policy, network, containers, guest, "
        "storage",
    )
    p.add_argument("--run-dir", help="state root (default /run/kata-containers)")
    p.add_argument(
        "--sandbox-ns-dir", help="persistent namespaces dir (default /var/run/sandbox-ns)"
    )
    p.add_argument("--policy-file", help="agent policy (default /etc/kata-opa/default-policy.rego)")
    return p


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with the width computed here, as argparse computes it ($COLUMNS, else
    the terminal's, else 80; minus 2): without a width it imports shutil, which imports bz2 and
    lzma, and an agent would keep them in memory (idle RSS)."""
    try:
        columns = int(os.environ["COLUMNS"])
    except (KeyError, ValueError):
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return argparse.HelpFormatter(prog, width=columns - 2)


def overrides_from_args(ns: argparse.Namespace) -> dict[tuple[str, ...], Any]:
    values: dict[tuple[str, ...], Any] = {}
    for dest, (option, target, parse) in FLAG_TARGETS.items():
        raw = getattr(ns, dest)
        if raw is not None:
            values[target] = parse(option, raw)
    if ns.debug_console:
        values[("debug_console", "enabled")] = True
    if ns.trace:
        values[("trace",)] = True
    return values


def configure(boot: BootArgs) -> cfg.AgentConfig | int:
    """The configuration, or an exit status (``--version``, a bad value; module docstring)."""
    ns = build_parser().parse_args(list(boot.argv))
    if ns.version:
        print(f"kata-agent {__version__} (API {API_VERSION}, Python {sys.version.split()[0]})")
        return 0
    try:
        config, _ignored = cfg.load(
            cmdline=None if ns.config is not None else boot.cmdline,
            env=boot.env,
            read_file=lambda p: p.read_text(),
            config_file=ns.config,
            overrides=overrides_from_args(ns),
        )
    except cfg.ConfigError as err:
        print(f"kata-agent: {err}", file=sys.stderr)
        return 2
    return config
