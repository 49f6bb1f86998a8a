"""`LazyModule`: a module imported on its first attribute access.

kata-oci is a fresh interpreter per command, and its short commands (start, kill, state, delete)
must not pay for modules only the long ones use: ``json`` imports ``re`` and ``enum``,
``signal`` imports ``enum``, ``contextlib`` imports ``collections`` and ``functools`` (~10 ms
together here, as much as the interpreter's own start-up; see oci/engine/launcher.py). The
callers bind the real module for the type checker and a `LazyModule` at run time.

Code that runs after joining a container's mount namespace must not rely on this: the Python
library is not visible from there (see oci/engine/inplace.py).
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # not typing's: importing typing costs the short commands ~2 ms
if TYPE_CHECKING:
    from typing import Any


class LazyModule:
    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, attr: str) -> Any:
        mod = sys.modules.get(self._name)
        if mod is None:
            __import__(self._name)
            mod = sys.modules[self._name]
        return getattr(mod, attr)
