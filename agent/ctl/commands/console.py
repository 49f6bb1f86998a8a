"""``console``: attach the terminal to the agent's debug console (see agent/ctl/console.py)."""

from agent.ctl.console import register

__all__ = ["register"]
