"""``python -m tests.support.swapper DIR A B SECONDS``: swap the entries A and B of DIR with
renameat2(RENAME_EXCHANGE) in a loop for SECONDS (the attacker of the race tests, in its own
process so it runs truly in parallel with the agent); prints how many swaps succeeded."""

from __future__ import annotations

import os
import sys
import time

from oci.syscalls import consts, libc


def main(argv: list[str]) -> int:
    directory, a, b, seconds = argv[0], argv[1], argv[2], float(argv[3])
    fd = os.open(directory, os.O_PATH | os.O_DIRECTORY)
    end = time.monotonic() + seconds
    swaps = 0
    while time.monotonic() < end:
        try:
            libc.renameat2(fd, a, fd, b, consts.RENAME_EXCHANGE)
            swaps += 1
        except OSError:
            time.sleep(0)  # one of the two is missing right now
    print(swaps)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
