"""Private per-session directories that record their owner process, so that a
later start can tell a crashed driver's leftovers from a live session's.

Used by the object store (shared-memory and spill directories) and the Ray
backend (Ray's temp directory).

>>> path = make_session_dir(Path(tempfile.mkdtemp()) / "dataflow-x")  # doctest: +SKIP
>>> owner_alive((path / OWNER_FILE).read_text())  # doctest: +SKIP
True
"""

from __future__ import annotations

import os
from pathlib import Path

import psutil

OWNER_FILE = "owner.pid"


def make_session_dir(path: Path) -> Path:
    """Create ``path`` (mode 0700, must not exist) holding this process's owner file."""
    path.mkdir(mode=0o700)
    os.chmod(path, 0o700)  # mkdir's mode is masked by the umask
    proc = psutil.Process()
    (path / OWNER_FILE).write_text(f"{proc.pid} {proc.create_time()}")
    return path


def owner_alive(owner_text: str) -> bool:
    """Whether the process an owner file's text names is still running."""
    pid_text, _, created_text = owner_text.partition(" ")
    try:
        proc = psutil.Process(int(pid_text))
        # A recycled pid belongs to a process created later than the owner.
        return abs(proc.create_time() - float(created_text)) < 1.0
    except (ValueError, psutil.NoSuchProcess, psutil.AccessDenied):
        return False
