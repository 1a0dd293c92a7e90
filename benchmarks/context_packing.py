"""Part c: packing and digesting a build context, against ``tar | sha256sum``.

A generated tree of random bytes (default 200 MB in 5,000 files, 50
directories) is packed with ``dockyard.tasks.context.pack.pack_context`` (a normalised tar
in a temporary file, hashed as it is written) and with the shell pipeline
``tar -C tree -cf - . | sha256sum``; best of N each, interleaved, so both read
the tree from the page cache.
"""

from __future__ import annotations

import os
import random
import subprocess
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

MB = 1_000_000


def make_tree(root: Path, *, total_bytes: int, files: int, directories: int = 50, seed: int = 7) -> int:
    """``files`` files of random bytes, sizes spread 0.25x to 1.75x the mean, summing to ``total_bytes``."""
    chooser = random.Random(seed)
    mean = total_bytes / files
    weights = [chooser.uniform(0.25, 1.75) for _ in range(files)]
    scale = total_bytes / (sum(weights) * mean)
    sizes = [int(weight * mean * scale) for weight in weights]
    sizes[-1] += total_bytes - sum(sizes)
    for index, size in enumerate(sizes):
        directory = root / f"d{index % directories:03d}"
        directory.mkdir(parents=True, exist_ok=True)
        (directory / f"f{index:05d}.bin").write_bytes(os.urandom(size))
    return sum(sizes)


def time_pack(tree: Path) -> tuple[float, int]:
    from dockyard.tasks.context.pack import pack_context

    started = time.perf_counter()
    packed = pack_context(tree, max_bytes=10**10)
    elapsed = time.perf_counter() - started
    size = packed.size
    packed.close()
    return elapsed, size


def time_tar(tree: Path) -> float:
    started = time.perf_counter()
    subprocess.run(
        ["bash", "-c", 'set -o pipefail; tar -C "$1" -cf - . | sha256sum', "bench", str(tree)],
        check=True, stdout=subprocess.DEVNULL,
    )
    return time.perf_counter() - started


def run(bench: Any, *, tree_mb: int, tree_files: int, repeats: int) -> dict[str, Any]:
    with harness.temp_dir("dockyard-bench-tree-") as tree:
        started = time.monotonic()
        total = make_tree(tree, total_bytes=tree_mb * MB, files=tree_files)
        generated_s = time.monotonic() - started
        pack_times, tar_times = [], []
        packed_size = 0
        for _ in range(repeats):
            tar_times.append(time_tar(tree))
            elapsed, packed_size = time_pack(tree)
            pack_times.append(elapsed)
    pack_best, tar_best = min(pack_times), min(tar_times)
    return {
        "tree_bytes": total, "tree_files": tree_files, "generate_s": round(generated_s, 2),
        "packed_bytes": packed_size, "repeats": repeats,
        "pack_context_s": [round(t, 3) for t in pack_times],
        "tar_sha256sum_s": [round(t, 3) for t in tar_times],
        "pack_context_mb_s": round(total / pack_best / MB, 1),
        "tar_sha256sum_mb_s": round(total / tar_best / MB, 1),
        "ratio_pack_over_tar": round(tar_best / pack_best, 3),
    }
