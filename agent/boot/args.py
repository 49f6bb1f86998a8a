"""BootArgs: argv, the environment and the kernel command line, read and parsed once by the entry
point that runs first, then passed forward.

The entries are ``kata-agent`` (``agent.cli``: its flags, the environment, ``/proc/cmdline`` or
``--cmdline-file``) and the guest's ``/init`` (``agent.boot.init``: no flags). The configuration
is built from a BootArgs by ``agent.boot.configure`` (the flags through argparse, the command
line's words through ``agent.config``). Before that, start-up reads the few facts it needs from
it: the listen address to bind early, the serial port PID 1 opens, PID 1's switch-root, cgroup and
log-level choices. The facts follow the configuration's precedence (``agent.config``): the
command line, then ``KATA_AGENT_*``, then the flags; a configuration file decides alone.

Cold: the guest's ``/init`` builds a BootArgs before its channel is open, so this module imports
nothing but ``os`` (``tests/unit/boot/test_import_budget.py``).
"""

from __future__ import annotations

import os

DEFAULT_SERVER_ADDR = "vsock://-1:1024"
SERIAL_PORTS_PREFIX = "serial:///dev/virtio-ports/"
DEFAULT_CMDLINE_FILE = "/proc/cmdline"
ENV_PREFIX = "KATA_AGENT_"
_FALSE = ("0", "false", "no", "off")
# Flags that leave the configuration to argparse alone (a file, or no agent at all).
_NO_EARLY_FLAGS = ("-h", "--help", "--version", "-c", "--config")

#: A kernel command line word: ``key=value`` -> (key, value); a bare ``key`` -> (key, None).
Word = tuple[str, "str | None"]


def cmdline_words(text: str) -> tuple[Word, ...]:
    """The words of a kernel command line, split once (whitespace, then the first ``=``)."""
    words: list[Word] = []
    for word in text.split():
        key, eq, value = word.partition("=")
        words.append((key, value if eq else None))
    return tuple(words)


class BootArgs:
    """What the entry point read, and the start-up facts parsed from it (module docstring).

    A plain class with ``__slots__`` rather than a dataclass: the guest's ``/init`` builds it
    before the agent's channel is open, where importing ``dataclasses`` would delay the first
    answered Check (docs/performance.md). Frozen all the same."""

    __slots__ = (
        "argv",
        "cgroup_v2",
        "cmdline",
        "env",
        "log_level",
        "server_addr",
        "switch_root",
    )

    argv: tuple[str, ...]  # kata-agent's flags, parsed in full by agent.boot.configure
    env: dict[str, str]  # the KATA_AGENT_* variables
    cmdline: tuple[Word, ...] | None  # the kernel command line; None: not read (--config, none)
    # The listen address as the configuration will resolve it; None: only the full parse can tell
    # (a configuration file names it, or --help / --version).
    server_addr: str | None
    log_level: str | None  # as requested (agent.log, KATA_AGENT_LOG_LEVEL, --log-level); unchecked
    switch_root: bool  # PID 1: leave the initramfs root (agent.switchroot)
    cgroup_v2: bool  # PID 1: mount cgroup v2 (systemd.unified_cgroup_hierarchy, cgroup_no_v1)

    def __init__(
        self,
        *,
        argv: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        cmdline: tuple[Word, ...] | None = None,
        server_addr: str | None = DEFAULT_SERVER_ADDR,
        log_level: str | None = None,
        switch_root: bool = True,
        cgroup_v2: bool = True,
    ) -> None:
        init = object.__setattr__
        init(self, "argv", tuple(argv))
        init(self, "env", dict(env or {}))
        init(self, "cmdline", cmdline)
        init(self, "server_addr", server_addr)
        init(self, "log_level", log_level)
        init(self, "switch_root", switch_root)
        init(self, "cgroup_v2", cgroup_v2)

    def __setattr__(self, name: str, value: object) -> None:
        raise AttributeError(f"BootArgs is frozen: cannot set {name!r}")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"BootArgs is frozen: cannot delete {name!r}")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BootArgs):
            return NotImplemented
        return all(getattr(self, n) == getattr(other, n) for n in self.__slots__)

    __hash__ = None  # type: ignore[assignment]  # equal by value, and env is a dict

    def __repr__(self) -> str:
        fields = ", ".join(f"{n}={getattr(self, n)!r}" for n in self.__slots__)
        return f"BootArgs({fields})"

    @property
    def serial_port(self) -> str | None:
        """NAME when the agent listens on ``serial:///dev/virtio-ports/NAME``, else None."""
        address = self.server_addr
        if address is None or not address.startswith(SERIAL_PORTS_PREFIX):
            return None
        name = address[len(SERIAL_PORTS_PREFIX) :]
        return name if name and "/" not in name else None


def parse(
    argv: list[str] | tuple[str, ...],
    env: dict[str, str] | os._Environ[str],
    cmdline: tuple[Word, ...] | None,
) -> BootArgs:
    """BootArgs from what the entry read (pure)."""
    flags = _early_flags(argv)
    cmdline_addr: str | None = DEFAULT_SERVER_ADDR
    log_level = None
    switch_root = cgroup_v2 = True
    for key, value in cmdline or ():
        if key == "agent.config_file":
            cmdline_addr = None  # the file replaces the command line
            break  # as agent.config: the words after it do not count
        if value is None:
            continue
        if key == "agent.server_addr":
            cmdline_addr = value  # the last one wins, as in agent.config
        elif key == "agent.log":
            log_level = value
        elif key == "agent.switchroot":
            switch_root = value.strip().lower() not in _FALSE
        elif key == "systemd.unified_cgroup_hierarchy":
            cgroup_v2 = value.strip().lower() not in _FALSE
        elif key == "cgroup_no_v1" and value == "all":
            cgroup_v2 = True
    agent_env = {k: v for k, v in env.items() if k.startswith(ENV_PREFIX)}
    log_level = agent_env.get("KATA_AGENT_LOG_LEVEL", log_level)
    server_addr = None
    if flags is not None:
        server_addr = (
            flags.get("--server-addr") or agent_env.get("KATA_AGENT_SERVER_ADDR") or cmdline_addr
        )
        log_level = flags.get("--log-level", log_level)
    return BootArgs(
        argv=tuple(argv),
        env=agent_env,
        cmdline=cmdline,
        server_addr=server_addr,
        log_level=log_level,
        switch_root=switch_root,
        cgroup_v2=cgroup_v2,
    )


def read(argv: list[str] | tuple[str, ...], env: dict[str, str] | os._Environ[str]) -> BootArgs:
    """Read the kernel command line (``--cmdline-file``, default /proc/cmdline; not with
    ``--config``, which replaces it) and parse everything into a BootArgs."""
    flags = _early_flags(argv) or {}
    path = flags.get("--cmdline-file", DEFAULT_CMDLINE_FILE)
    cmdline = None
    if path != "none" and not _has_config_flag(argv):
        try:
            with open(path) as fh:
                cmdline = cmdline_words(fh.read())
        except OSError:
            cmdline = None  # as no command line (a host without /proc/cmdline, say)
    return parse(argv, env, cmdline)


def _early_flags(argv: list[str] | tuple[str, ...]) -> dict[str, str] | None:
    """The flags start-up needs before argparse runs; None when argparse alone decides."""
    flags: dict[str, str] = {}
    args = iter(argv)
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in _NO_EARLY_FLAGS or (arg.startswith("-c") and not arg.startswith("--")):
            return None
        if name in ("--server-addr", "--cmdline-file", "--log-level"):
            flags[name] = value if eq else next(args, "")
    return flags


def _has_config_flag(argv: list[str] | tuple[str, ...]) -> bool:
    return any(
        a.partition("=")[0] == "--config" or (a.startswith("-c") and not a.startswith("--"))
        for a in argv
    )
