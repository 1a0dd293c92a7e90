"""A caller's memory over many cached builds: N calls of ``dockyard.tasks.client.build``, RSS as it goes.

    python -m benchmarks.client_memory [--builds 20000] [--every 5000] [--json PATH]

Two workers on the farm's first two engines, the bench's own Redis database
and key prefix (``benchmarks.harness``). One build makes the image; then a
caller process of its own (the bench's team, ``benchmarks.harness``) asks for the
same build ``--builds`` times in a loop: each is answered from the cache. The
caller prints its RSS (``VmRSS`` of ``/proc/self/status``) at the start, every
``--every`` builds and at the end. A caller that keeps something per build
grows; one that does not stays flat after its first few thousand calls.
Run it under the lock file the farm's users share (``flock LOCKFILE``), if any; it removes what it made.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import harness

CALLER_FLAG = "--caller"  # the child process: the caller loop itself


def rss_kib() -> int:
    """This process's resident set now (``VmRSS``), in KiB; the peak (``ru_maxrss``) where /proc is missing."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def caller_loop(image: str, context: str, builds: int, every: int) -> dict[str, Any]:
    """In the caller process: ``builds`` cached builds, the RSS at the start, every ``every`` and at the end."""
    from dockyard.tasks.client import build

    first = build(image, path=context, tag="mem", timeout_s=600)  # a hit already: imports and connections warm
    samples: list[dict[str, Any]] = [{"builds": 0, "rss_kib": rss_kib()}]
    print(json.dumps({"sample": samples[-1]}), file=sys.stderr, flush=True)
    not_hits = 0
    started = time.perf_counter()
    for done in range(1, builds + 1):
        answer = build(image, path=context, tag="mem")
        not_hits += answer.get("cache") != "hit"
        if done % every == 0 or done == builds:
            samples.append({"builds": done, "rss_kib": rss_kib(), "elapsed_s": round(time.perf_counter() - started, 1)})
            print(json.dumps({"sample": samples[-1]}), file=sys.stderr, flush=True)
    return {
        "first_cache": first.get("cache"),
        "builds": builds,
        "not_hits": not_hits,
        "samples": samples,
        "rss_start_kib": samples[0]["rss_kib"],
        "rss_end_kib": samples[-1]["rss_kib"],
        "rss_growth_kib": samples[-1]["rss_kib"] - samples[0]["rss_kib"],
        "peak_rss_kib": int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss),
    }


def run(builds: int, every: int) -> dict[str, Any]:
    harness.setup_environment()
    from dockyard.tasks.client import build
    from dockyard.workers.app import app

    engine_urls = harness.docker_hosts()[:2]
    run_id = uuid.uuid4().hex[:8]
    image = f"{harness.registry()[0]}/{harness.BENCH_REPOSITORY}/{run_id}-client-memory"
    with harness.temp_dir("dockyard-client-memory-") as scratch:
        workers = harness.bench_workers(f"bench-{run_id}", engine_urls, scratch)
        try:
            harness.start_workers(app, workers)
            context = harness.write_context(scratch / "ctx", run_id, sleep_s=0)
            made = build(image, path=str(context), tag="mem", timeout_s=600)
            child = subprocess.run(
                [sys.executable, "-m", "benchmarks.client_memory", CALLER_FLAG, image, str(context), str(builds), str(every)],
                cwd=harness.REPO, env=dict(os.environ), stdout=subprocess.PIPE, text=True, check=True,
            )
            lines = [json.loads(line) for line in child.stdout.splitlines() if line.startswith("{")]
            figures: dict[str, Any] = next(line["result"] for line in lines if "result" in line)
            return {"image_built_on": made.get("host"), **figures}
        except Exception:
            harness.print_log_tails(workers)
            raise
        finally:
            for worker in workers:
                worker.stop()
            harness.remove_bench_images([harness.engine(url) for url in engine_urls], [image])
            harness.delete_bench_keys()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == [CALLER_FLAG]:
        image, context, builds, every = argv[1], argv[2], int(argv[3]), int(argv[4])
        print(json.dumps({"result": caller_loop(image, context, builds, every)}), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=20000)
    parser.add_argument("--every", type=int, default=5000)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    figures = run(args.builds, args.every)
    for sample in figures["samples"]:
        print(f"after {sample['builds']:>7} builds: RSS {sample['rss_kib'] / 1024:8.1f} MiB", file=sys.stderr)
    for name, value in figures.items():
        if name != "samples":
            print(f"{name:24} {value}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
