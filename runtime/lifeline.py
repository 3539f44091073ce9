"""Nothing outlives a driver that dies, even by ``kill -9``.

Two mechanisms, both independent of the driver running any code at its death:

* **Workers** watch a *lifeline*: the read end of a pipe whose write end only
  the driver holds (``driver_lifeline``, one per driver process, passed to each
  worker with ``pass_fds`` and named in ``LIFELINE_ENV``). The kernel closes
  the write end when the driver dies, the worker's watchdog thread
  (``watch_driver``) sees end-of-file and the worker exits at once, even in the
  middle of a task. A process the driver forked without exec (a user's
  ``multiprocessing`` pool) may keep the write end open: the watchdog also
  checks every ``POLL_S`` that its parent is still the driver.

  Not ``prctl(PR_SET_PDEATHSIG)``: Linux sends that signal when the *thread*
  that spawned the child exits, and workers are spawned from whichever thread
  submits a task (the executor thread of each pipeline ends with it), so
  workers shared by later pipelines would be killed with the first one.

* **The session directories** (shared memory and spill) are removed by a
  *janitor* (``start_janitor``): a tiny process (``python -I -S
  runtime/janitor.py``, standard library only) that blocks on a pipe from the
  driver and removes the directories when the pipe closes (the driver died, or
  ``ObjectStore.shutdown`` closed it) or its parent changes. Removal retries for
  a few seconds while dying workers may still create files.

>>> fd = driver_lifeline()  # doctest: +SKIP
>>> janitor = start_janitor([shm_dir, spill_dir])  # doctest: +SKIP
>>> stop_janitor(janitor)  # doctest: +SKIP
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

LIFELINE_ENV = "DATAFLOW_LIFELINE_FD"
"""Environment variable naming a worker's lifeline file descriptor."""
POLL_S = 1.0
"""How often a watchdog checks its parent besides waiting on the pipe."""
EXIT_CODE = 75
"""A worker's exit status when it leaves because its driver died."""

_lock = threading.Lock()
_lifeline: tuple[int, int, int] | None = None  # (pid, read fd, write fd)


def driver_lifeline() -> int:
    """The read end of this process's lifeline pipe (created on first use; the
    write end stays open, unused, until the process dies)."""
    global _lifeline
    with _lock:
        if _lifeline is None or _lifeline[0] != os.getpid():  # a fork has its own
            read_fd, write_fd = os.pipe()  # both close-on-exec: children get the read end
            _lifeline = (os.getpid(), read_fd, write_fd)  # only through pass_fds
        return _lifeline[1]


def watch_driver(fd: int | None = None, parent: int | None = None) -> threading.Thread | None:
    """Start a daemon thread that ends this process (``os._exit(EXIT_CODE)``) once
    the lifeline ``fd`` (default: the one ``LIFELINE_ENV`` names) reaches
    end-of-file or the parent process is no longer ``parent`` (default: the
    current one). Returns the thread, or None when there is nothing to watch."""
    if fd is None:
        named = os.environ.pop(LIFELINE_ENV, "")
        fd = int(named) if named.isdigit() else None
    parent = os.getppid() if parent is None else parent
    if fd is None and parent <= 1:
        return None
    thread = threading.Thread(
        target=_watch, args=(fd, parent), name="dataflow-lifeline", daemon=True
    )
    thread.start()
    return thread


def driver_gone(fd: int | None, parent: int, timeout: float) -> bool:
    """Wait up to ``timeout`` for the lifeline; True once the driver is gone."""
    if fd is not None:
        ready, _, _ = select.select([fd], [], [], timeout)
        if ready and not os.read(fd, 1):  # end of file: every write end is closed
            return True
    return os.getppid() != parent


def _watch(fd: int | None, parent: int) -> None:
    import time

    while not driver_gone(fd, parent, POLL_S):
        if fd is None:
            time.sleep(POLL_S)
    os._exit(EXIT_CODE)


# -- the janitor ------------------------------------------------------------------------

_JANITOR = Path(__file__).resolve().with_name("janitor.py")


def start_janitor(dirs: Sequence[str | os.PathLike]) -> subprocess.Popen:
    """Start the process that removes ``dirs`` once this process dies or
    ``stop_janitor`` is called. It runs in a session of its own, so a Ctrl-C
    sent to the terminal's process group does not stop it."""
    return subprocess.Popen(
        [sys.executable, "-I", "-S", str(_JANITOR), str(os.getpid()), *map(str, dirs)],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        start_new_session=True,
    )


def stop_janitor(janitor: subprocess.Popen, timeout: float = 2.0) -> None:
    """Close the janitor's pipe (it removes what is left of its directories and
    exits) and reap it."""
    try:
        if janitor.stdin is not None:
            janitor.stdin.close()
        janitor.wait(timeout)
    except subprocess.TimeoutExpired:
        janitor.kill()
        janitor.wait()
    except OSError:
        pass
