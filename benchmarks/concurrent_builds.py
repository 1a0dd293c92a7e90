"""Part a: N concurrent identical build requests over the farm's two engines.

prefect-docker's own step (one process per request, half on each engine)
against dockyard (two real workers, one per engine; N threads calling
``dockyard.tasks.client.build``). Builds executed are counted from the engines'
event logs (RUN-step container starts carrying the round's label), not from
what either side reports.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import docker

from benchmarks import harness

PREFECT_STEP = Path(__file__).with_name("prefect_step.py")
# The farm's engines have no bridge: every side names the network dockyard's
# builds get there (the engine's implicit default leaks a sandbox per step).
BRIDGELESS_NETWORK = "none"


@dataclass
class Side:
    """What one side of the comparison did."""

    name: str
    requests: int
    wall_s: float = 0.0
    runs: int = 0  # RUN-step executions seen on the engines
    runs_per_engine: dict[str, int] = field(default_factory=dict)
    image_ids: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    per_request_s: list[float] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def distinct_images(self) -> int:
        return len(set(self.image_ids))

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests, "wall_s": round(self.wall_s, 3), "builds_executed": self.runs,
            "builds_per_engine": self.runs_per_engine, "distinct_image_ids": self.distinct_images,
            "errors": self.errors, "slowest_request_s": round(max(self.per_request_s, default=0.0), 3),
            "fastest_request_s": round(min(self.per_request_s, default=0.0), 3),
            **self.extra,
        }


def _count(side: Side, clients: list[docker.DockerClient], round_id: str, since: float, until: float) -> None:
    counted = harness.count_round(clients, round_id, since, until)
    side.runs = counted.runs
    side.runs_per_engine = counted.starts


def single_engine_build(
    client: docker.DockerClient, directory: Path, image: str, labels: dict[str, str] | None = None
) -> tuple[float, str]:
    """One build straight on an engine with docker-py, pull=True as prefect-docker's step runs it.

    With ``labels`` it is the same engine build dockyard makes (dockyard, like
    prefect-docker, adds its image labels, which the classic builder applies
    as one more step).
    """
    started = time.monotonic()
    image_id = None
    events = client.api.build(
        path=str(directory), tag=image, pull=True, rm=True, forcerm=True, decode=True, labels=labels or {},
        network_mode=BRIDGELESS_NETWORK,
    )
    for event in events:
        if "error" in event:
            raise RuntimeError(f"engine build failed: {event['error']}")
        if isinstance(event.get("aux"), dict) and "ID" in event["aux"]:
            image_id = event["aux"]["ID"]
    if image_id is None:
        raise RuntimeError("engine build returned no image id")
    return time.monotonic() - started, image_id


def dockyard_concurrent(directory: Path, image_name: str, tag: str, requests: int) -> Side:
    """``requests`` threads call ``dockyard.tasks.client.build`` at the same instant; wall until the last answers."""
    from dockyard.tasks.client import build

    side = Side("dockyard", requests)
    barrier_passed: list[float] = []
    barrier = threading.Barrier(requests, action=lambda: barrier_passed.append(time.monotonic()))
    sources: dict[str, int] = {}
    hosts: dict[str, int] = {}
    lock = threading.Lock()

    timeline: list[tuple[float, str, float]] = []

    def one(_: int) -> float:
        barrier.wait()
        began = time.monotonic()
        try:
            result = build(image_name, path=str(directory), tag=tag, timeout_s=600)
        except Exception as exc:  # noqa: BLE001 - reported
            with lock:
                side.errors.append(f"{type(exc).__name__}: {exc}")
            return time.monotonic()
        with lock:
            side.image_ids.append(result["image_id"])
            side.per_request_s.append(time.monotonic() - began)
            sources[result.get("cache", "?")] = sources.get(result.get("cache", "?"), 0) + 1
            hosts[result.get("host", "?")] = hosts.get(result.get("host", "?"), 0) + 1
            timeline.append((time.monotonic() - barrier_passed[0], str(result.get("cache")),
                             float(result.get("duration_s", 0.0))))
        return time.monotonic()

    with ThreadPoolExecutor(max_workers=requests) as pool:
        finished = list(pool.map(one, range(requests)))
    side.wall_s = max(finished) - barrier_passed[0]
    side.extra = {
        "cache_outcomes": sources, "image_hosts": hosts,
        # (answered at s after the start, cache outcome, the task's own duration_s), in order of answer
        "timeline": [(round(at, 3), source, round(task_s, 3)) for at, source, task_s in sorted(timeline)],
    }
    return side


def _docker_login(config_dir: Path, docker_host: str) -> None:
    reg, user, password = harness.registry()
    completed = subprocess.run(
        ["docker", "--config", str(config_dir), "login", reg, "--username", user, "--password-stdin"],
        input=password, text=True, capture_output=True, env={**os.environ, "DOCKER_HOST": docker_host},
    )
    if completed.returncode != 0:
        raise RuntimeError(f"docker login {reg} failed: {completed.stderr.strip()}")


def prefect_concurrent(
    directory: Path, image_name: str, tag: str, requests: int, engines: list[str], prefect_python: str, scratch: Path
) -> Side:
    """``requests`` processes of prefect-docker's step, split over the engines; wall from "go" to the last answer.

    Each process imports prefect first (untimed), gets a private DOCKER_CONFIG
    holding a ``docker login`` to the farm's registry and a private PREFECT_HOME,
    then all are told to go at once.
    """
    side = Side("prefect-docker", requests)
    login_dir = scratch / "docker-login"
    _docker_login(login_dir, engines[0])
    processes: list[subprocess.Popen[str]] = []
    logs = []
    try:
        for index in range(requests):
            config_dir = scratch / f"docker-config-{index}"
            config_dir.mkdir()
            shutil.copy(login_dir / "config.json", config_dir / "config.json")
            prefect_home = scratch / f"prefect-home-{index}"
            prefect_home.mkdir()
            env = {
                **{k: v for k, v in os.environ.items() if not k.startswith(("DOCKYARD_", "PREFECT_"))},
                "DOCKER_HOST": engines[index % len(engines)],
                "DOCKER_CONFIG": str(config_dir),
                "PREFECT_HOME": str(prefect_home),
                "PREFECT_API_URL": "",
                "PREFECT_LOGGING_TO_API_ENABLED": "false",
                "PREFECT_LOGGING_LEVEL": "WARNING",
                "PYTHONUNBUFFERED": "1",
            }
            log = open(scratch / f"prefect-{index}.log", "w")
            logs.append(log)
            processes.append(subprocess.Popen(
                [prefect_python, "-I", str(PREFECT_STEP)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=log, text=True, env=env, cwd=str(directory),
            ))
        imports = []
        for index, process in enumerate(processes):
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                raise RuntimeError(f"prefect process {index} died before it was ready:\n"
                                   + (scratch / f"prefect-{index}.log").read_text(errors="replace")[-3000:])
            imports.append(json.loads(line)["import_s"])
        go = json.dumps({
            "image_name": image_name, "tag": tag, "path": str(directory), "pull": True,
            "network_mode": BRIDGELESS_NETWORK,
        }) + "\n"
        started = time.monotonic()
        for process in processes:
            assert process.stdin is not None
            process.stdin.write(go)
            process.stdin.flush()
        for index, process in enumerate(processes):
            assert process.stdout is not None
            line = process.stdout.readline()
            if not line:
                side.errors.append(f"process {index} exited without an answer")
                continue
            reply = json.loads(line)
            side.per_request_s.append(reply["build_s"])
            if reply["ok"]:
                side.image_ids.append(reply["result"]["image_id"])
            else:
                side.errors.append(reply["error"])
        side.wall_s = time.monotonic() - started
        side.extra = {"import_prefect_s_median": round(sorted(imports)[len(imports) // 2], 2)}
    finally:
        for process in processes:
            if process.stdin:
                process.stdin.close()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for log in logs:
            log.close()
    return side


def run(bench: Any, *, requests: int, sleep_s: float, prefect_python: str) -> dict[str, Any]:
    """Part a; ``bench`` is the run's shared state (run.Bench)."""
    from dockyard.tasks.client import build

    clients: list[docker.DockerClient] = bench.clients
    engines: list[str] = bench.engine_urls
    out: dict[str, Any] = {"requests": requests, "sleep_s": sleep_s, "engines": len(engines)}

    # One build, alone: straight on engine 1, and one dockyard request.
    round_id = harness.new_round()
    directory = harness.write_context(bench.scratch / f"a-single-engine-{round_id[:8]}", round_id, sleep_s=sleep_s)
    since = time.time()
    from dockyard.tasks.engine.build import IMAGE_LABELS

    plain_s, _ = single_engine_build(clients[0], directory, bench.image("a-engine") + ":plain")
    out["single_engine_build_plain_s"] = round(plain_s, 3)
    round_id = harness.new_round()
    directory = harness.write_context(bench.scratch / f"a-single-engine-l-{round_id[:8]}", round_id, sleep_s=sleep_s)
    since = time.time()
    single_engine_s, _ = single_engine_build(clients[0], directory, bench.image("a-engine") + ":single", IMAGE_LABELS)
    out["single_engine_build_s"] = round(single_engine_s, 3)
    out["single_engine_build_runs"] = harness.count_round(clients, round_id, since, time.time()).runs

    round_id = harness.new_round()
    directory = harness.write_context(bench.scratch / f"a-single-dockyard-{round_id[:8]}", round_id, sleep_s=sleep_s)
    since = time.time()
    started = time.monotonic()
    build(bench.image("a-dockyard-single"), path=str(directory), tag="single", timeout_s=600)
    out["single_dockyard_build_s"] = round(time.monotonic() - started, 3)
    out["single_dockyard_build_runs"] = harness.count_round(clients, round_id, since, time.time()).runs

    # N identical requests through dockyard.
    round_id = harness.new_round()
    directory = harness.write_context(bench.scratch / f"a-dockyard-{round_id[:8]}", round_id, sleep_s=sleep_s)
    since = time.time()
    dockyard = dockyard_concurrent(directory, bench.image("a-dockyard"), "same", requests)
    _count(dockyard, clients, round_id, since, time.time())

    # N identical requests through prefect-docker's step.
    round_id = harness.new_round()
    directory = harness.write_context(bench.scratch / f"a-prefect-{round_id[:8]}", round_id, sleep_s=sleep_s)
    scratch = bench.scratch / f"a-prefect-run-{round_id[:8]}"
    scratch.mkdir()
    since = time.time()
    prefect = prefect_concurrent(directory, bench.image("a-prefect"), "same", requests, engines, prefect_python, scratch)
    _count(prefect, clients, round_id, since, time.time())
    shutil.rmtree(scratch, ignore_errors=True)  # the docker logins go first

    out["dockyard"] = dockyard.as_dict()
    out["prefect_docker"] = prefect.as_dict()
    out["ratio_dockyard_wall_over_single_engine_build"] = round(dockyard.wall_s / single_engine_s, 3)
    out["ratio_dockyard_wall_over_single_dockyard_build"] = round(dockyard.wall_s / out["single_dockyard_build_s"], 3)
    out["ratio_prefect_wall_over_dockyard_wall"] = round(prefect.wall_s / dockyard.wall_s, 3)
    return out
