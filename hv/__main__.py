"""``python -m hv``: kata-agent-hv."""

import sys

from hv.cli import main

sys.exit(main())
