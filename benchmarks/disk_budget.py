"""The disk budget: ten distinct builds on one host whose budget is three images' worth.

    python -m benchmarks.disk_budget [--builds 10] [--keep 3] [--blob-mib 1] [--json PATH]

Run under the farm's test lock. Two rounds, side by side in one run, each
with a worker of its own host id and build queue on the farm's first engine:

- ``no budget``: ``DOCKYARD_DISK_BUDGET_BYTES=0``, what the host did before
  the budget existed (nothing is ever removed);
- ``budget``: the budget set to ``--keep`` images' worth.

Each build adds one layer of ``--blob-mib`` fresh MiB to the farm's base
image. The figures: the bytes the host's dockyard images hold (layers
counted once, base layers not, as the budget counts them; and by the
engine's own image sizes over the base) after the builds, against the
budget; then each key requested again, most recent first (a build, and a
push of the image its first build answered): hits, rebuilds, errors.
Everything it made is removed.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from benchmarks import harness

MIB = 1024 * 1024


def project(root: Path, round_id: str, blob_bytes: int) -> Path:
    """A context: the base image, the bench's round label, and a fresh blob as its one layer."""
    root.mkdir(parents=True)
    (root / "Dockerfile").write_text(f"FROM {harness.base_image()}\nLABEL {harness.ROUND_LABEL}={round_id}\nCOPY blob /blob\n")
    (root / "blob").write_bytes(os.urandom(blob_bytes))
    return root


def held_bytes(engine: Any, image_ids: list[str], base_size: int) -> tuple[int, int]:
    """(images present, their bytes over the base by the engine's image sizes)."""
    count = total = 0
    for image_id in dict.fromkeys(image_ids):
        try:
            size = int(engine.images.get(image_id).attrs["Size"])
        except Exception:  # noqa: BLE001 - docker's ImageNotFound: removed
            continue
        count, total = count + 1, total + size - base_size
    return count, total


def counted_bytes(connection: Any, settings: Any, engine: Any, host_id: str) -> int:
    """The host's dockyard images as the budget counts them."""
    from dockyard.tasks.farm.disk_budget import host_images

    return host_images(connection, settings, engine, host_id).total()


def settle(engine: Any, image_ids: list[str], base_size: int, budget: int, timeout_s: float = 20.0) -> tuple[int, int]:
    """The images' bytes once the worker's pass is done (or nothing more changes for 3 s)."""
    deadline = time.monotonic() + timeout_s
    last, steady_since = held_bytes(engine, image_ids, base_size), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.25)
        now = held_bytes(engine, image_ids, base_size)
        if now != last:
            last, steady_since = now, time.monotonic()
        elif (budget and now[1] <= budget) or time.monotonic() - steady_since > 3.0:
            break
    return last


def one_round(name: str, budget: int, builds: int, blob_bytes: int, scratch: Path, docker_host: str) -> dict[str, Any]:
    from dockyard.tasks.celery_app import create_celery
    from dockyard.config.settings import get_settings
    from dockyard.tasks import client
    from dockyard.tasks.keyspace import redis_for
    from dockyard.workers.app import app
    from dockyard.workers.launcher import WorkerProcess

    settings = get_settings()
    connection = redis_for(settings)
    round_id = harness.new_round()
    host_id = f"bench-disk-{name}-{round_id[:6]}"
    queue = f"dockyard-bench.{host_id}"
    caller = create_celery(settings.model_copy(update={"build_queue": queue}))
    reg, user, password = harness.registry()
    credentials = {"username": user, "password": password, "registry_url": reg}
    repo = f"{reg}/{harness.BENCH_REPOSITORY}/disk-{name}-{round_id[:8]}"
    engine = harness.engine(docker_host)
    worker = WorkerProcess(
        host_id, docker_host, scratch / f"{name}.log",
        {"DOCKYARD_METRICS_PORT": "0", "DOCKYARD_BUILD_QUEUE": queue, "DOCKYARD_DISK_BUDGET_BYTES": str(budget)},
        2, cwd=harness.REPO,
    )
    harness.start_workers(app, [worker])
    try:
        contexts = [project(scratch / f"{name}-{n}", round_id, blob_bytes) for n in range(builds)]
        started = time.monotonic()
        first = [client.build(repo, path=str(ctx), tag=f"v{n}", app=caller, timeout_s=600) for n, ctx in enumerate(contexts)]
        build_s = time.monotonic() - started
        ids = [result["image_id"] for result in first]
        base_size = int(engine.images.get(harness.base_image()).attrs["Size"])
        built = len(ids) * blob_bytes
        kept, held = settle(engine, ids, base_size, budget)
        counted = counted_bytes(connection, settings, engine, host_id)
        answers = {"hit": 0, "rebuilt": 0, "error": 0}
        errors: list[str] = []
        later: list[str] = []
        started = time.monotonic()
        for n in reversed(range(builds)):
            try:
                again = client.build(repo, path=str(contexts[n]), tag=f"v{n}", app=caller, timeout_s=600)
                later.append(again["image_id"])
                pushed = client.push(repo, tag=f"v{n}", image_id=ids[n], credentials=credentials, app=caller, timeout_s=600)
                if not pushed.get("digest"):
                    raise RuntimeError(f"push of v{n} returned no digest")
                answers["hit" if again["cache"] == "hit" else "rebuilt"] += 1
            except Exception as exc:  # noqa: BLE001 - counted and shown
                answers["error"] += 1
                errors.append(f"v{n}: {type(exc).__name__}: {exc}")
        again_s = time.monotonic() - started
        kept_after, held_after = settle(engine, [*ids, *later], base_size, budget)
        return {
            "round": name,
            "budget_bytes": budget,
            "built_bytes": built,
            "images_kept_after_builds": kept,
            "held_bytes_after_builds": held,
            "counted_bytes_after_builds": counted,
            "within_budget_after_builds": (held <= budget) if budget else None,
            "requests_again": answers,
            "held_bytes_after_requests": held_after,
            "images_kept_after_requests": kept_after,
            "builds_s": round(build_s, 2),
            "requests_again_s": round(again_s, 2),
            "errors": errors,
        }
    finally:
        worker.stop()
        harness.remove_bench_images([engine], [repo])
        engine.close()


def run(builds: int, keep: int, blob_mib: float) -> list[dict[str, Any]]:
    harness.setup_environment()
    blob_bytes = int(blob_mib * MIB)
    budget = keep * blob_bytes + 64 * 1024  # ``keep`` images' worth, not one more
    docker_host = harness.docker_hosts()[0]
    with harness.temp_dir("dockyard-disk-budget-") as scratch:
        try:
            return [
                one_round("nobudget", 0, builds, blob_bytes, scratch, docker_host),
                one_round("budget", budget, builds, blob_bytes, scratch, docker_host),
            ]
        finally:
            harness.delete_bench_keys()


def report(rounds: list[dict[str, Any]]) -> None:
    print(f"{'':34}{'no budget (before)':>22}{'budget':>22}")
    rows = [
        ("budget (bytes)", lambda r: r["budget_bytes"] or "none"),
        ("built, the images' own layers", lambda r: r["built_bytes"]),
        ("held after the builds (engine)", lambda r: r["held_bytes_after_builds"]),
        ("held after the builds (counted)", lambda r: r["counted_bytes_after_builds"]),
        ("images kept after the builds", lambda r: r["images_kept_after_builds"]),
        ("within budget", lambda r: "n/a" if r["within_budget_after_builds"] is None else r["within_budget_after_builds"]),
        ("keys again: hits", lambda r: r["requests_again"]["hit"]),
        ("keys again: rebuilds", lambda r: r["requests_again"]["rebuilt"]),
        ("keys again: errors", lambda r: r["requests_again"]["error"]),
        ("held after the requests (engine)", lambda r: r["held_bytes_after_requests"]),
        ("the builds (s)", lambda r: r["builds_s"]),
        ("builds + pushes again (s)", lambda r: r["requests_again_s"]),
    ]
    for label, value in rows:
        print(f"{label:34}{value(rounds[0])!s:>22}{value(rounds[1])!s:>22}")
    budget = rounds[1]
    if budget["budget_bytes"]:
        print(f"held / budget with the budget: {budget['held_bytes_after_builds'] / budget['budget_bytes']:.2f}; "
              f"without: {rounds[0]['held_bytes_after_builds'] / budget['budget_bytes']:.2f}")
    for each in rounds:
        for error in each["errors"]:
            print(f"error ({each['round']}): {error}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=10)
    parser.add_argument("--keep", type=int, default=3, help="the budget in images' worth")
    parser.add_argument("--blob-mib", type=float, default=1.0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    rounds = run(args.builds, args.keep, args.blob_mib)
    report(rounds)
    if args.json:
        args.json.write_text(json.dumps(rounds, indent=1))
    return 0 if all(not each["errors"] for each in rounds) else 1


if __name__ == "__main__":
    raise SystemExit(main())
