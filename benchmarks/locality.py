"""Locality and scaling of builds over three hosts against one (the issue's Must show 1 and 2).

    python -m benchmarks.locality [--only 1,2] [--slow-s 6] [--build-s 3] [--json PATH]

1. Locality: a project whose Dockerfile has a slow step (``RUN sleep 6``)
   and then ``COPY app.txt`` is built 7 times in a row, one line of
   ``app.txt`` changed each time, on three hosts and on one host. The slow
   step's runs are counted from the engines' events (started containers
   carrying the round's label: only the RUN step starts one); the mean build
   time (the caller's round trip of ``dockyard.tasks.client.build``) is compared.
2. Scaling: 12 distinct builds of equal length (``RUN sleep 3``) sent at once
   over three hosts and over one host; then, over three hosts, 24 builds of
   4 lineages (6 one-line changes each, the lineages built once before,
   untimed) against 24 distinct builds. Their slow step comes after the
   changed file, so every build is equally long and only the spread over
   the hosts counts.

Each run uses fresh round ids (no engine or dockyard cache holds its
layers). It drives the farm through ``dockyard.tasks.client`` alone (no module of
placement), so it measures whatever tree it runs in. It needs three
engines: ``DOCKYARD_FARM_HOSTS=3 . workers/farm_env.sh`` first. Workers: one
per engine, concurrency 2, the bench's database and key prefix; everything
it made is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import harness

BUILDS_IN_SEQUENCE = 7
APP_LINES = 10
DISTINCT_BUILDS = 12
LINEAGES = 4
BUILDS_PER_LINEAGE = 6
TIMEOUT_S = 600
TARGETS = {
    "locality.three_hosts.slow_step_runs": ("==", 1),
    "locality.ratio_mean_three_over_one": ("<=", 1.3),
    "scaling.ratio_one_over_three_hosts": (">=", 2.5),
    "scaling.ratio_lineages_over_distinct": ("<=", 1.3),
}


class Farm:
    """The bench's workers (one per engine), images and names."""

    def __init__(self, scratch: Path, engines: list[str]) -> None:
        from dockyard.workers.app import app

        self.app = app
        self.run = uuid.uuid4().hex[:8]
        self.scratch = scratch
        self.registry = harness.registry()[0]
        self.engine_urls = engines
        self.clients = [harness.engine(url) for url in engines]
        self.workers = harness.bench_workers(f"loc-{self.run}", engines, scratch)
        self.repositories: list[str] = []
        app.control.purge()

    def start(self, count: int) -> None:
        """Until the first ``count`` workers run (starting those not running yet)."""
        pending = [worker for worker in self.workers[:count] if not worker.running()]
        harness.start_workers(self.app, pending)

    def image(self, what: str) -> str:
        name = f"{self.registry}/{harness.BENCH_REPOSITORY}/{self.run}-{what}"
        self.repositories.append(name)
        return name

    def close(self) -> dict[str, Any]:
        for worker in self.workers:
            worker.stop()
        report = {
            "purged_messages": self.app.control.purge(),
            "images_removed": harness.remove_bench_images(self.clients, self.repositories),
            "bench_images_left": harness.leftover_bench_images(self.clients),
            "redis_keys_deleted": harness.delete_bench_keys(),
        }
        for client in self.clients:
            client.close()
        return report


def app_text(version: int) -> str:
    """``app.txt`` of one version: line ``version % APP_LINES`` changed."""
    return "".join(f"line {n} {'v' + str(version) if n == version % APP_LINES else ''}\n" for n in range(APP_LINES))


def locality_project(directory: Path, round_id: str, slow_s: float) -> Path:
    """The slow step first (labelled with the round), then the app file."""
    directory.mkdir(parents=True)
    (directory / "Dockerfile").write_text(
        f"FROM {harness.base_image()}\nLABEL {harness.ROUND_LABEL}={round_id}\n"
        f"RUN sleep {slow_s:g} && echo {round_id} > /deps\nCOPY app.txt /app.txt\n"
    )
    (directory / "app.txt").write_text(app_text(0))
    return directory


def equal_project(directory: Path, round_id: str, build_s: float) -> Path:
    """The app file first, then the slow step: every version is a full, equally long build."""
    directory.mkdir(parents=True)
    (directory / "Dockerfile").write_text(
        f"FROM {harness.base_image()}\nLABEL {harness.ROUND_LABEL}={round_id}\n"
        f"COPY app.txt /app.txt\nRUN sleep {build_s:g} && cat /app.txt > /out\n"
    )
    (directory / "app.txt").write_text(app_text(0))
    return directory


def sequence(farm: Farm, label: str, slow_s: float) -> dict[str, Any]:
    """7 successive one-line changes of one project, one build at a time."""
    from dockyard.tasks.client import build

    round_id = harness.new_round()
    directory = locality_project(farm.scratch / f"loc-{label}-{round_id[:8]}", round_id, slow_s)
    image = farm.image(f"loc-{label}")
    since = time.time()
    seconds, hosts, sources = [], [], []
    for version in range(BUILDS_IN_SEQUENCE):
        (directory / "app.txt").write_text(app_text(version))
        started = time.monotonic()
        result = build(image, path=str(directory), tag=f"v{version}", timeout_s=TIMEOUT_S)
        seconds.append(time.monotonic() - started)
        hosts.append(str(result["host"]))
        sources.append(str(result["cache"]))
    counted = harness.count_round(farm.clients, round_id, since, time.time())
    return {
        "slow_step_runs": counted.runs,
        "slow_step_runs_per_engine": counted.starts,
        "hosts": [host.rsplit("-", 1)[-1] for host in hosts],  # worker number
        "cache": dict(Counter(sources)),
        "build_s": [round(each, 3) for each in seconds],
        "mean_build_s": round(statistics.mean(seconds), 3),
    }


def at_once(requests: list[tuple[str, Path, str]]) -> dict[str, Any]:
    """Every request ``(image, directory, tag)`` sent at the same instant; wall until the last answer."""
    from dockyard.tasks.client import build

    started = time.monotonic()

    def one(request: tuple[str, Path, str]) -> dict[str, Any]:
        image, directory, tag = request
        return dict(build(image, path=str(directory), tag=tag, timeout_s=TIMEOUT_S))

    with ThreadPoolExecutor(len(requests)) as pool:
        results = list(pool.map(one, requests))
    return {
        "builds": len(results),
        "wall_s": round(time.monotonic() - started, 3),
        "per_host": dict(sorted(Counter(str(each["host"]).rsplit("-", 1)[-1] for each in results).items())),
        "cache": dict(Counter(str(each["cache"]) for each in results)),
    }


def distinct_builds(farm: Farm, label: str, count: int, build_s: float) -> dict[str, Any]:
    """``count`` different projects of equal length, at once."""
    requests = []
    for index in range(count):
        round_id = harness.new_round()
        directory = equal_project(farm.scratch / f"{label}-{index}-{round_id[:8]}", round_id, build_s)
        requests.append((farm.image(f"{label}-{index}"), directory, "x"))
    return at_once(requests)


def lineage_builds(farm: Farm, build_s: float) -> dict[str, Any]:
    """4 projects built once each (untimed), then 6 one-line changes of each, all 24 at once."""
    from dockyard.tasks.client import build

    projects = []
    for index in range(LINEAGES):
        round_id = harness.new_round()
        directory = equal_project(farm.scratch / f"lin-{index}-{round_id[:8]}", round_id, build_s)
        image = farm.image(f"lin-{index}")
        build(image, path=str(directory), tag="v0", timeout_s=TIMEOUT_S)
        projects.append((image, directory))
    requests = []
    for index, (image, directory) in enumerate(projects):
        for version in range(1, BUILDS_PER_LINEAGE + 1):
            copy = farm.scratch / f"lin-{index}-v{version}"
            copy.mkdir()
            (copy / "Dockerfile").write_bytes((directory / "Dockerfile").read_bytes())
            (copy / "app.txt").write_text(app_text(version))
            requests.append((image, copy, f"v{version}"))
    return at_once(requests)


def ratio(numerator: float, denominator: float) -> float:
    return round(numerator / denominator, 3) if denominator else float("nan")


def verdicts(figures: dict[str, Any]) -> dict[str, Any]:
    found = {}
    for name, (op, bound) in TARGETS.items():
        part, *path = name.split(".")
        value: Any = figures.get(part, {})
        for step in path:
            value = value.get(step) if isinstance(value, dict) else None
        if value is None:
            continue
        met = value == bound if op == "==" else value <= bound if op == "<=" else value >= bound
        found[name] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    return found


def run(parts: set[str], slow_s: float, build_s: float) -> dict[str, Any]:
    harness.setup_environment()
    engines = harness.docker_hosts()
    if len(engines) < 3:
        raise SystemExit("locality needs three engines: run `DOCKYARD_FARM_HOSTS=3 . workers/farm_env.sh` first")
    figures: dict[str, Any] = {"slow_s": slow_s, "build_s": build_s}
    with harness.temp_dir("dockyard-locality-") as scratch:
        farm = Farm(scratch, engines[:3])
        try:
            farm.start(1)
            if "1" in parts:
                figures["locality"] = {"one_host": sequence(farm, "one", slow_s)}
            if "2" in parts:
                figures["scaling"] = {"one_host": distinct_builds(farm, "d1", DISTINCT_BUILDS, build_s)}
            farm.start(3)
            if "1" in parts:
                loc = figures["locality"]
                loc["three_hosts"] = sequence(farm, "three", slow_s)
                loc["ratio_mean_three_over_one"] = ratio(loc["three_hosts"]["mean_build_s"], loc["one_host"]["mean_build_s"])
            if "2" in parts:
                scale = figures["scaling"]
                scale["three_hosts"] = distinct_builds(farm, "d3", DISTINCT_BUILDS, build_s)
                scale["ratio_one_over_three_hosts"] = ratio(scale["one_host"]["wall_s"], scale["three_hosts"]["wall_s"])
                scale["lineages_three_hosts"] = lineage_builds(farm, build_s)
                scale["distinct24_three_hosts"] = distinct_builds(farm, "d24", LINEAGES * BUILDS_PER_LINEAGE, build_s)
                scale["ratio_lineages_over_distinct"] = ratio(
                    scale["lineages_three_hosts"]["wall_s"], scale["distinct24_three_hosts"]["wall_s"]
                )
        except BaseException:
            harness.print_log_tails(farm.workers)
            raise
        finally:
            figures["cleanup"] = farm.close()
    figures["targets"] = verdicts(figures)
    return figures


def report(figures: dict[str, Any]) -> str:
    lines = ["", "locality and scaling (one run)"]
    if "locality" in figures:
        loc = figures["locality"]
        lines.append(f"1. {BUILDS_IN_SEQUENCE} successive one-line changes, RUN sleep {figures['slow_s']:g} then COPY app.txt")
        lines.append(f"   {'':12}{'slow step runs':>16}{'mean build s':>14}  hosts (worker number)  build s")
        for key, label in (("three_hosts", "three hosts"), ("one_host", "one host")):
            side = loc[key]
            lines.append(f"   {label:12}{side['slow_step_runs']:>16}{side['mean_build_s']:>14.2f}  "
                         f"{','.join(side['hosts']):22} {side['build_s']}")
        lines.append(f"   ratio mean three hosts / one host  {loc['ratio_mean_three_over_one']:.2f}  (target <= 1.3)")
    if "scaling" in figures:
        scale = figures["scaling"]
        lines.append(f"2. builds of equal length (RUN sleep {figures['build_s']:g}), sent at once")
        for key, label in (("one_host", f"{DISTINCT_BUILDS} distinct, one host"),
                           ("three_hosts", f"{DISTINCT_BUILDS} distinct, three hosts"),
                           ("lineages_three_hosts", f"{LINEAGES * BUILDS_PER_LINEAGE} of {LINEAGES} lineages, three hosts"),
                           ("distinct24_three_hosts", f"{LINEAGES * BUILDS_PER_LINEAGE} distinct, three hosts")):
            side = scale[key]
            lines.append(f"   {label:34} wall {side['wall_s']:7.2f} s   per host {side['per_host']}   {side['cache']}")
        lines.append(f"   ratio one host / three hosts ({DISTINCT_BUILDS} distinct)  {scale['ratio_one_over_three_hosts']:.2f}"
                     "  (target >= 2.5)")
        lines.append(f"   ratio 4 lineages / distinct (24 builds)   {scale['ratio_lineages_over_distinct']:.2f}  (target <= 1.3)")
    for name, verdict in figures.get("targets", {}).items():
        lines.append(f"   target {name:42} {verdict['value']!s:>8} {verdict['target']:>8}  {'met' if verdict['met'] else 'MISSED'}")
    lines.append(f"   cleanup {figures.get('cleanup')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.locality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default="1,2", help="parts to run: 1 (locality), 2 (scaling); default 1,2")
    parser.add_argument("--slow-s", type=float, default=6.0, help="the locality project's slow step (default 6)")
    parser.add_argument("--build-s", type=float, default=3.0, help="length of each scaling build (default 3)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    args = parser.parse_args(argv)
    started = time.monotonic()
    figures = run(set(args.only.split(",")), args.slow_s, args.build_s)
    figures["whole_run_s"] = round(time.monotonic() - started, 1)
    print(report(figures), flush=True)
    print(f"   whole run {figures['whole_run_s']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
