"""One runner per run folder: ``<run_dir>/.runner.lock`` holds the pid and host of the runner
using it. A second runner is refused (exit status 2) with one line naming the holder; a lock
left by a runner that is gone (its pid no longer runs on this host) is taken over, saying so."""
from __future__ import annotations

import json
import os
import socket
import sys
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from .profiles import RunnerError, relative

LOCK_FILE = ".runner.lock"


class FolderInUse(RunnerError):
    """Another live runner holds the run folder (exit status 2)."""


def alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this host."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _holder(path: Path) -> dict | None:
    try:
        held = json.loads(path.read_text())
        return held if isinstance(held, dict) and isinstance(held.get("pid"), int) else {}
    except FileNotFoundError:
        return None
    except ValueError:  # a lock cut short (the runner died while writing it): nobody holds it
        return {}


def _create(path: Path, mine: dict) -> bool:
    """Write the lock if no file is there (atomically: O_EXCL); False when one already is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "w") as f:
        f.write(json.dumps(mine))
    return True


def acquire(run_dir: Path) -> dict:
    """Take the lock of ``run_dir`` for this process, or raise FolderInUse naming its holder."""
    path = Path(run_dir) / LOCK_FILE
    mine = {"pid": os.getpid(), "host": socket.gethostname(),
            "started": datetime.now().astimezone().isoformat(timespec="seconds")}
    for _ in range(3):  # a lost race with another runner taking over the same stale lock: look again
        if _create(path, mine):
            return mine
        held = _holder(path)
        if held is None:
            continue
        if held and (held.get("host") != mine["host"] or alive(held["pid"])):
            where = "this host" if held.get("host") == mine["host"] else f"host {held.get('host')}"
            raise FolderInUse(f"the run folder {relative(run_dir)} is in use by another runner (pid {held['pid']} on "
                              f"{where}, since {held.get('started')}); wait for it, or use another --run-dir "
                              f"(if that runner is gone, delete {relative(path)})")
        who = f"pid {held['pid']}, started {held.get('started')}" if held else "unreadable"
        print(f"note: taking over the stale lock of {relative(run_dir)} ({who}: that runner is gone)",
              file=sys.stderr, flush=True)
        path.unlink(missing_ok=True)
    raise FolderInUse(f"the run folder {relative(run_dir)}: could not take its lock {relative(path)}")


def release(run_dir: Path, mine: dict) -> None:
    """Remove the lock when it is still this process's."""
    path = Path(run_dir) / LOCK_FILE
    if _holder(path) == mine:
        path.unlink(missing_ok=True)


@contextmanager
def run_folder_lock(run_dir: Path):
    """Hold the lock of ``run_dir`` for the duration of the block."""
    mine = acquire(run_dir)
    try:
        yield mine
    finally:
        release(run_dir, mine)
