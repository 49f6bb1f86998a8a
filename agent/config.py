"""Agent configuration: parsed once into frozen dataclasses, then passed down.

Sources, lowest precedence first (Kata's rules, ``src/agent/src/config.rs``):

1. defaults (the fields below);
2. either a TOML file given with ``--config`` / ``-c``, or the kernel command line's ``agent.*``
   options (``agent.config_file=PATH`` on the command line switches to that TOML file instead);
3. the ``KATA_AGENT_*`` environment overrides (``KATA_AGENT_SERVER_ADDR``,
   ``KATA_AGENT_LOG_LEVEL``, ``KATA_AGENT_TRACING``);
4. command-line flags of ``kata-agent`` (``agent.boot.configure``).

Everything here is pure: the entry point reads ``/proc/cmdline`` and the environment once
(``agent.boot.args.BootArgs``), ``agent.boot.configure`` hands their words and values over with a
function that reads the file. A bad value raises ``ConfigError`` naming the option, e.g.
``agent.hotplug_timeout: invalid value "abc": expected a whole number of seconds > 0``.

Kernel command line parsing follows Kata: words are split on whitespace (once, by
``agent.boot.args.cmdline_words``); flags
(``agent.debug_console``, ``agent.devmode``, a bare ``agent.trace``) are true by presence; booleans
accept ``true``/``false`` or integers (non-zero is true); timeouts are whole seconds > 0; unknown
``agent.*`` words are ignored (reported in ``ParseResult.ignored``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.boot.args import DEFAULT_SERVER_ADDR, Word

LOG_LEVELS = ("trace", "debug", "info", "warn", "error", "critical")
_LOG_LEVEL_ALIASES = {
    "trace": "trace",
    "debug": "debug",
    "info": "info",
    "warn": "warn",
    "warning": "warn",
    "error": "error",
    "critical": "critical",
    "fatal": "critical",
    "panic": "critical",
}
GUEST_COMPONENTS_PROCS = ("none", "attestation-agent", "confidential-data-hub", "api-server-rest")
GUEST_COMPONENTS_REST_API = ("all", "attestation", "resource")
#: The AgentService areas (``agent.rpc.lazy_servicer.AREAS``) in the order the Kata runtime first
#: calls them: SetPolicy, interfaces and routes, CreateSandbox and the containers, GetGuestDetails,
#: CPU and memory hot-plug. ``preload_areas=all`` loads them in this order.
AREA_NAMES = ("policy", "network", "containers", "guest", "storage")
#: ``preload_areas=auto`` in a guest: the areas of every pod start (CreateSandbox and
#: CreateContainer, then GetGuestDetails). The network area is left to its first call: a pod
#: without interfaces (a remote hypervisor) never calls it, and it holds pyroute2.
GUEST_PRELOAD = ("containers", "guest")


class ConfigError(ValueError):
    """A configuration value is invalid; ``str()`` is the one-line message for the user."""

    def __init__(self, option: str, value: object, reason: str) -> None:
        self.option = option
        self.value = value
        self.reason = reason
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        super().__init__(f"{option}: invalid value {shown}: {reason}")


# -- the configuration -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class ServerConfig:
    """Where the agent listens."""

    server_addr: str = DEFAULT_SERVER_ADDR
    # gRPC (grpc.aio) listener with the same servicers; None = off (grpcio not even imported).
    grpc_addr: str | None = None
    # ttrpc connection limits (agent.rpc.server.ConnectionLimits): a connection that sends no
    # byte inside a frame for this long is closed; partial frames of all connections together
    # hold at most frame_memory bytes (beyond a small allowance each); at most max_connections.
    idle_frame_timeout: float = 30.0
    frame_memory: int = 16 << 20
    max_connections: int = 128


@dataclass(frozen=True, slots=True, kw_only=True)
class LogConfig:
    level: str = "info"
    # > 0: logs go to the first connection accepted on this vsock port instead of stdout.
    vport: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class DebugConsoleConfig:
    enabled: bool = False
    # > 0: one pty-backed shell per connection on this vsock port; 0: shell on /dev/console.
    vport: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Timeouts:
    """Waits on the outside world, in seconds."""

    hotplug: float = 3.0
    cdh_api: float = 50.0
    image_pull: float = 1200.0
    cdi: float = 100.0
    launch_process: float = 6.0


@dataclass(frozen=True, slots=True, kw_only=True)
class PathsConfig:
    """State roots. Tests point these at temporary directories."""

    run_dir: Path = Path("/run/kata-containers")
    sandbox_ns_dir: Path = Path("/var/run/sandbox-ns")
    # the image's agent policy (agent.policy); no file: no policy, requests are not checked
    policy_file: Path = Path("/etc/kata-opa/default-policy.rego")

    @property
    def shared_dir(self) -> Path:
        """The host-shared filesystem mount point (``<run_dir>/shared``)."""
        return self.run_dir / "shared"

    @property
    def shared_containers_dir(self) -> Path:
        """``<run_dir>/shared/containers``: shared container files; the only CopyFile target."""
        return self.run_dir / "shared" / "containers"

    @property
    def sandbox_dir(self) -> Path:
        """``<run_dir>/sandbox``: sandbox-private files (shm, ephemeral, resolv.conf)."""
        return self.run_dir / "sandbox"


@dataclass(frozen=True, slots=True, kw_only=True)
class GuestComponentsConfig:
    """Confidential Containers options: parsed for compatibility, not acted upon."""

    procs: str = "api-server-rest"
    rest_api: str = "resource"
    secure_storage_integrity: bool = True
    https_proxy: str = ""
    no_proxy: str = ""


@dataclass(frozen=True, slots=True, kw_only=True)
class AgentConfig:
    server: ServerConfig = field(default_factory=ServerConfig)
    log: LogConfig = field(default_factory=LogConfig)
    debug_console: DebugConsoleConfig = field(default_factory=DebugConsoleConfig)
    timeouts: Timeouts = field(default_factory=Timeouts)
    paths: PathsConfig = field(default_factory=PathsConfig)
    guest_components: GuestComponentsConfig = field(default_factory=GuestComponentsConfig)
    container_pipe_size: int = 0
    trace: bool = False
    dev_mode: bool = False
    passfd_listener_port: int = 0
    visible_cdi_devices: bool = False
    mem_agent_enable: bool = False
    # systemd.unified_cgroup_hierarchy / cgroup_no_v1=all: mount cgroup v2 when PID 1.
    unified_cgroup_hierarchy: bool = False
    # agent.config_file from the kernel command line, or --config (informational once loaded).
    config_file: Path | None = None
    # AgentService areas imported in the background once the agent serves, in this order;
    # None: auto (``areas_to_preload``).
    preload_areas: tuple[str, ...] | None = None


def areas_to_preload(config: AgentConfig, *, init_daemon: bool) -> tuple[str, ...]:
    """The areas to load in the background once AgentService is up. ``auto`` (None): a guest's
    agent (PID 1, or serving a vsock or virtio-serial channel) loads ``GUEST_PRELOAD``, where the
    runtime's first calls would otherwise wait for the imports; elsewhere (unix sockets:
    development, tests) each area waits for its first call, which keeps an idle agent small."""
    if config.preload_areas is not None:
        return config.preload_areas
    guest_channel = config.server.server_addr.startswith(("vsock://", "serial://"))
    return GUEST_PRELOAD if init_daemon or guest_channel else ()


def defaults() -> AgentConfig:
    return AgentConfig()


# -- value parsers -------------------------------------------------------------------------------

Parser = Callable[[str, object], Any]


def parse_bool(option: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    text = str(value).strip().lower()
    if text in ("true", "yes", "on"):
        return True
    if text in ("false", "no", "off"):
        return False
    try:
        return int(text) != 0
    except ValueError:
        raise ConfigError(option, value, "expected true, false or an integer") from None


def parse_uint(option: str, value: object) -> int:
    if isinstance(value, bool):
        raise ConfigError(option, value, "expected an integer >= 0")
    try:
        number = value if isinstance(value, int) else int(str(value).strip(), 0)
    except ValueError:
        raise ConfigError(option, value, "expected an integer >= 0") from None
    if number < 0:
        raise ConfigError(option, value, "expected an integer >= 0")
    return number


def parse_port(option: str, value: object) -> int:
    number = parse_uint(option, value)
    if number > 0xFFFFFFFF:
        raise ConfigError(option, value, "expected a vsock port (0 = off, up to 4294967295)")
    return number


def parse_seconds(option: str, value: object) -> float:
    """Whole seconds > 0, as Kata; a TOML table ``{secs = N, nanos = M}`` is accepted too."""
    if isinstance(value, Mapping):
        try:
            secs = int(value.get("secs", 0)) + int(value.get("nanos", 0)) / 1e9
        except (TypeError, ValueError):
            raise ConfigError(option, value, "expected {secs = N, nanos = M}") from None
        if secs <= 0:
            raise ConfigError(option, value, "expected a duration > 0")
        return float(secs)
    if isinstance(value, bool):
        raise ConfigError(option, value, "expected a whole number of seconds > 0")
    try:
        number = value if isinstance(value, int | float) else int(str(value).strip())
    except ValueError:
        raise ConfigError(option, value, "expected a whole number of seconds > 0") from None
    if number <= 0:
        raise ConfigError(option, value, "expected a whole number of seconds > 0")
    return float(number)


_BYTE_SUFFIXES = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_bytes(option: str, value: object) -> int:
    """A size in bytes > 0, with an optional K, M or G suffix (powers of 1024)."""
    if isinstance(value, bool):
        raise ConfigError(option, value, "expected a size in bytes (e.g. 16M)")
    text = str(value).strip().lower().removesuffix("ib").removesuffix("b")
    suffix = text[-1:] if text[-1:] in ("k", "m", "g") else ""
    try:
        number = int(text[: len(text) - len(suffix)]) * _BYTE_SUFFIXES[suffix]
    except ValueError:
        raise ConfigError(option, value, "expected a size in bytes (e.g. 16M)") from None
    if number <= 0:
        raise ConfigError(option, value, "expected a size in bytes > 0")
    return number


def parse_positive(option: str, value: object) -> int:
    number = parse_uint(option, value)
    if number == 0:
        raise ConfigError(option, value, "expected an integer > 0")
    return number


def parse_log_level(option: str, value: object) -> str:
    level = _LOG_LEVEL_ALIASES.get(str(value).strip().lower())
    if level is None:
        raise ConfigError(
            option, value, "expected one of trace, debug, info, warn, error, critical"
        )
    return level


def parse_server_addr(option: str, value: object) -> str:
    text = str(value).strip()
    problem = check_listen_address(text)
    if problem:
        raise ConfigError(option, value, problem)
    return text


def parse_grpc_addr(option: str, value: object) -> str | None:
    text = str(value).strip()
    if text in ("", "none", "off"):
        return None
    if text.startswith(("unix://", "unix-abstract:", "vsock://")):
        problem = check_listen_address(text.replace("unix-abstract:", "unix://@", 1))
        if problem:
            raise ConfigError(option, value, problem)
        return text
    raise ConfigError(option, value, "expected unix:///path, unix://@name or vsock://CID:PORT")


def check_listen_address(text: str) -> str | None:
    """None if ``text`` is a valid agent listen address, else what is wrong with it."""
    scheme, sep, rest = text.partition("://")
    if not sep:
        return "expected vsock://CID:PORT, unix:///path, unix://@name or serial:///dev/..."
    if scheme == "vsock":
        cid, colon, port = rest.partition(":")
        if not colon:
            return "vsock address needs CID:PORT (e.g. vsock://-1:1024)"
        try:
            cid_n, port_n = int(cid), int(port)
        except ValueError:
            return "vsock CID and port must be integers"
        if cid_n < -1 or cid_n > 0xFFFFFFFF or port_n <= 0 or port_n > 0xFFFFFFFF:
            return "vsock CID must be -1 or 0..4294967295 and the port 1..4294967295"
        return None
    if scheme == "unix":
        if not rest or rest == "@":
            return "unix address needs a path (unix:///path) or an abstract name (unix://@name)"
        if not rest.startswith(("/", "@")):
            return "unix path must be absolute (unix:///path) or abstract (unix://@name)"
        if len(rest.encode()) > 107:
            return "unix socket path is longer than 107 bytes"
        return None
    if scheme == "serial":
        if not rest.startswith("/"):
            return "serial address needs an absolute device path (serial:///dev/virtio-ports/NAME)"
        return None
    return f'unknown scheme "{scheme}" (expected vsock, unix or serial)'


def parse_preload_areas(option: str, value: object) -> tuple[str, ...] | None:
    """``auto`` (None), ``none``, ``all``, or area names separated by commas (a TOML array too),
    loaded in the order given."""
    if isinstance(value, list | tuple):
        words = [str(v).strip() for v in value]
    else:
        text = str(value).strip().lower()
        if text == "auto":
            return None
        if text in ("none", ""):
            return ()
        if text == "all":
            return AREA_NAMES
        words = [w.strip() for w in text.split(",")]
    unknown = [w for w in words if w not in AREA_NAMES]
    if unknown:
        raise ConfigError(
            option,
            value,
            f"unknown area {unknown[0]!r}: expected auto, none, all or a comma-separated list of "
            + ", ".join(AREA_NAMES),
        )
    return tuple(dict.fromkeys(words))


def _choice(choices: tuple[str, ...]) -> Parser:
    def parse(option: str, value: object) -> str:
        text = str(value).strip()
        if text not in choices:
            raise ConfigError(option, value, "expected one of " + ", ".join(choices))
        return text

    return parse


def _text(option: str, value: object) -> str:
    return str(value)


def _path(option: str, value: object) -> Path:
    text = str(value).strip()
    if not text.startswith("/"):
        raise ConfigError(option, value, "expected an absolute path")
    return Path(text)


# -- the option table ----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Option:
    """One setting: its kernel-cmdline key, TOML key and place in ``AgentConfig``."""

    cmdline: str | None  # e.g. "agent.hotplug_timeout"; None: not settable on the cmdline
    toml: str | None  # Kata's TOML key (the Rust struct field name)
    target: tuple[str, ...]  # attribute path in AgentConfig
    parse: Parser
    flag: bool = False  # true by mere presence on the kernel command line

    @property
    def name(self) -> str:
        return self.cmdline or self.toml or ".".join(self.target)


OPTIONS: tuple[Option, ...] = (
    Option("agent.server_addr", "server_addr", ("server", "server_addr"), parse_server_addr),
    Option(None, "grpc_addr", ("server", "grpc_addr"), parse_grpc_addr),
    Option(
        "agent.idle_frame_timeout",
        "idle_frame_timeout",
        ("server", "idle_frame_timeout"),
        parse_seconds,
    ),
    Option(
        "agent.frame_memory_limit", "frame_memory_limit", ("server", "frame_memory"), parse_bytes
    ),
    Option(
        "agent.max_connections", "max_connections", ("server", "max_connections"), parse_positive
    ),
    Option("agent.log", "log_level", ("log", "level"), parse_log_level),
    Option("agent.log_vport", "log_vport", ("log", "vport"), parse_port),
    Option("agent.debug_console", "debug_console", ("debug_console", "enabled"), parse_bool, True),
    Option(
        "agent.debug_console_vport", "debug_console_vport", ("debug_console", "vport"), parse_port
    ),
    Option("agent.hotplug_timeout", "hotplug_timeout", ("timeouts", "hotplug"), parse_seconds),
    Option("agent.cdh_api_timeout", "cdh_api_timeout", ("timeouts", "cdh_api"), parse_seconds),
    Option(
        "agent.image_pull_timeout", "image_pull_timeout", ("timeouts", "image_pull"), parse_seconds
    ),
    Option("agent.cdi_timeout", "cdi_timeout", ("timeouts", "cdi"), parse_seconds),
    Option(
        "agent.launch_process_timeout",
        "launch_process_timeout",
        ("timeouts", "launch_process"),
        parse_seconds,
    ),
    Option(
        "agent.container_pipe_size", "container_pipe_size", ("container_pipe_size",), parse_uint
    ),
    Option("agent.trace", "tracing", ("trace",), parse_bool, True),
    Option("agent.devmode", "dev_mode", ("dev_mode",), parse_bool, True),
    Option(
        "agent.passfd_listener_port", "passfd_listener_port", ("passfd_listener_port",), parse_port
    ),
    Option(
        "agent.visible_cdi_devices", "visible_cdi_devices", ("visible_cdi_devices",), parse_bool
    ),
    Option("agent.mem_agent_enable", "mem_agent_enable", ("mem_agent_enable",), parse_bool, True),
    Option(
        "agent.guest_components_procs",
        "guest_components_procs",
        ("guest_components", "procs"),
        _choice(GUEST_COMPONENTS_PROCS),
    ),
    Option(
        "agent.guest_components_rest_api",
        "guest_components_rest_api",
        ("guest_components", "rest_api"),
        _choice(GUEST_COMPONENTS_REST_API),
    ),
    Option(
        "agent.secure_storage_integrity",
        "secure_storage_integrity",
        ("guest_components", "secure_storage_integrity"),
        parse_bool,
    ),
    Option("agent.https_proxy", "https_proxy", ("guest_components", "https_proxy"), _text),
    Option("agent.no_proxy", "no_proxy", ("guest_components", "no_proxy"), _text),
    Option(
        "systemd.unified_cgroup_hierarchy",
        "unified_cgroup_hierarchy",
        ("unified_cgroup_hierarchy",),
        parse_bool,
    ),
    Option("agent.preload_areas", "preload_areas", ("preload_areas",), parse_preload_areas),
    Option(None, "run_dir", ("paths", "run_dir"), _path),
    Option(None, "sandbox_ns_dir", ("paths", "sandbox_ns_dir"), _path),
    Option(None, "policy_file", ("paths", "policy_file"), _path),
)
_BY_CMDLINE = {o.cmdline: o for o in OPTIONS if o.cmdline}
_BY_TOML = {o.toml: o for o in OPTIONS if o.toml}
# The TOML file may group our own settings in tables too: [paths] run_dir = ..., [server] ...
_TOML_TABLES = {
    "paths": {"run_dir", "sandbox_ns_dir", "policy_file"},
    "server": {
        "server_addr",
        "grpc_addr",
        "idle_frame_timeout",
        "frame_memory_limit",
        "max_connections",
    },
}


def with_values(config: AgentConfig, values: Mapping[tuple[str, ...], Any]) -> AgentConfig:
    """Return ``config`` with the given attribute paths replaced (pure)."""
    grouped: dict[str, Any] = {}
    nested: dict[str, dict[tuple[str, ...], Any]] = {}
    for path, value in values.items():
        if len(path) == 1:
            grouped[path[0]] = value
        else:
            nested.setdefault(path[0], {})[path[1:]] = value
    for name, sub in nested.items():
        current = getattr(config, name)
        grouped[name] = dataclasses.replace(current, **{p[0]: v for p, v in sub.items()})
    return dataclasses.replace(config, **grouped)


# -- sources ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CmdlineResult:
    values: dict[tuple[str, ...], Any]
    config_file: Path | None
    ignored: tuple[str, ...]


def parse_cmdline(words: Iterable[Word]) -> CmdlineResult:
    """Parse the ``agent.*`` words of a kernel command line (pure)."""
    values: dict[tuple[str, ...], Any] = {}
    ignored: list[str] = []
    config_file: Path | None = None
    for key, raw in words:
        word = key if raw is None else f"{key}={raw}"
        if key == "cgroup_no_v1":
            if raw == "all":
                values[("unified_cgroup_hierarchy",)] = True
            continue
        if key == "agent.config_file":
            config_file = _path(key, raw or "")
            break  # Kata stops here and uses the file
        option = _BY_CMDLINE.get(key)
        if option is None:
            if key.startswith("agent."):
                ignored.append(word)
            continue
        if raw is None:
            if not option.flag:
                raise ConfigError(key, "", "expected a value (" + key + "=VALUE)")
            values[option.target] = True
            continue
        values[option.target] = option.parse(key, raw)
    return CmdlineResult(values, config_file, tuple(ignored))


def parse_toml(text: str, *, source: str = "config file") -> dict[tuple[str, ...], Any]:
    """Parse a TOML config (Kata's keys, plus our [paths]/[server] tables). Unknown keys are
    errors: a file is written on purpose."""
    import tomllib  # only with a configuration file: not in an idle agent otherwise

    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(source, "", f"not valid TOML: {err}") from None
    values: dict[tuple[str, ...], Any] = {}

    def take(key: str, raw: object, where: str) -> None:
        option = _BY_TOML.get(key)
        if option is None:
            raise ConfigError(f"{source}: {where}", raw, "unknown setting")
        values[option.target] = option.parse(where, raw)

    for key, raw in data.items():
        if key in _TOML_TABLES and isinstance(raw, dict):
            for sub, sub_raw in raw.items():
                if sub not in _TOML_TABLES[key]:
                    raise ConfigError(f"{source}: {key}.{sub}", sub_raw, "unknown setting")
                take(sub, sub_raw, f"{key}.{sub}")
        else:
            take(key, raw, key)
    return values


ENV_OVERRIDES = {
    "KATA_AGENT_SERVER_ADDR": ("server", "server_addr"),
    "KATA_AGENT_LOG_LEVEL": ("log", "level"),
    "KATA_AGENT_TRACING": ("trace",),
}


def parse_env(env: Mapping[str, str]) -> dict[tuple[str, ...], Any]:
    """The ``KATA_AGENT_*`` development overrides (pure)."""
    values: dict[tuple[str, ...], Any] = {}
    by_target = {o.target: o for o in OPTIONS}
    for name, target in ENV_OVERRIDES.items():
        if name in env:
            values[target] = by_target[target].parse(name, env[name])
    return values


def load(
    *,
    cmdline: Iterable[Word] | None,
    env: Mapping[str, str],
    read_file: Callable[[Path], str],
    config_file: Path | None = None,
    overrides: Mapping[tuple[str, ...], Any] | None = None,
) -> tuple[AgentConfig, tuple[str, ...]]:
    """Merge every source (module docstring) into one ``AgentConfig``; also returns the ignored
    kernel command line words. ``read_file`` is how the caller reads a TOML file."""
    config = defaults()
    ignored: tuple[str, ...] = ()
    file_path = config_file
    if file_path is None and cmdline is not None:
        parsed = parse_cmdline(cmdline)
        config = with_values(config, parsed.values)
        ignored = parsed.ignored
        file_path = parsed.config_file
        if file_path is not None:
            config = defaults()  # the file is the whole config
    if file_path is not None:
        try:
            text = read_file(file_path)
        except OSError as err:
            raise ConfigError("config file", str(file_path), err.strerror or str(err)) from None
        config = with_values(config, parse_toml(text, source=str(file_path)))
        config = dataclasses.replace(config, config_file=file_path)
    config = with_values(config, parse_env(env))
    if overrides:
        config = with_values(config, overrides)
    return config, ignored
