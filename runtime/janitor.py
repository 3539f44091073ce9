"""The janitor of one store session: ``python -I -S janitor.py DRIVER_PID DIR...``.

Blocks on its standard input, a pipe whose write end only the driver holds.
When the pipe closes (the driver died, even by ``kill -9``, or its store shut
down) or its parent is no longer ``DRIVER_PID``, it removes the directories
and exits. Standard library only, started with ``-I -S``: it starts in
milliseconds and nothing on the user's path can break it. See
``runtime/lifeline.py``.
"""

import os
import select
import shutil
import signal
import sys
import time

POLL_S = 1.0
"""How often the parent is checked besides waiting on the pipe."""
RETRY_S = 4.0
"""How long removal is retried: workers of a dead driver may still be writing
a file for up to their own watchdog's reaction time."""


def wait_for_driver(parent: int) -> None:
    while True:
        ready, _, _ = select.select([0], [], [], POLL_S)
        if ready and not os.read(0, 4096):
            return  # end of file: the driver closed the pipe or died
        if os.getppid() != parent:
            return  # re-parented: the driver died (a fork of it may hold the pipe)


def remove(dirs: list) -> None:
    deadline = time.monotonic() + RETRY_S
    while True:
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
        if not any(os.path.exists(p) for p in dirs) or time.monotonic() > deadline:
            return
        time.sleep(0.05)


def main(argv: list) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the driver's to handle
    parent, dirs = int(argv[1]), argv[2:]
    wait_for_driver(parent)
    remove(dirs)


if __name__ == "__main__":
    main(sys.argv)
