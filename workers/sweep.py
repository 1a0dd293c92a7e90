"""Sweeping the private temporary directories that dead worker processes left behind.

A pool process writes a build context (``dockyard-context-<pid>-*``), build
secrets (``dockyard-secrets-<pid>-*``) and a Docker config
(``dockyard-docker-config-<pid>-*``) to directories of the temporary directory
and removes them when the call ends. A process killed with SIGKILL cannot; the
pid in the name tells the sweep, run when a worker starts, which ones belong
to processes that no longer exist. Directories of live processes, of other
users, or without a pid in their name are left alone.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import tempfile
from pathlib import Path

from dockyard.workers.launcher import alive

logger = logging.getLogger("dockyard.sweep")

KINDS = ("context", "secrets", "docker-config")  # the private directories tasks/ creates
_NAME = re.compile(r"^dockyard-(?:" + "|".join(map(re.escape, KINDS)) + r")-(\d+)-")


def owner_pid(name: str) -> int | None:
    """The pid of the process that created a private directory named ``name``, or None."""
    match = _NAME.match(name)
    return int(match.group(1)) if match else None


def left_behind(root: Path | None = None) -> list[Path]:
    """This user's private directories in ``root`` (the temporary directory) whose creator is gone."""
    root = Path(tempfile.gettempdir()) if root is None else root
    found = []
    try:
        entries = list(root.iterdir())
    except OSError:
        return []
    for entry in entries:
        pid = owner_pid(entry.name)
        if pid is None or alive(pid):
            continue
        try:
            if entry.is_dir() and not entry.is_symlink() and entry.stat().st_uid == os.getuid():
                found.append(entry)
        except OSError:
            continue  # removed meanwhile
    return sorted(found)


def sweep(root: Path | None = None) -> list[Path]:
    """Remove the private directories dead processes left in ``root``; return those removed."""
    removed = []
    for path in left_behind(root):
        shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            removed.append(path)
    if removed:
        logger.info("removed %d directories left by dead processes: %s", len(removed), [p.name for p in removed])
    return removed
