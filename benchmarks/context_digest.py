"""A fast-path hit on a big unchanged project: a stat walk with the digest cache against a full pack.

    python -m benchmarks.context_digest [--mb 200] [--files 5000] [--repeats 5] [--farm] [--json PATH]

A tree of random bytes (default 200 MB in 5,000 files, 50 directories, as
``benchmarks.context_packing`` makes it, plus a Dockerfile) is generated in
a temporary directory. Side by side in one run, interleaved, best of
``--repeats`` each (the page cache warm for both):

- ``full pack``: ``dockyard.tasks.context.pack.pack_context``, what every call cost before
  the digest cache (packed and hashed);
- ``fast-path digest``: ``dockyard.tasks.context.scan.scan_context`` on the unchanged
  tree with a warm digest cache (a stat walk, no file read);
- ``prepare_build``: the whole caller-side preparation ``dockyard.tasks.client.build``
  does before it looks in the cache (digest walk, Dockerfile, key);

and once each, the cold walk (empty cache: every file read) and a walk
after one file changed. With ``--farm`` (the farm up, run under the farm
lock), one worker builds the tree once, then ``dockyard.tasks.client.build`` hits
are timed end to end against full packs, again side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.context_packing import MB, make_tree

TARGET_RATIO = 0.1


def best(timings: list[float]) -> float:
    return min(timings)


def timed(call: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    answer = call()
    return time.perf_counter() - started, answer


def full_pack(tree: Path) -> str:
    from dockyard.tasks.context.pack import pack_context

    with pack_context(tree, dockerfile="Dockerfile", max_bytes=10**11) as packed:
        return packed.digest


def offline(tree: Path, cache_dir: Path, repeats: int) -> dict[str, Any]:
    """Full pack against the digest walk and prepare_build, interleaved; cold and one-change walks once."""
    from dockyard.config.settings import Settings
    from dockyard.tasks.context.scan import scan_context
    from dockyard.tasks.prepare import prepare_build

    settings = Settings(digest_cache_dir=str(cache_dir), context_max_bytes=10**11)

    def walk() -> Any:
        return scan_context(tree, dockerfile="Dockerfile", max_bytes=10**11, cache_dir=str(cache_dir))

    def prepare() -> str:
        spec, packed = prepare_build({"image_name": "bench/app", "path": str(tree)}, settings)
        packed.close()
        return spec.context_digest

    reference = full_pack(tree)  # reads the tree into the page cache
    time.sleep(2.5)  # the files are older than the cache's racy margin when the cold walk runs
    cold_s, cold = timed(walk)
    assert cold.digest == reference, "the walk's digest is the pack's"
    packs, walks, prepares = [], [], []
    files_read = []
    for _ in range(repeats):
        elapsed, digest = timed(lambda: full_pack(tree))
        packs.append(elapsed)
        assert digest == reference
        elapsed, scan = timed(walk)
        walks.append(elapsed)
        files_read.append(scan.files_read)
        assert scan.digest == reference
        elapsed, digest = timed(prepare)
        prepares.append(elapsed)
        assert digest == reference
    changed = sorted(tree.rglob("*.bin"))[len(files_read) % 50]
    changed.write_bytes(changed.read_bytes()[::-1])
    changed_s, after = timed(walk)
    assert after.digest != reference and after.digest == full_pack(tree)
    return {
        "full_pack_s": [round(t, 4) for t in packs],
        "fast_path_digest_s": [round(t, 4) for t in walks],
        "prepare_build_s": [round(t, 4) for t in prepares],
        "fast_path_files_read": max(files_read),
        "cold_walk_s": round(cold_s, 4),
        "cold_walk_files_read": cold.files_read,
        "one_file_changed_walk_s": round(changed_s, 4),
        "one_file_changed_files_read": after.files_read,
        "ratio_fast_path_digest_over_full_pack": round(best(walks) / best(packs), 4),
        "ratio_prepare_build_over_full_pack": round(best(prepares) / best(packs), 4),
    }


def on_farm(tree: Path, repeats: int) -> dict[str, Any]:
    """One worker builds the tree once; then ``dockyard.tasks.client.build`` hits, interleaved with full packs."""
    from dockyard.tasks import client
    from dockyard.workers.app import app

    (tree / "Dockerfile").write_text(f"FROM {harness.base_image()}\nRUN echo {uuid.uuid4().hex} > /built\n")
    image = f"{harness.registry()[0]}/{harness.BENCH_REPOSITORY}/digest-{uuid.uuid4().hex[:8]}"
    engines = harness.docker_hosts()[:1]
    with harness.temp_dir("dockyard-digest-logs-") as logs:
        workers = harness.bench_workers("digest", engines, logs)
        harness.start_workers(app, workers)
        try:
            first_s, first = timed(lambda: client.build(image, path=str(tree), tag="d", timeout_s=1200))
            time.sleep(2.5)  # past the racy margin of the walk that first cached the tree
            client.build(image, path=str(tree), tag="d")
            packs, hits, outcomes = [], [], []
            for _ in range(repeats):
                elapsed, _digest = timed(lambda: full_pack(tree))
                packs.append(elapsed)
                elapsed, answer = timed(lambda: client.build(image, path=str(tree), tag="d"))
                hits.append(elapsed)
                outcomes.append(answer["cache"])
            return {
                "first_build_s": round(first_s, 2),
                "first_build_cache": first["cache"],
                "client_build_hit_s": [round(t, 4) for t in hits],
                "client_build_outcomes": sorted(set(outcomes)),
                "full_pack_s": [round(t, 4) for t in packs],
                "ratio_client_build_hit_over_full_pack": round(best(hits) / best(packs), 4),
            }
        except BaseException:
            harness.print_log_tails(workers)
            raise
        finally:
            for worker in workers:
                worker.stop()
            harness.remove_bench_images([harness.engine(url) for url in engines], [image])
            harness.delete_bench_keys()


def run(*, tree_mb: int, tree_files: int, repeats: int, farm: bool) -> dict[str, Any]:
    with harness.temp_dir("dockyard-digest-bench-") as scratch:
        if farm:
            harness.setup_environment()
            os.environ["DOCKYARD_DIGEST_CACHE_DIR"] = str(scratch / "client-digest-cache")  # not the user's
        tree = scratch / "tree"
        total = make_tree(tree, total_bytes=tree_mb * MB, files=tree_files)
        (tree / "Dockerfile").write_text("FROM scratch\nCOPY . /app\n")
        figures: dict[str, Any] = {"tree_bytes": total, "tree_files": tree_files, "repeats": repeats}
        figures["offline"] = offline(tree, scratch / "digest-cache", repeats)
        if farm:
            figures["farm"] = on_farm(tree, repeats)
    return figures


def report(figures: dict[str, Any]) -> str:
    off = figures["offline"]
    lines = [
        f"tree: {figures['tree_bytes'] / MB:.0f} MB in {figures['tree_files']} files; best of {figures['repeats']}, interleaved",
        f"  full pack (pack_context)                {best(off['full_pack_s']):8.4f} s   {off['full_pack_s']}",
        f"  fast-path digest (warm cache)           {best(off['fast_path_digest_s']):8.4f} s   {off['fast_path_digest_s']}"
        f"   files read: {off['fast_path_files_read']}",
        f"  prepare_build (warm cache)              {best(off['prepare_build_s']):8.4f} s   {off['prepare_build_s']}",
        f"  cold walk (empty cache)                 {off['cold_walk_s']:8.4f} s   files read: {off['cold_walk_files_read']}",
        f"  walk after one file changed             {off['one_file_changed_walk_s']:8.4f} s   files read: {off['one_file_changed_files_read']}",
        f"  ratio fast-path digest / full pack      {off['ratio_fast_path_digest_over_full_pack']:8.4f}     (target <= {TARGET_RATIO})",
        f"  ratio prepare_build / full pack         {off['ratio_prepare_build_over_full_pack']:8.4f}",
    ]
    if "farm" in figures:
        farm = figures["farm"]
        lines += [
            f"farm: first build {farm['first_build_s']} s ({farm['first_build_cache']}), then hits {farm['client_build_outcomes']}",
            f"  full pack (pack_context)                {best(farm['full_pack_s']):8.4f} s   {farm['full_pack_s']}",
            f"  dockyard.tasks.client.build hit                  {best(farm['client_build_hit_s']):8.4f} s   {farm['client_build_hit_s']}",
            f"  ratio client.build hit / full pack      {farm['ratio_client_build_hit_over_full_pack']:8.4f}     (target <= {TARGET_RATIO})",
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--mb", type=int, default=200)
    parser.add_argument("--files", type=int, default=5000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--farm", action="store_true", help="also time dockyard.tasks.client.build hits on the farm")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = run(tree_mb=args.mb, tree_files=args.files, repeats=args.repeats, farm=args.farm)
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
