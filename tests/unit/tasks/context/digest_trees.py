"""Generated context trees for the digest tests: files, directories, links, long names, modes, ignores."""

from __future__ import annotations

import random
import time
from pathlib import Path

OLD_S = 3600  # walks an hour later: every file the test made is outside the racy margin


def make_tree(root: Path, chooser: random.Random) -> str | None:
    """A random context under ``root``; returns the Dockerfile name if the tree has a .dockerignore."""
    root.mkdir(parents=True, exist_ok=True)
    directories = [root]
    for index in range(chooser.randint(0, 6)):
        parent = chooser.choice(directories)
        name = f"dir{index}" if chooser.random() < 0.8 else "d" * chooser.randint(90, 140) + str(index)
        directory = parent / name
        directory.mkdir()
        if chooser.random() < 0.2:
            directory.chmod(0o700)
        directories.append(directory)
    for index in range(chooser.randint(1, 25)):
        parent = chooser.choice(directories)
        long = chooser.random() < 0.15
        path = parent / (("n" * chooser.randint(95, 200) if long else "file") + f"{index}.txt")
        size = chooser.choice([0, 1, 511, 512, 513, chooser.randint(0, 20000)])
        path.write_bytes(chooser.randbytes(size))
        path.chmod(chooser.choice([0o644, 0o600, 0o755, 0o444]))
    for index in range(chooser.randint(0, 3)):
        link = chooser.choice(directories) / f"link{index}"
        target = "file0.txt" if chooser.random() < 0.5 else "../" + "t" * chooser.randint(1, 150)
        link.symlink_to(target)
    (root / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
    if chooser.random() < 0.3:
        (root / ".dockerignore").write_text("**/*3.txt\ndir1\n!dir1/file5.txt\n")
        return "Dockerfile"
    return None


class LaterClock:
    """Walks see the clock ``offset_s`` ahead: files made by the test are then older than the racy margin."""

    def __init__(self, offset_s: float = OLD_S) -> None:
        self.offset_ns = int(offset_s * 1e9)
        self.real = time.time_ns

    def __call__(self) -> int:
        return self.real() + self.offset_ns
