"""Fair share between teams: one team's burst against another team's single build, fair share on and off.

    python -m benchmarks.fair_share [--builds 30] [--build-s 4] [--delay-s 1] [--shares 1,1] [--json PATH]

Three hosts (one worker per engine of ``DOCKYARD_FARM_DOCKER_HOSTS``,
concurrency 2, the bench's Redis database and key prefix), a teams file of
the bench's own with two teams, ``fair-a`` and ``fair-b``. The bench is the
farm's operator (the worker user); each team's requests come from a sender
process of its own (``DOCKYARD_TEAM`` set, ``dockyard.tasks.client.build``,
placement included). Every build is distinct (its own repository, a fresh
id in a ``RUN sleep <build-s>`` step), so none is a hit or a join.

For each mode (workers started with ``DOCKYARD_FAIR_SHARE=true``, then
``false``) it measures, in this order:

- B solo: team B's one build alone (B's latency baseline);
- A alone: team A's ``--builds`` builds sent at once (A's wall baseline);
- both: A's builds sent at once, then B's one build ``--delay-s`` later.

It prints B's latency over its solo build time (target at most 2x) and A's
wall time over A alone (target within 1.2x), the two modes side by side.
It needs three engines: ``DOCKYARD_FARM_HOSTS=3 . workers/farm_env.sh``
first. Run it under the farm's test lock; it removes what it made.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from benchmarks import harness

TEAMS = ("fair-a", "fair-b")
HOSTS = 3
TIMEOUT_S = 900
READY_TIMEOUT_S = 120
TARGETS = {"b_latency_over_solo": 2.0, "a_wall_over_alone": 1.2}


def write_teams_file(path: Path, shares: tuple[float, float]) -> Path:
    """The bench's teams: no Redis passwords (its senders are the operator), pushing nowhere."""
    path.write_text("".join(f"[teams.{team}]\nshare = {share:g}\n\n" for team, share in zip(TEAMS, shares)))
    return path


class Sender:
    """A caller process of one team: it prepares, waits for "go", sends its builds at once, reports."""

    def __init__(self, team: str, requests: list[tuple[str, str, str]], log: Path) -> None:
        self.team = team
        env = {**os.environ, "DOCKYARD_TEAM": team}
        self.stderr = open(log, "ab")  # noqa: SIM115 - closed in result()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.fair_share", "--sender"], cwd=harness.REPO, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.process.stdin.write(json.dumps(requests) + "\n")
        self.process.stdin.flush()

    def wait_ready(self) -> None:
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        if line.strip() != "ready":
            raise RuntimeError(f"sender of {self.team} did not get ready: {line!r} (log: {self.stderr.name})")

    def go(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write("go\n")
        self.process.stdin.flush()

    def result(self) -> dict[str, Any]:
        out, _ = self.process.communicate(timeout=TIMEOUT_S)
        self.stderr.close()
        if self.process.returncode != 0:
            raise RuntimeError(f"sender of {self.team} failed ({self.process.returncode}); log: {self.stderr.name}")
        return dict(json.loads(out.strip().splitlines()[-1]))


def send_main() -> int:
    """The sender process: a JSON list of ``[image, directory, tag]`` on stdin, then "go"."""
    from dockyard.tasks.client import build

    requests = json.loads(sys.stdin.readline())
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    started = time.monotonic()

    def one(request: list[str]) -> dict[str, Any]:
        image, directory, tag = request
        result = build(image, path=directory, tag=tag, timeout_s=TIMEOUT_S)
        return {"s": round(time.monotonic() - started, 3), "host": str(result["host"]), "cache": str(result["cache"])}

    with ThreadPoolExecutor(max(1, len(requests))) as pool:
        answers = list(pool.map(one, requests))
    print(json.dumps({
        "builds": len(answers), "wall_s": max(each["s"] for each in answers),
        "latency_s": [each["s"] for each in answers],
        "per_host": dict(sorted(Counter(each["host"].rsplit("-", 1)[-1] for each in answers).items())),
        "cache": dict(Counter(each["cache"] for each in answers)),
    }), flush=True)
    return 0


class Farm:
    """The bench's three workers (restarted for each mode), images and names."""

    def __init__(self, scratch: Path, engines: list[str]) -> None:
        from dockyard.workers.app import app

        self.app = app
        self.run = uuid.uuid4().hex[:8]
        self.scratch = scratch
        self.registry = harness.registry()[0]
        self.engine_urls = engines
        self.clients = [harness.engine(url) for url in engines]
        self.repositories: list[str] = []
        self.workers: list[Any] = []

    def start(self, fair_share: bool) -> None:
        self.stop()
        os.environ["DOCKYARD_FAIR_SHARE"] = "true" if fair_share else "false"  # the workers inherit it
        mode = "on" if fair_share else "off"
        logs = self.scratch / f"logs-{mode}"
        logs.mkdir(exist_ok=True)
        self.workers = harness.bench_workers(f"fair-{self.run}-{mode}", self.engine_urls, logs)
        harness.start_workers(self.app, self.workers)

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        self.workers = []

    def requests(self, label: str, count: int, build_s: float) -> list[tuple[str, str, str]]:
        """``count`` distinct builds: each its own repository and a fresh id in its RUN step."""
        found = []
        for index in range(count):
            round_id = harness.new_round()
            directory = harness.write_context(self.scratch / f"{label}-{index}-{round_id[:8]}", round_id, sleep_s=build_s)
            name = f"{self.registry}/{harness.BENCH_REPOSITORY}/{self.run}-{label}-{index}"
            self.repositories.append(name)
            found.append((name, str(directory), "x"))
        return found

    def close(self) -> dict[str, Any]:
        self.stop()
        report = {
            "images_removed": harness.remove_bench_images(self.clients, self.repositories),
            "bench_images_left": harness.leftover_bench_images(self.clients),
            "redis_keys_deleted": harness.delete_bench_keys(),
        }
        for client in self.clients:
            client.close()
        return report


def send_round(farm: Farm, plans: list[tuple[str, list[tuple[str, str, str]]]], delay_s: float) -> list[dict[str, Any]]:
    """Each ``(team, requests)`` in its own sender; the first told to go, each next one ``delay_s`` later."""
    senders = [Sender(team, requests, farm.scratch / f"sender-{team}.log") for team, requests in plans]
    try:
        for sender in senders:
            sender.wait_ready()
        for index, sender in enumerate(senders):
            if index:
                time.sleep(delay_s)
            sender.go()
        return [sender.result() for sender in senders]
    finally:
        for sender in senders:
            if sender.process.poll() is None:
                sender.process.kill()


def measure_mode(farm: Farm, fair_share: bool, builds: int, build_s: float, delay_s: float) -> dict[str, Any]:
    farm.start(fair_share)
    mode = "on" if fair_share else "off"
    team_a, team_b = TEAMS
    (b_solo,) = send_round(farm, [(team_b, farm.requests(f"{mode}-bsolo", 1, build_s))], delay_s)
    (a_alone,) = send_round(farm, [(team_a, farm.requests(f"{mode}-aalone", builds, build_s))], delay_s)
    a_both, b_both = send_round(farm, [
        (team_a, farm.requests(f"{mode}-a", builds, build_s)), (team_b, farm.requests(f"{mode}-b", 1, build_s)),
    ], delay_s)
    b_latency = b_both["wall_s"]
    return {
        "b_solo_s": b_solo["wall_s"],
        "a_alone_s": a_alone["wall_s"],
        "b_latency_s": b_latency,
        "a_wall_s": a_both["wall_s"],
        "b_latency_over_solo": round(b_latency / b_solo["wall_s"], 2),
        "a_wall_over_alone": round(a_both["wall_s"] / a_alone["wall_s"], 2),
        "a_builds_done_before_b": sum(each < b_latency + delay_s for each in a_both["latency_s"]),
        "a_per_host": a_both["per_host"], "b_host": b_both["per_host"],
        "cache": dict(Counter(a_both["cache"]) + Counter(b_both["cache"]) + Counter(a_alone["cache"])),
    }


def run(builds: int, build_s: float, delay_s: float, shares: tuple[float, float]) -> dict[str, Any]:
    harness.setup_environment()
    engines = harness.docker_hosts()
    if len(engines) < HOSTS:
        raise SystemExit("fair_share needs three engines: run `DOCKYARD_FARM_HOSTS=3 . workers/farm_env.sh` first")
    figures: dict[str, Any] = {"builds": builds, "build_s": build_s, "delay_s": delay_s, "shares": list(shares)}
    with harness.temp_dir("dockyard-fair-share-") as scratch:
        os.environ["DOCKYARD_TEAMS_FILE"] = str(write_teams_file(scratch / "teams.toml", shares))
        harness.delete_bench_keys()
        farm = Farm(scratch, engines[:HOSTS])
        try:
            figures["on"] = measure_mode(farm, True, builds, build_s, delay_s)
            figures["off"] = measure_mode(farm, False, builds, build_s, delay_s)
        except BaseException:
            harness.print_log_tails(farm.workers)
            raise
        finally:
            figures["cleanup"] = farm.close()
    figures["targets"] = {
        name: {"value": figures["on"][name], "target": f"<= {bound:g}", "met": figures["on"][name] <= bound}
        for name, bound in TARGETS.items()
    }
    return figures


def report(figures: dict[str, Any]) -> str:
    on, off = figures["on"], figures["off"]
    lines = [
        "",
        f"fair share: team A sends {figures['builds']} distinct builds (RUN sleep {figures['build_s']:g}) at once, "
        f"team B one build {figures['delay_s']:g} s later; three hosts, 2 slots each; shares A,B {figures['shares']}",
        f"   {'':34}{'fair share on':>16}{'fair share off':>16}",
    ]
    rows = (
        ("B solo build (s)", "b_solo_s"), ("B latency beside A (s)", "b_latency_s"),
        ("B latency / B solo", "b_latency_over_solo"),
        ("A alone, wall (s)", "a_alone_s"), ("A beside B, wall (s)", "a_wall_s"),
        ("A wall / A alone", "a_wall_over_alone"),
        ("A builds answered before B", "a_builds_done_before_b"),
    )
    for label, name in rows:
        lines.append(f"   {label:34}{on[name]!s:>16}{off[name]!s:>16}")
    lines.append(f"   A per host (on / off)  {on['a_per_host']} / {off['a_per_host']}   B's host {on['b_host']} / {off['b_host']}")
    lines.append(f"   cache outcomes (on / off)  {on['cache']} / {off['cache']}")
    for name, verdict in figures["targets"].items():
        lines.append(f"   target (fair share on) {name:24} {verdict['value']!s:>8} {verdict['target']:>8}  "
                     f"{'met' if verdict['met'] else 'MISSED'}")
    lines.append(f"   cleanup {figures.get('cleanup')}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.fair_share", description=__doc__.split("\n\n")[0])
    parser.add_argument("--builds", type=int, default=30, help="team A's builds sent at once (default 30)")
    parser.add_argument("--build-s", type=float, default=4.0, help="length of each build's RUN sleep (default 4)")
    parser.add_argument("--delay-s", type=float, default=1.0, help="team B sends this long after team A (default 1)")
    parser.add_argument("--shares", default="1,1", help="shares of team A and team B in the bench's teams file (default 1,1)")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures as JSON here")
    parser.add_argument("--sender", action="store_true", help=argparse.SUPPRESS)  # a team's sender process
    args = parser.parse_args(argv)
    if args.sender:
        return send_main()
    share_a, share_b = (float(each) for each in args.shares.split(","))
    started = time.monotonic()
    figures = run(args.builds, args.build_s, args.delay_s, (share_a, share_b))
    figures["whole_run_s"] = round(time.monotonic() - started, 1)
    print(report(figures), flush=True)
    print(f"   whole run {figures['whole_run_s']} s")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
