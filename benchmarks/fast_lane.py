"""The fast lane: a hit through a worker while every build slot is busy, and with no load.

    python -m benchmarks.fast_lane [--samples 200] [--long-s 30] [--json PATH] [--rev REV]

Two workers (two build slots each) on the farm's first two engines, the
bench's own Redis database and key prefix (``benchmarks.harness``). A hit
through a worker is a build of an already cached key sent as a task
(``build_signature(...).apply_async().get()``, as chains and messages sent by
name do).

- **no load** (Must show 4): p50 of a hit through a worker (the base pulled,
  so the worker asks the registry for its digest, and ``pull=False``)
  against p50 of a trivial Celery task's round trip on the same farm:
  ``celery.accumulate`` (Celery's own, in every tree) and ``dockyard.ping``
  where the tree has it.
- **all build slots busy** (Must show 3): long builds hold every slot (and
  more wait in the shared queue); hits are sent one after another while
  they run. A tree without a fast lane answers the first hit only when a
  slot frees, so the load is over after one sample there.

``--rev REV`` also runs this same file in a temporary ``git worktree`` of REV
(its workers run REV's code) and prints both trees' figures side by side.
Run it under the farm's test lock; it removes what it made.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import harness

SLOTS_PER_WORKER = 2
EXTRA_LONG_BUILDS = 2  # waiting in the shared queue behind the running ones
WARMUP = 20
PING_TASK = "dockyard.ping"
ACCUMULATE_TASK = "celery.accumulate"


def summary(timings: list[float]) -> dict[str, Any]:
    if not timings:
        return {"samples": 0}
    return {
        "samples": len(timings),
        "p50_ms": round(harness.percentile(timings, 0.50) * 1000, 2),
        "p90_ms": round(harness.percentile(timings, 0.90) * 1000, 2),
        "p99_ms": round(harness.percentile(timings, 0.99) * 1000, 2),
        "max_ms": round(max(timings) * 1000, 2),
    }


def timed(call: Callable[[], Any], samples: int, *, warmup: int = WARMUP) -> list[float]:
    for _ in range(warmup):
        call()
    timings = []
    for _ in range(samples):
        started = time.perf_counter()
        call()
        timings.append(time.perf_counter() - started)
    return timings


def has_fast_lane() -> bool:
    import dockyard.config.settings

    return hasattr(dockyard.config.settings, "fast_queue")


def wait_for_fast_lanes(app: Any, workers: list[Any], timeout_s: float = 60) -> None:
    """Until each host's fast lane worker answers a ping (node ``<host>.fast``)."""
    from dockyard.workers.launcher import wait_for_hosts

    wait_for_hosts(app, [f"{worker.host_id}.fast" for worker in workers], timeout_s=timeout_s, workers=workers)


def running_builds(connection: Any, settings: Any) -> int:
    return sum(1 for _ in connection.scan_iter(match=f"{settings.key_prefix}lease:*", count=1000))


def idle_figures(app: Any, image: str, scratch: Path, samples: int) -> dict[str, Any]:
    from dockyard.tasks.client import build, build_signature

    out: dict[str, Any] = {}
    context = harness.write_context(scratch / "idle", harness.new_round(), sleep_s=0)
    first = build(image, path=str(context), tag="idle", timeout_s=600)
    build(image, path=str(context), tag="idle-nopull", pull=False, timeout_s=600)
    out["first_build"] = {"cache": first["cache"], "host": first["host"]}
    trivial = {"accumulate": ACCUMULATE_TASK}
    if PING_TASK in {name for name in _registered(app)}:
        trivial["ping"] = PING_TASK
    for label, name in trivial.items():
        signature = app.signature(name, args=(1,) if name == ACCUMULATE_TASK else ())
        out[f"trivial_{label}"] = summary(timed(lambda: signature.apply_async().get(timeout=60), samples))
    for label, params in (("hit", {}), ("hit_no_pull", {"pull": False})):
        tag = "idle" if not params else "idle-nopull"
        signature = build_signature(image, path=str(context), tag=tag, **params)
        answers: list[dict[str, Any]] = []

        def hit() -> None:
            answers.append(signature.apply_async().get(timeout=600))  # noqa: B023

        out[label] = summary(timed(hit, samples))
        out[label]["not_hits"] = sum(answer.get("cache") != "hit" for answer in answers)
        out[label]["worker_side_p50_ms"] = worker_side_p50_ms(answers[-samples:])
    for trivial_label in trivial:
        for hit_label in ("hit", "hit_no_pull"):
            out[f"ratio_{hit_label}_p50_over_{trivial_label}_p50"] = round(
                out[hit_label]["p50_ms"] / out[f"trivial_{trivial_label}"]["p50_ms"], 2)
    return out


def worker_side_p50_ms(answers: list[dict[str, Any]]) -> float | None:
    """p50 of the time the task body took on the worker (``duration_s`` of its result)."""
    durations = [float(answer["duration_s"]) for answer in answers if "duration_s" in answer]
    return round(harness.percentile(durations, 0.50) * 1000, 2) if durations else None


def _registered(app: Any) -> list[str]:
    """Task names the workers registered (one inspect round)."""
    replies = app.control.inspect(timeout=2.0).registered() or {}
    return sorted({name.split(" ")[0] for names in replies.values() for name in names})


def loaded_figures(image: str, scratch: Path, workers: int, samples: int, long_s: float) -> dict[str, Any]:
    from dockyard.config.settings import get_settings
    from dockyard.tasks.client import build, build_signature
    from dockyard.tasks.keyspace import redis_for

    settings = get_settings()
    connection = redis_for(settings)
    context = harness.write_context(scratch / "loaded", harness.new_round(), sleep_s=0)
    build(image, path=str(context), tag="loaded", timeout_s=600)
    hit = build_signature(image, path=str(context), tag="loaded")
    for _ in range(WARMUP):
        hit.apply_async().get(timeout=600)
    slots = workers * SLOTS_PER_WORKER
    long_builds = [
        build_signature(image, path=str(harness.write_context(scratch / f"long-{n}", harness.new_round(), sleep_s=long_s)),
                        tag=f"long-{n}").apply_async()
        for n in range(slots + EXTRA_LONG_BUILDS)
    ]
    deadline = time.monotonic() + 120
    while running_builds(connection, settings) < slots and time.monotonic() < deadline:
        time.sleep(0.05)
    busy_at_start = running_builds(connection, settings)
    load_started = time.monotonic()
    timings: list[float] = []
    answers: list[dict[str, Any]] = []
    while len(timings) < samples and not any(each.ready() for each in long_builds):
        started = time.perf_counter()
        answers.append(hit.apply_async().get(timeout=long_s * 4 + 120))
        timings.append(time.perf_counter() - started)
    load_held = not any(each.ready() for each in long_builds)
    sampled_s = time.monotonic() - load_started
    for each in long_builds:
        each.get(timeout=long_s * 4 + 300)
    return {
        "build_slots": slots,
        "long_builds": len(long_builds),
        "long_build_s": long_s,
        "running_when_sampling_began": busy_at_start,
        "hit": {**summary(timings), "not_hits": sum(answer.get("cache") != "hit" for answer in answers),
                "worker_side_p50_ms": worker_side_p50_ms(answers)},
        "every_sample_taken_while_all_slots_busy": load_held,
        "sampling_s": round(sampled_s, 2),
    }


def run(samples: int, long_s: float) -> dict[str, Any]:
    harness.setup_environment()
    from dockyard.workers.app import app

    engine_urls = harness.docker_hosts()[:2]
    run_id = uuid.uuid4().hex[:8]
    image = f"{harness.registry()[0]}/{harness.BENCH_REPOSITORY}/{run_id}-fast-lane"
    out: dict[str, Any] = {"tree_has_fast_lane": has_fast_lane()}
    with harness.temp_dir("dockyard-fast-lane-") as scratch:
        app.control.purge()
        workers = harness.bench_workers(f"bench-{run_id}", engine_urls, scratch, concurrency=SLOTS_PER_WORKER)
        try:
            harness.start_workers(app, workers)
            if out["tree_has_fast_lane"]:
                wait_for_fast_lanes(app, workers)
            out["no_load"] = idle_figures(app, image, scratch, samples)
            out["all_slots_busy"] = loaded_figures(image, scratch, len(workers), samples, long_s)
        except Exception:
            harness.print_log_tails(workers)
            raise
        finally:
            for worker in workers:
                worker.stop()
            app.control.purge()
            harness.remove_bench_images([harness.engine(url) for url in engine_urls], [image])
            harness.delete_bench_keys()
    return out


def flat(figures: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(figures, dict):
        found: dict[str, Any] = {}
        for name, value in figures.items():
            found.update(flat(value, f"{prefix}{name}."))
        return found
    return {prefix[:-1]: figures}


def print_figures(columns: dict[str, dict[str, Any]]) -> None:
    flattened = {label: flat(figures) for label, figures in columns.items()}
    keys = list(dict.fromkeys(key for figures in flattened.values() for key in figures))
    width = max(len(key) for key in keys) + 2
    print(f"{'figure':<{width}}" + "".join(f"{label[:20]:>22}" for label in columns))
    for key in keys:
        print(f"{key:<{width}}" + "".join(f"{str(flattened[label].get(key, '-')):>22}" for label in columns))


def run_in_revision(rev: str, argv: list[str]) -> dict[str, Any]:
    """This file, run in a temporary worktree of ``rev`` (its workers run ``rev``'s code); its figures."""
    here = Path(__file__).resolve()
    repo = here.parent.parent
    scratch = Path(tempfile.mkdtemp(prefix="dockyard-fast-lane-rev-"))
    tree = scratch / "tree"
    try:
        subprocess.run(["git", "-C", str(repo), "worktree", "add", "--detach", "--quiet", str(tree), rev], check=True)
        shutil.copy(here, tree / "benchmarks" / "fast_lane.py")
        figures = scratch / "figures.json"
        env = {**os.environ, "PYTHONPATH": str(tree)}
        subprocess.run([sys.executable, "-m", "benchmarks.fast_lane", *argv, "--json", str(figures)],
                       cwd=tree, env=env, check=True, stdout=sys.stderr)
        result: dict[str, Any] = json.loads(figures.read_text())
        return result
    finally:
        subprocess.run(["git", "-C", str(repo), "worktree", "remove", "--force", str(tree)], check=False)
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=200, help="hits and trivial tasks timed in each figure")
    parser.add_argument("--long-s", type=float, default=30.0, help="length of the long builds holding the slots")
    parser.add_argument("--json", type=Path, help="write the figures as JSON here")
    parser.add_argument("--rev", help="also run this file against git revision REV, side by side")
    args = parser.parse_args(argv)
    columns = {"this tree": run(args.samples, args.long_s)}
    if args.rev:
        columns[args.rev] = run_in_revision(args.rev, ["--samples", str(args.samples), "--long-s", str(args.long_s)])
    print_figures(columns)
    if args.json:
        args.json.write_text(json.dumps(columns if args.rev else columns["this tree"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
