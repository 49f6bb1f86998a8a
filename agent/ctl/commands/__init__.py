"""kata-agent-ctl subcommands, one module each (see agent/ctl/__init__.py)."""
