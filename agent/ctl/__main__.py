"""`python -m agent.ctl` runs kata-agent-ctl."""

from agent.ctl.cli import main

raise SystemExit(main())
