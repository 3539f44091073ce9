"""A hard-killed driver's private Ray temp directory is removed at the next start."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import psutil

from runtime.backends.ray import _TEMP_PREFIX, remove_dead_temp_dirs


def owner_line(pid: int, created: float) -> str:
    return f"{pid} {created}"


def test_dead_owners_dirs_are_removed_live_and_foreign_kept(tmp_path: Path) -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    created = psutil.Process(child.pid).create_time()
    child.wait()
    dead, alive, foreign = (tmp_path / f"{_TEMP_PREFIX}{n}" for n in ("dead", "alive", "foreign"))
    for d in (dead, alive, foreign):
        (d / "session_latest" / "logs").mkdir(parents=True)
    (dead / "owner.pid").write_text(owner_line(child.pid, created))
    me = psutil.Process()
    (alive / "owner.pid").write_text(owner_line(me.pid, me.create_time()))
    assert remove_dead_temp_dirs(tmp_path) == [dead]
    assert not dead.exists() and alive.exists() and foreign.exists()


def test_the_sessions_temp_dir_names_its_owner(ray_session: None) -> None:
    mine = []
    for d in Path(tempfile.gettempdir()).glob(f"{_TEMP_PREFIX}*"):
        owner = d / "owner.pid"
        if owner.exists() and owner.read_text().split()[0] == str(os.getpid()):
            mine.append(d)
    assert len(mine) == 1 and (mine[0] / "session_latest").exists()
