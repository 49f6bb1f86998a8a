"""``kata-agent``: command-line flags -> configuration overrides -> ``agent.app.run``.

Flags override the TOML file / kernel command line / environment (see ``agent.config``). A bad
value prints one line naming the option and exits with status 2.

Start-up phase 0 (see ``agent.app``) begins here, before argparse, the configuration dataclasses
and asyncio are imported: the listen address is pre-read from the flags, ``KATA_AGENT_SERVER_ADDR``
and the kernel command line with the same precedence as the full parser, the socket is bound and
Health.Check is answered (``agent.rpc.early``) while a thread parses the configuration and imports
the asyncio stack. When the full configuration names another address (or the pre-read is not
possible: ``--config``, ``agent.config_file``, ``--help``, ``--version``), the early listener is
dropped and everything proceeds the ordinary way.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading

from agent import API_VERSION, __version__

TYPE_CHECKING = False
if TYPE_CHECKING:
    import argparse
    from pathlib import Path
    from typing import Any

    from agent import config as cfg
    from agent.config import AgentConfig
    from agent.rpc.early import Handover


def _flag_targets() -> dict[str, tuple[str, tuple[str, ...], cfg.Parser]]:
    """flag dest -> (option name shown in errors, target in AgentConfig, parser)."""
    from agent import config as cfg

    return {
        "server_addr": ("--server-addr", ("server", "server_addr"), cfg.parse_server_addr),
        "grpc_addr": ("--grpc-addr", ("server", "grpc_addr"), cfg.parse_grpc_addr),
        "log_level": ("--log-level", ("log", "level"), cfg.parse_log_level),
        "log_vport": ("--log-vport", ("log", "vport"), cfg.parse_port),
        "hotplug_timeout": ("--hotplug-timeout", ("timeouts", "hotplug"), cfg.parse_seconds),
        "container_pipe_size": (
            "--container-pipe-size",
            ("container_pipe_size",),
            cfg.parse_uint,
        ),
        "debug_console_vport": (
            "--debug-console-vport",
            ("debug_console", "vport"),
            cfg.parse_port,
        ),
        "run_dir": ("--run-dir", ("paths", "run_dir"), _abs_path),
        "sandbox_ns_dir": ("--sandbox-ns-dir", ("paths", "sandbox_ns_dir"), _abs_path),
    }


def _abs_path(option: str, value: object) -> Path:
    from pathlib import Path

    from agent import config as cfg

    path = Path(str(value))
    if not path.is_absolute():
        raise cfg.ConfigError(option, value, "expected an absolute path")
    return path


def build_parser() -> argparse.ArgumentParser:
    import argparse
    from pathlib import Path

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


def _help_formatter(prog: str) -> argparse.HelpFormatter:
    """argparse's formatter with the width computed here: without a width it imports shutil (for
    get_terminal_size), which imports bz2 and lzma: ~0.5 MiB an agent would keep (idle RSS).
    Same width as argparse's own (shutil.get_terminal_size): $COLUMNS, else the terminal's, else
    80; minus 2."""
    import argparse

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
    for dest, (option, target, parse) in _flag_targets().items():
        raw = getattr(ns, dest)
        if raw is not None:
            values[target] = parse(option, raw)
    if ns.debug_console:
        values[("debug_console", "enabled")] = True
    if ns.trace:
        values[("trace",)] = True
    return values


def _parse(argv: list[str]) -> AgentConfig | int:
    """argv -> the configuration, or an exit status (--version, a bad value)."""
    ns = build_parser().parse_args(argv)
    if ns.version:
        print(f"kata-agent {__version__} (API {API_VERSION}, Python {sys.version.split()[0]})")
        return 0
    from agent import app
    from agent import config as cfg

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
    return config


def early_address(argv: list[str], env: dict[str, str] | os._Environ[str]) -> str | None:
    """The listen address as the full configuration will resolve it, read without importing
    anything heavy; None when that cannot be known cheaply (then there is no phase 0)."""
    flag: str | None = None
    cmdline_file = "/proc/cmdline"
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in ("-h", "--help", "--version", "-c", "--config") or arg.startswith("-c"):
            return None
        if name in ("--server-addr", "--cmdline-file"):
            if not eq:
                value = next(args, "")
            if name == "--server-addr":
                flag = value
            else:
                cmdline_file = value
    address = flag or env.get("KATA_AGENT_SERVER_ADDR")
    if address is None:
        address = "vsock://-1:1024"
        if cmdline_file != "none":
            try:
                with open(cmdline_file) as f:
                    words = f.read().split()
            except OSError:
                words = []
            for word in words:
                key, _, value = word.partition("=")
                if key == "agent.config_file":
                    return None
                if key == "agent.server_addr":
                    address = value
    if not address.startswith(("unix:///", "unix://@", "vsock://")):
        return None
    return address


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    address = early_address(args, os.environ)
    handover: Handover | None = None
    if address is not None:
        handover, prepared = _phase0(address, args)
    else:
        prepared = _parse(args)
    if isinstance(prepared, int):
        _drop(handover)
        return prepared
    if handover is not None and prepared.server.server_addr != address:
        _drop(handover)
        handover = None
    from agent import app

    return app.run(prepared, handover=handover)


def _phase0(address: str, args: list[str]) -> tuple[Handover | None, AgentConfig | int]:
    from agent.rpc import early

    try:
        listener = early.bind(address)
    except (OSError, ValueError):
        listener = None  # the ordinary path reports the error properly
    if listener is None:
        return None, _parse(args)
    done = threading.Event()
    outcome: list[AgentConfig | int | BaseException] = []

    def prepare() -> None:
        try:
            outcome.append(_parse(args))
            from agent import app

            app.import_phase1()
        except BaseException as err:  # SystemExit from argparse included
            outcome.append(err)
        finally:
            done.set()

    threading.Thread(target=prepare, name="phase0-prepare", daemon=True).start()
    handover = early.EarlyServer(listener).serve(done)
    result = outcome[0]
    if isinstance(result, BaseException):
        _drop(handover)
        raise result
    return handover, result


def _drop(handover: Handover | None) -> None:
    """Give up an early listener (and its socket file): the ordinary path takes over."""
    if handover is None:
        return
    for conn in handover.connections:
        conn.sock.close()
    name = handover.listener.getsockname()
    handover.listener.close()
    if isinstance(name, str) and name.startswith("/"):
        with contextlib.suppress(OSError):
            os.unlink(name)


if __name__ == "__main__":
    sys.exit(main())
