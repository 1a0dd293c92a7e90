"""The context store under load: the broker's memory, the store's budget, and peak RSS with a 1 GiB context.

    flock /tmp/dockyard-farm-test.lock .venv/bin/python -m benchmarks.context_store [--only policy,budget,rss]
        [--contexts 50] [--context-mib 20] [--budget-mib 200] [--callers 6] [--big-mib 1024] [--json PATH]

Run after ``. workers/farm_env.sh`` (the farm's engines, registry and Redis), under the tests' lock.
The run starts a context store of its own (a ``redis-server`` on a free loopback port with a password,
``maxmemory`` 7/8 of the budget as provisioning sets it, ``volatile-ttl``, nothing on disk), so the farm's store is untouched; the
broker is the farm's Redis, on the bench's database and key prefix (``benchmarks.harness``).

policy (why ``volatile-ttl``): no workers; on two stores of their own with the same budget, one
``allkeys-lru`` and one ``volatile-ttl``, ``--callers`` threads each upload ``--contexts`` distinct
contexts of ``--context-mib`` MiB in turn (``dockyard.tasks.context.store``), wait up to a second, and download
their own, as a worker soon would: how many were lost in between.

budget (issue 14, Must show 1): two workers on the farm's two engines; ``--callers`` threads build
``--contexts`` distinct contexts of ``--context-mib`` MiB each (random bytes: no two alike) through
``dockyard.tasks.client.build`` while the store's budget is ``--budget-mib``. The broker's ``used_memory`` and
the store's are sampled every 0.1 s; idle is the broker's median over 2 s before the first upload.
Every image is checked: ``/marker`` in it holds its own context's marker.

rss (Must show 5): a ``--big-mib`` MiB context (one random file) goes through a caller process and
a worker with concurrency 1 (its own, started for each backend), once per backend (docker-py streams
the stored tar to the engine, buildx unpacks it first). The caller's peak RSS is its own
``VmHWM`` (not ``ru_maxrss``, which counts the forking parent's RSS); the worker's is ``VmHWM`` of each process in its process group (main and pool child),
read after the build. A caller with a 1 KiB context gives the import baseline.

Everything it made (images, contexts, keys, the store) is removed.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tarfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import redis

from benchmarks import harness
from dockyard.tasks.context.store import maxmemory_for
from dockyard.workers.launcher import WorkerProcess

MIB = 1024**2
SAMPLE_S = 0.1
BLOCK = 4 * MIB
CALLER = """
import json, sys, time
from dockyard.tasks import client
started = time.monotonic()
result = client.build(sys.argv[1], path=sys.argv[2], tag=sys.argv[3], build_backend=sys.argv[4], timeout_s=1500)
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")][0].split()[1]
print(json.dumps({"result": result, "seconds": time.monotonic() - started, "maxrss_kib": int(hwm)}))
"""


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def own_store(directory: Path, budget_bytes: int, policy: str = "volatile-ttl") -> Iterator[tuple[str, redis.Redis]]:
    """A context store for this run only: its URL and an admin client (the default user, a password)."""
    port, password = free_port(), secrets.token_hex(16)
    directory.mkdir(parents=True, exist_ok=True)
    config = directory / "redis.conf"
    config.touch(mode=0o600)
    config.write_text("\n".join([
        "bind 127.0.0.1", f"port {port}", "protected-mode yes", 'save ""', "appendonly no",
        f"maxmemory {maxmemory_for(budget_bytes)}", f"maxmemory-policy {policy}", "maxmemory-samples 10",
        f"requirepass {password}", f"dir {directory}", f"logfile {directory / 'redis.log'}",
    ]) + "\n")
    process = subprocess.Popen(["redis-server", str(config)], stdin=subprocess.DEVNULL)
    url = f"redis://:{password}@127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit(f"the bench's context store did not start (log: {directory / 'redis.log'})")
                time.sleep(0.1)
        yield url, client
    finally:
        client.close()
        process.terminate()
        process.wait(timeout=20)


def used_memory(client: redis.Redis) -> int:
    return int(client.info("memory")["used_memory"])


class Sampler:
    """The broker's and the store's ``used_memory``, every ``SAMPLE_S``, in a thread; their peaks."""

    def __init__(self, broker: redis.Redis, store: redis.Redis) -> None:
        self.broker, self.store = broker, store
        self.broker_peak = self.store_peak = self.samples = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.stop.is_set():
            self.broker_peak = max(self.broker_peak, used_memory(self.broker))
            self.store_peak = max(self.store_peak, used_memory(self.store))
            self.samples += 1
            self.stop.wait(SAMPLE_S)

    def __enter__(self) -> Sampler:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.stop.set()
        self.thread.join()


def write_random(path: Path, size: int) -> None:
    with open(path, "wb") as handle:
        left = size
        while left > 0:
            block = os.urandom(min(BLOCK, left))
            handle.write(block)
            left -= len(block)


def marked_context(directory: Path, blob_bytes: int, *, blob: Path | None = None) -> str:
    """A context whose image carries a fresh ``/marker``; the blob is random bytes (or a link to ``blob``'s)."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = uuid.uuid4().hex
    (directory / "marker").write_text(marker)
    (directory / "Dockerfile").write_text(f"FROM {harness.base_image()}\nCOPY marker /marker\n")
    if blob is not None:
        os.link(blob, directory / "blob.bin")
    elif blob_bytes:
        write_random(directory / "blob.bin", blob_bytes)
    return marker


def marker_in(engine: Any, image_id: str) -> str:
    container = engine.containers.create(image_id, command=["true"], network_mode="none")
    try:
        stream, _stat = container.get_archive("/marker")
        with tarfile.open(fileobj=io.BytesIO(b"".join(stream))) as archive:
            handle = archive.extractfile("marker")
            return handle.read().decode() if handle is not None else ""
    finally:
        container.remove(force=True)


def budget_part(args: argparse.Namespace, store: redis.Redis, scratch: Path, app: Any) -> dict[str, Any]:
    """Must show 1: distinct contexts through a small store over two hosts; the broker's memory."""
    from dockyard.config.settings import get_settings
    from dockyard.tasks import client
    from dockyard.tasks.keyspace import redis_for

    budget = args.budget_mib * MIB
    store.config_set("maxmemory", maxmemory_for(budget))
    broker = redis_for(get_settings())
    urls = harness.docker_hosts()[:2]
    engines = {f"ctxstore-{n}": harness.engine(url, logged_in=False) for n, url in enumerate(urls, start=1)}
    image = f"{harness.registry()[0]}/{harness.BENCH_REPOSITORY}/ctxstore-{uuid.uuid4().hex[:8]}"
    workers = [WorkerProcess(host, url, scratch / f"{host}.log", {"DOCKYARD_METRICS_PORT": "0"}, 2, cwd=harness.REPO)
               for host, url in zip(engines, urls)]
    harness.start_workers(app, workers)
    try:
        idle_samples = []
        for _ in range(20):
            idle_samples.append(used_memory(broker))
            time.sleep(SAMPLE_S)
        idle = int(statistics.median(idle_samples))

        def one(index: int) -> dict[str, Any]:
            directory = scratch / f"ctx-{index}"
            marker = marked_context(directory, args.context_mib * MIB - 16 * 1024)
            lines: list[str] = []
            started = time.monotonic()
            try:
                result = client.build(image, path=str(directory), tag=f"c{index}", on_output=lines.append, timeout_s=900)
                right = marker_in(engines[result["host"]], result["image_id"]) == marker
                return {"ok": right, "cache": result["cache"], "host": result["host"],
                        "resends": sum("uploading it again" in line for line in lines),
                        "seconds": time.monotonic() - started, "error": None if right else "wrong /marker"}
            except Exception as exc:  # noqa: BLE001 - every failure is counted and shown
                return {"ok": False, "error": f"{type(exc).__module__}.{type(exc).__name__}: {exc}", "resends": 0,
                        "seconds": time.monotonic() - started}
            finally:
                shutil.rmtree(directory, ignore_errors=True)

        started = time.monotonic()
        with Sampler(broker, store) as sampler, ThreadPoolExecutor(args.callers) as pool:
            builds = list(pool.map(one, range(args.contexts)))
        wall = time.monotonic() - started
        info = store.info("memory")
        stats = store.info("stats")
        if not all(each["ok"] for each in builds):
            harness.print_log_tails(workers)
    finally:
        for worker in workers:
            worker.stop()
        harness.remove_bench_images(engines.values(), [image])
    failures = [each["error"] for each in builds if not each["ok"]]
    return {
        "contexts": args.contexts, "context_mib": args.context_mib, "callers": args.callers,
        "hosts": len(workers), "worker_concurrency": 2,
        "builds_ok": sum(each["ok"] for each in builds), "failures": failures[:5], "failed": len(failures),
        "outcomes": {source: sum(each.get("cache") == source for each in builds) for source in ("built", "joined", "hit")},
        "per_host": {host: sum(each.get("host") == host for each in builds) for host in engines},
        "resends": sum(each["resends"] for each in builds),
        "broker_idle_bytes": idle, "broker_peak_bytes": sampler.broker_peak,
        "broker_peak_over_idle_bytes": sampler.broker_peak - idle,
        "store_budget_bytes": budget, "store_peak_sampled_bytes": sampler.store_peak,
        "store_used_memory_peak_bytes": int(info["used_memory_peak"]), "store_evicted_keys": int(stats["evicted_keys"]),
        "samples": sampler.samples, "wall_s": wall,
    }


def policy_part(args: argparse.Namespace, scratch: Path) -> dict[str, Any]:
    """Contexts lost between upload and download under each eviction policy, side by side."""
    import hashlib
    import random
    import tempfile

    from dockyard.config.settings import Settings
    from dockyard.tasks.context.pack import PackedContext
    from dockyard.tasks.context.store import download_context, upload_context
    from dockyard.tasks.errors import ContextMissing

    found: dict[str, Any] = {}
    for policy in ("allkeys-lru", "volatile-ttl"):
        with own_store(scratch / f"policy-{policy}", args.budget_mib * MIB, policy) as (url, store):
            settings = Settings(key_prefix=harness.BENCH_KEY_PREFIX, context_store_url=url)

            def one(index: int) -> str:
                with tempfile.TemporaryFile() as spool:
                    write_random_to(spool, args.context_mib * MIB)
                    spool.seek(0)
                    hasher = hashlib.sha256()
                    while block := spool.read(BLOCK):
                        hasher.update(block)
                    packed = PackedContext("sha256:" + hasher.hexdigest(), args.context_mib * MIB, spool)
                    try:
                        upload_context(store, settings, packed)
                    except ContextMissing:
                        return "lost while uploaded"
                    time.sleep(random.random())
                    try:
                        download_context(store, settings, packed.digest).close()
                    except ContextMissing:
                        return "lost before download"
                    return "ok"

            with ThreadPoolExecutor(args.callers) as pool:
                outcomes = list(pool.map(one, range(args.contexts)))
            found[policy] = {
                "ok": outcomes.count("ok"), "lost_while_uploaded": outcomes.count("lost while uploaded"),
                "lost_before_download": outcomes.count("lost before download"),
                "evicted_keys": int(store.info("stats")["evicted_keys"]),
                "used_memory_peak_bytes": int(store.info("memory")["used_memory_peak"]),
            }
    return {"contexts": args.contexts, "context_mib": args.context_mib, "callers": args.callers,
            "budget_bytes": args.budget_mib * MIB, "policies": found}


def write_random_to(handle: Any, size: int) -> None:
    left = size
    while left > 0:
        block = os.urandom(min(BLOCK, left))
        handle.write(block)
        left -= len(block)


def process_group(pgid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid:
                    found.append(int(entry.name))
    return sorted(found)


def vm_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_caller(image: str, directory: Path, tag: str, backend: str, limit: int) -> dict[str, Any]:
    env = {**os.environ, "DOCKYARD_CONTEXT_MAX_BYTES": str(limit)}
    done = subprocess.run([sys.executable, "-c", CALLER, image, str(directory), tag, backend], env=env,
                          cwd=harness.REPO, capture_output=True, text=True, timeout=1800)
    if done.returncode != 0:
        raise SystemExit(f"the caller failed: {done.stderr[-3000:]}")
    answer: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return answer


def rss_part(args: argparse.Namespace, store: redis.Redis, scratch: Path, app: Any) -> dict[str, Any]:
    """Must show 5: peak RSS of the caller and of the worker while a big context goes through."""
    big = args.big_mib * MIB
    limit = big + 64 * MIB
    store.flushall()
    store.config_set("maxmemory", maxmemory_for(int(big * 1.5) + 256 * MIB))
    url = harness.docker_hosts()[0]
    engine = harness.engine(url, logged_in=False)
    image = f"{harness.registry()[0]}/{harness.BENCH_REPOSITORY}/ctxrss-{uuid.uuid4().hex[:8]}"
    blob = scratch / "big.bin"
    write_random(blob, big)
    runs: dict[str, Any] = {}
    try:
        small = scratch / "small"
        marked_context(small, 1024)
        worker = WorkerProcess(f"ctxrss-base-{uuid.uuid4().hex[:6]}", url, scratch / "base.log",
                               {"DOCKYARD_METRICS_PORT": "0", "DOCKYARD_CONTEXT_MAX_BYTES": str(limit)}, 1, cwd=harness.REPO)
        harness.start_workers(app, [worker])
        try:
            baseline = run_caller(image, small, "small", "docker-py", limit)
            baseline_worker = {pid: vm_hwm_kib(pid) for pid in process_group(worker.pid)}
        finally:
            worker.stop()
        for backend in args.backends:
            directory = scratch / f"big-{backend}"
            marker = marked_context(directory, 0, blob=blob)
            worker = WorkerProcess(f"ctxrss-{backend}-{uuid.uuid4().hex[:6]}", url, scratch / f"{backend}.log",
                                   {"DOCKYARD_METRICS_PORT": "0", "DOCKYARD_CONTEXT_MAX_BYTES": str(limit)}, 1,
                                   cwd=harness.REPO)
            harness.start_workers(app, [worker])
            try:
                answer = run_caller(image, directory, backend, backend, limit)
                worker_hwm = {pid: vm_hwm_kib(pid) for pid in process_group(worker.pid)}
            finally:
                worker.stop()
            right = marker_in(engine, answer["result"]["image_id"]) == marker
            runs[backend] = {
                "caller_peak_rss_mib": answer["maxrss_kib"] / 1024, "caller_seconds": answer["seconds"],
                "worker_peak_rss_mib": max(worker_hwm.values()) / 1024,
                "worker_processes_mib": {str(pid): kib / 1024 for pid, kib in worker_hwm.items()},
                "cache": answer["result"]["cache"], "right_image": right,
            }
            shutil.rmtree(directory, ignore_errors=True)
    finally:
        blob.unlink(missing_ok=True)
        harness.remove_bench_images([engine], [image])
    return {
        "context_mib": args.big_mib, "limit_bytes": 256 * MIB,
        "baseline_caller_peak_rss_mib": baseline["maxrss_kib"] / 1024,
        "baseline_worker_peak_rss_mib": max(baseline_worker.values()) / 1024,
        "runs": runs,
    }


def report(figures: dict[str, Any]) -> str:
    lines = []
    if "policy" in figures:
        p = figures["policy"]
        lines.append(
            f"0. eviction policy: {p['contexts']} distinct {p['context_mib']} MiB contexts, {p['callers']} threads, "
            f"each downloaded within 1 s of its upload (budget {p['budget_bytes'] / MIB:.0f} MiB)"
        )
        for policy, got in p["policies"].items():
            lines.append(
                f"  {policy:13s} ok {got['ok']:3d}   lost while uploaded {got['lost_while_uploaded']:3d}   "
                f"lost before download {got['lost_before_download']:3d}   evicted keys {got['evicted_keys']}   "
                f"peak {got['used_memory_peak_bytes'] / MIB:.1f} MiB"
            )
    if "budget" in figures:
        b = figures["budget"]
        lines += [
            f"1. {b['contexts']} distinct {b['context_mib']} MiB contexts, {b['callers']} callers, "
            f"{b['hosts']} hosts x {b['worker_concurrency']} (store budget {b['store_budget_bytes'] / MIB:.0f} MiB, volatile-ttl)",
            f"  builds succeeded (right /marker)           {b['builds_ok']} / {b['contexts']}   failed {b['failed']} {b['failures']}",
            f"  outcomes {b['outcomes']}  per host {b['per_host']}  resends after eviction {b['resends']}",
            f"  broker used_memory idle / peak (MiB)       {b['broker_idle_bytes'] / MIB:.2f} / {b['broker_peak_bytes'] / MIB:.2f}",
            f"  broker peak - idle (MiB)                   {b['broker_peak_over_idle_bytes'] / MIB:.2f}   (target <= 50)",
            f"  store used_memory peak sampled / INFO peak (MiB)  {b['store_peak_sampled_bytes'] / MIB:.1f} / "
            f"{b['store_used_memory_peak_bytes'] / MIB:.1f}   budget {b['store_budget_bytes'] / MIB:.0f}",
            f"  ratio store INFO peak / budget             {b['store_used_memory_peak_bytes'] / b['store_budget_bytes']:.3f}",
            f"  store evicted keys                         {b['store_evicted_keys']}",
            f"  wall time (s)                              {b['wall_s']:.1f}   ({b['samples']} samples)",
        ]
    if "rss" in figures:
        r = figures["rss"]
        lines += [
            f"5. peak RSS while a {r['context_mib']} MiB context goes through (limit {r['limit_bytes'] / MIB:.0f} MiB each)",
            f"  baseline, 1 KiB context: caller {r['baseline_caller_peak_rss_mib']:.1f} MiB, "
            f"worker {r['baseline_worker_peak_rss_mib']:.1f} MiB",
        ]
        for backend, run in r["runs"].items():
            lines.append(
                f"  {backend:10s} caller {run['caller_peak_rss_mib']:.1f} MiB ({run['caller_seconds']:.1f} s)   "
                f"worker {run['worker_peak_rss_mib']:.1f} MiB (processes {', '.join(f'{v:.1f}' for v in run['worker_processes_mib'].values())})   "
                f"{run['cache']}, right image {run['right_image']}"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="policy,budget,rss", help="parts to run: policy, budget, rss")
    parser.add_argument("--contexts", type=int, default=50)
    parser.add_argument("--context-mib", type=int, default=20)
    parser.add_argument("--budget-mib", type=int, default=200)
    parser.add_argument("--callers", type=int, default=6)
    parser.add_argument("--big-mib", type=int, default=1024)
    parser.add_argument("--backends", default="docker-py,buildx", type=lambda text: text.split(","))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    parts = set(args.only.split(","))
    with harness.temp_dir("dockyard-ctxstore-") as scratch, own_store(scratch / "store", args.budget_mib * MIB) as (url, store):
        os.environ["DOCKYARD_CONTEXT_STORE_URL"] = url  # the bench's callers and workers use this store
        harness.setup_environment()
        from dockyard.workers.app import app

        figures: dict[str, Any] = {}
        try:
            if "policy" in parts:
                figures["policy"] = policy_part(args, scratch)
            if "budget" in parts:
                figures["budget"] = budget_part(args, store, scratch, app)
            if "rss" in parts:
                figures["rss"] = rss_part(args, store, scratch, app)
        finally:
            harness.delete_bench_keys()
    print(report(figures))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
