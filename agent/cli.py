"""``kata-agent``: argv, the environment and the kernel command line -> BootArgs -> start-up.

Start-up (``agent.boot``, its phases in order) binds the listen address and answers Health.Check
while a worker thread parses the flags into the configuration (``agent.boot.configure``: flags
override the TOML file / kernel command line / environment, see ``agent.config``) and imports the
asyncio server. A bad value prints one line naming the option and exits with status 2.
"""

from __future__ import annotations

import os
import sys

from agent.boot import phase0
from agent.boot.args import read as read_boot_args


def main(argv: list[str] | None = None) -> int:
    boot = read_boot_args(sys.argv[1:] if argv is None else argv, os.environ)
    return phase0.run(boot)


if __name__ == "__main__":
    sys.exit(main())
