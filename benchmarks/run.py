"""Run dockyard's benchmarks on the real farm and print figures and ratios side by side.

    python -m benchmarks.run [--only a,b,c] [--json PATH]

a. N concurrent identical builds: prefect-docker's step vs dockyard, over the same two engines
b. cache-hit latency: dockyard's fast path, through a worker, the engine's layer-cached rebuild
c. context packing + digest throughput: pack_context vs ``tar | sha256sum``

Expects the farm up and farm.env exported (``bash benchmarks/run.sh`` does both).
Uses its own Redis database (12) and key prefix, and removes what it made:
workers, images on every engine, Redis keys, temporary directories.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from benchmarks import harness
from dockyard.workers.launcher import WorkerProcess

PARTS = ("a", "b", "c")
TARGETS = {
    "a.ratio_dockyard_wall_over_single_engine_build": ("<=", 1.3),
    "b.fast_path_p50_ms": ("<=", 2.0),
    "b.ratio_engine_p50_over_fast_p50": (">=", 50.0),
    "c.ratio_pack_over_tar": (">=", 0.7),
}


class Bench:
    """Shared state of one run: names, engines, workers, scratch space, what to clean up."""

    def __init__(self, scratch: Path) -> None:
        self.run_id = uuid.uuid4().hex[:8]
        self.scratch = scratch
        self.registry = harness.registry()[0]
        self.engine_urls = harness.docker_hosts()
        if len(self.engine_urls) < 2:
            raise SystemExit("the bench needs two engines (DOCKYARD_FARM_DOCKER_HOSTS): run benchmarks/run.sh")
        self.engine_urls = self.engine_urls[:2]
        self.clients = [harness.engine(url) for url in self.engine_urls]
        self.workers: list[WorkerProcess] = []
        self.repositories: list[str] = []

    def image(self, what: str) -> str:
        """A bench image repository (remembered, so its images are removed at the end)."""
        name = f"{self.registry}/{harness.BENCH_REPOSITORY}/{self.run_id}-{what}"
        self.repositories.append(name)
        return name

    def start_workers(self) -> None:
        from dockyard.workers.app import app

        app.control.purge()
        self.workers = harness.bench_workers(f"bench-{self.run_id}", self.engine_urls, self.scratch)
        harness.start_workers(app, self.workers)

    def client_for_host(self, host_id: str) -> Any:
        for worker, client in zip(self.workers, self.clients):
            if worker.host_id == host_id:
                return client
        raise KeyError(f"no bench worker {host_id}")

    def url_for_host(self, host_id: str) -> str:
        for worker in self.workers:
            if worker.host_id == host_id and worker.docker_host is not None:
                return worker.docker_host
        raise KeyError(f"no bench worker {host_id}")

    def stop_workers(self) -> None:
        for worker in self.workers:
            worker.stop()

    def close(self) -> dict[str, Any]:
        """Stop workers, remove images and keys; report what was cleaned."""
        report: dict[str, Any] = {}
        self.stop_workers()
        try:
            from dockyard.workers.app import app

            report["purged_messages"] = app.control.purge()
        except Exception as exc:  # noqa: BLE001
            report["purge_error"] = str(exc)
        report["bench_image_layers_before"] = harness.leftover_bench_images(self.clients)
        report["image_removals"] = harness.remove_bench_images(self.clients, self.repositories)
        report["bench_images_left"] = harness.leftover_bench_images(self.clients)
        report["redis_keys_deleted"] = harness.delete_bench_keys()
        report["redis_keys_left"] = harness.remaining_keys()
        for client in self.clients:
            client.close()
        return report


def _flatten(results: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for part, figures in results.items():
        if not isinstance(figures, dict):
            continue
        for name, value in figures.items():
            if isinstance(value, dict):
                for sub, inner in value.items():
                    flat[f"{part}.{name}_{sub}"] = inner
            flat[f"{part}.{name}"] = value
    return flat


def _verdicts(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    flat = _flatten(results)
    verdicts = {}
    for name, (op, bound) in TARGETS.items():
        if name not in flat:
            continue
        value = flat[name]
        ok = value <= bound if op == "<=" else value >= bound
        verdicts[name] = {"value": value, "target": f"{op} {bound:g}", "met": ok}
    return verdicts


def _row(label: str, *cells: Any, width: int = 44) -> str:
    return label.ljust(width) + "".join(str(cell).rjust(16) for cell in cells)


def print_table(results: dict[str, Any], elapsed_s: float) -> None:
    lines = ["", "=" * 80, "dockyard benchmarks (one run, side by side)", "=" * 80]
    if "a" in results:
        a = results["a"]
        p, d = a["prefect_docker"], a["dockyard"]
        lines += [
            f"a. {a['requests']} concurrent identical builds over {a['engines']} engines (RUN sleep {a['sleep_s']:g}, fresh uuid)",
            _row("", "prefect-docker", "dockyard"),
            _row("  builds executed (engine events)", p["builds_executed"], d["builds_executed"]),
            _row("  builds per engine", "/".join(map(str, p["builds_per_engine"].values())),
                 "/".join(map(str, d["builds_per_engine"].values()))),
            _row("  distinct image ids", p["distinct_image_ids"], d["distinct_image_ids"]),
            _row("  wall time (s)", f"{p['wall_s']:.2f}", f"{d['wall_s']:.2f}"),
            _row("  slowest single request (s)", f"{p['slowest_request_s']:.2f}", f"{d['slowest_request_s']:.2f}"),
            _row("  errors", len(p["errors"]), len(d["errors"])),
            f"  single build, straight on engine 1 (docker-py, pull=True, dockyard's labels): "
            f"{a['single_engine_build_s']:.2f} s   without labels: {a['single_engine_build_plain_s']:.2f} s"
            f"   one dockyard request: {a['single_dockyard_build_s']:.2f} s",
            f"  dockyard cache outcomes: {d.get('cache_outcomes')}   prefect import (untimed, median): "
            f"{p.get('import_prefect_s_median')} s",
            f"  ratio dockyard wall / single engine build   {a['ratio_dockyard_wall_over_single_engine_build']:.2f}"
            "   (target <= 1.3)",
            f"  ratio dockyard wall / single dockyard build {a['ratio_dockyard_wall_over_single_dockyard_build']:.2f}",
            f"  ratio prefect-docker wall / dockyard wall   {a['ratio_prefect_wall_over_dockyard_wall']:.2f}",
            "",
        ]
    if "b" in results:
        b = results["b"]
        lines += [
            "b. cache-hit latency",
            _row("", "p50 ms", "p99 ms", "samples"),
        ]
        for key, label in (("fast_path", "  dockyard fast path (client.build)"),
                           ("fast_path_no_pull", "  fast path, pull=False (no registry HEAD)"),
                           ("through_worker", "  through a worker (signature.get)"),
                           ("engine_cached_rebuild", "  engine layer-cached rebuild (docker-py)")):
            if key in b:
                lines.append(_row(label, f"{b[key]['p50_ms']:.3f}", f"{b[key]['p99_ms']:.3f}", b[key]["samples"]))
        lines += [
            f"  ratio engine p50 / fast path p50   {b['ratio_engine_p50_over_fast_p50']:.1f}x   (target >= 50x;"
            f" fast path p50 target <= 2 ms)",
            f"  ratio worker p50 / fast path p50   {b['ratio_worker_p50_over_fast_p50']:.1f}x",
            f"  ratio engine p50 / worker p50      {b['ratio_engine_p50_over_worker_p50']:.2f}x",
            f"  worker cache outcomes: {b['through_worker'].get('cache_outcomes')}",
            "",
        ]
    if "c" in results:
        c = results["c"]
        lines += [
            f"c. context packing + digest, {c['tree_bytes'] / 1e6:.0f} MB in {c['tree_files']} files, best of {c['repeats']}",
            _row("", "best s", "MB/s"),
            _row("  dockyard.tasks.context.pack.pack_context", f"{min(c['pack_context_s']):.3f}", c["pack_context_mb_s"]),
            _row("  tar -cf - . | sha256sum", f"{min(c['tar_sha256sum_s']):.3f}", c["tar_sha256sum_mb_s"]),
            f"  ratio pack_context / tar|sha256sum throughput   {c['ratio_pack_over_tar']:.2f}   (target >= 0.7)",
            "",
        ]
    verdicts = results.get("targets", {})
    if verdicts:
        lines.append("targets")
        for name, verdict in verdicts.items():
            mark = "met" if verdict["met"] else "MISSED"
            lines.append(_row(f"  {name}", verdict["value"], verdict["target"], mark, width=52))
    lines.append(f"whole run: {elapsed_s:.1f} s")
    print("\n".join(lines), flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="a,b,c", help="parts to run, comma separated (default a,b,c)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--requests", type=int, default=16, help="a: concurrent identical requests (default 16)")
    parser.add_argument("--sleep", type=float, default=3.0, help="a: seconds the RUN step sleeps (default 3)")
    parser.add_argument("--prefect-python", default=os.environ.get(
        "DOCKYARD_BENCH_PREFECT_PYTHON", str(harness.farm_dir() / "bench-prefect-venv" / "bin" / "python")),
        help="python of a venv with prefect-docker (default: <farm dir>/bench-prefect-venv)")
    parser.add_argument("--fast-samples", type=int, default=200, help="b: fast-path samples (default 200)")
    parser.add_argument("--worker-samples", type=int, default=200, help="b: through-worker samples (default 200)")
    parser.add_argument("--engine-samples", type=int, default=30, help="b: engine cached rebuilds (default 30)")
    parser.add_argument("--profile", action="store_true",
                        help="b: print a cProfile of the fast path (always done when its p50 misses 2 ms)")
    parser.add_argument("--tree-mb", type=int, default=200, help="c: size of the generated tree in MB (default 200)")
    parser.add_argument("--tree-files", type=int, default=5000, help="c: files in the tree (default 5000)")
    parser.add_argument("--repeats", type=int, default=3, help="c: best of this many (default 3)")
    parser.add_argument("--redis-db", type=int, default=harness.BENCH_REDIS_DB, help="bench Redis database (default 12)")
    args = parser.parse_args(argv)
    args.parts = [part.strip() for part in args.only.split(",") if part.strip()]
    unknown = set(args.parts) - set(PARTS)
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}; choose from a, b, c")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    harness.setup_environment(redis_db=args.redis_db)
    if "a" in args.parts and not Path(args.prefect_python).exists():
        raise SystemExit(f"no prefect-docker venv at {args.prefect_python}: run `bash benchmarks/run.sh` "
                         "(it creates one) or pass --prefect-python")
    began = time.monotonic()
    results: dict[str, Any] = {}
    with harness.temp_dir("dockyard-bench-") as scratch:
        needs_farm = bool({"a", "b"} & set(args.parts))
        bench = Bench(scratch) if needs_farm else None
        try:
            if bench is not None:
                harness.delete_bench_keys()  # leftovers of an interrupted run
                started = time.monotonic()
                bench.start_workers()
                results["workers_ready_s"] = round(time.monotonic() - started, 2)
                print(f"bench: two workers up in {results['workers_ready_s']} s "
                      f"({', '.join(w.host_id for w in bench.workers)})", flush=True)
            if "a" in args.parts:
                from benchmarks import concurrent_builds

                print("bench: part a (concurrent identical builds) ...", flush=True)
                results["a"] = concurrent_builds.run(bench, requests=args.requests, sleep_s=args.sleep,
                                              prefect_python=args.prefect_python)
            if "b" in args.parts:
                from benchmarks import cache_latency

                print("bench: part b (cache-hit latency) ...", flush=True)
                results["b"] = cache_latency.run(bench, fast_samples=args.fast_samples, worker_samples=args.worker_samples,
                                           engine_samples=args.engine_samples, profile=args.profile)
                if "fast_path_profile" in results["b"]:
                    print(results["b"]["fast_path_profile"], flush=True)
            if "c" in args.parts:
                from benchmarks import context_packing

                print("bench: part c (context packing) ...", flush=True)
                results["c"] = context_packing.run(bench, tree_mb=args.tree_mb, tree_files=args.tree_files,
                                           repeats=args.repeats)
        except BaseException:
            if bench is not None:
                harness.print_log_tails(bench.workers)
            raise
        finally:
            if bench is not None:
                results["cleanup"] = bench.close()
    results["targets"] = _verdicts(results)
    elapsed = time.monotonic() - began
    results["whole_run_s"] = round(elapsed, 1)
    print_table(results, elapsed)
    print(f"cleanup: {results.get('cleanup')}")
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
        print(f"figures written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
