"""The soak's share of the farm: its run id, engines, Redis database, workers, and their cleanup.

Everything the soak makes carries its label or lives in its own database
(``SOAK_REDIS_DB``) and repository, so the cleanup removes exactly that: the
workers, every soak-labelled image on both engines (of any soak run, so an
interrupted one's leftovers go too), the pushed manifests and the database.
"""

from __future__ import annotations

import argparse
import base64
import shutil
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from benchmarks import harness
from benchmarks.soak_plan import SOAK_KEY_PREFIX, SOAK_LABEL, SOAK_REPOSITORY
from dockyard.workers.launcher import WorkerProcess

WORKERS_READY_S = 180.0  # two workers starting while the engines are busy


def delete_manifests(repository_path: str, digests: Iterable[str]) -> dict[str, Any]:
    """Delete the pushed manifests from the farm's registry (its storage has delete enabled)."""
    registry, user, password = harness.registry()
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    deleted, errors = 0, []
    for digest in sorted(set(digests)):
        request = urllib.request.Request(
            f"http://{registry}/v2/{repository_path}/manifests/{digest}", method="DELETE",
            headers={"Authorization": f"Basic {token}"},
        )
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                deleted += response.status in (200, 202)
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                errors.append(f"{digest}: HTTP {exc.code}")
        except OSError as exc:
            errors.append(f"{digest}: {exc}")
    return {"deleted": deleted, "errors": errors}


class SoakFarm:
    """The run's engines (two), its Redis database and key prefix, and its two workers."""

    def __init__(self, args: argparse.Namespace, scratch: Path) -> None:
        from dockyard.config.settings import get_settings
        from dockyard.tasks.keyspace import redis_for

        self.args = args
        self.scratch = scratch
        self.run_id = uuid.uuid4().hex[:10]
        self.registry = harness.registry()[0]
        self.repository = f"{self.registry}/{SOAK_REPOSITORY}/{self.run_id}"
        self.engine_urls = harness.docker_hosts()[:2]
        if len(self.engine_urls) < 2:
            raise SystemExit("the soak needs two engines (DOCKYARD_FARM_DOCKER_HOSTS): run benchmarks/soak.sh")
        self.settings = get_settings()
        self.redis = redis_for(self.settings)
        db = self.redis.connection_pool.connection_kwargs.get("db")
        if int(db or 0) != args.redis_db or self.settings.key_prefix != SOAK_KEY_PREFIX:
            raise SystemExit(f"refusing to run: dockyard points at db {db} prefix {self.settings.key_prefix!r}")
        self.clients = [harness.engine(url) for url in self.engine_urls]
        self.workers: list[WorkerProcess] = []

    # -- start

    def clear_leftovers(self) -> dict[str, Any]:
        """What an interrupted soak left: only the soak's own database and labelled images."""
        found: dict[str, Any] = {"redis_keys": int(self.redis.dbsize())}
        self.redis.flushdb()
        found["soak_images_removed"] = harness.remove_images(self.clients, label=SOAK_LABEL)["removed"]
        return found

    def start_workers(self) -> float:
        """Start one worker per engine; return the seconds until both were ready."""
        from dockyard.workers.app import app

        started = time.monotonic()
        self.workers = harness.bench_workers(f"soak-{self.run_id}", self.engine_urls, self.scratch,
                                             concurrency=self.args.concurrency)
        harness.start_workers(app, self.workers, timeout_s=WORKERS_READY_S)
        return time.monotonic() - started

    def workers_alive(self) -> list[str]:
        return [w.host_id for w in self.workers if w.running()]

    # -- verification

    def verify_tags(self, results: Sequence[dict[str, Any]]) -> dict[str, Any]:
        """Each answered reference names, on the host the answer gave, the image id the answer gave."""
        by_host = {w.host_id: client for w, client in zip(self.workers, self.clients)}
        seen = {(record["image"], record["host"], record["image_id"]) for record in results}
        mismatches = [
            problem for reference, host, image_id in sorted(seen)
            if (problem := self._tag_problem(by_host.get(host), reference, host, image_id)) is not None
        ]
        return {"references_checked": len(seen), "mismatches": mismatches}

    @staticmethod
    def _tag_problem(client: Any, reference: str, host: str, image_id: str) -> dict[str, str] | None:
        import docker.errors

        if client is None:
            return {"reference": reference, "host": host, "problem": "unknown host"}
        try:
            found = client.images.get(reference).id
        except docker.errors.ImageNotFound:
            return {"reference": reference, "host": host, "problem": "not on that host"}
        if found.removeprefix("sha256:") != str(image_id).removeprefix("sha256:"):
            return {"reference": reference, "host": host, "problem": f"is {found}, answer said {image_id}"}
        return None

    # -- cleanup

    def cleanup(self, pushed_digests: Sequence[str]) -> dict[str, Any]:
        """Stop the workers; remove the images, the pushed manifests and the database; report each."""
        report: dict[str, Any] = {}
        for worker in self.workers:
            worker.stop()
        report["workers_stopped"] = [w.host_id for w in self.workers]
        report["workers_still_running"] = self.workers_alive()
        report.update(self._remove_images())
        if pushed_digests:
            report["registry_manifests"] = delete_manifests(f"{SOAK_REPOSITORY}/{self.run_id}", pushed_digests)
        report.update(self._flush_redis())
        for client in self.clients:
            client.close()
        return report

    def _remove_images(self) -> dict[str, Any]:
        try:
            before = {f"engine{n}": len(harness.labelled_images(c, f"{SOAK_LABEL}={self.run_id}", all_layers=True))
                      for n, c in enumerate(self.clients, start=1)}
            removal = harness.remove_images(self.clients, label=SOAK_LABEL, repositories=[self.repository])
            left = {
                f"engine{n}": len(harness.labelled_images(c, SOAK_LABEL, all_layers=True))
                + len(c.images.list(name=self.repository))
                for n, c in enumerate(self.clients, start=1)
            }
        except Exception as exc:  # noqa: BLE001 - the rest of the cleanup still runs
            return {"image_error": f"{type(exc).__name__}: {exc}"}
        return {"images_before": before, "image_removal": removal, "images_left": left}

    def _flush_redis(self) -> dict[str, Any]:
        report: dict[str, Any] = {}
        try:
            report["redis_keys_flushed"] = int(self.redis.dbsize())
            self.redis.flushdb()
            report["redis_keys_left"] = int(self.redis.dbsize())
        except Exception as exc:  # noqa: BLE001
            report["redis_error"] = f"{type(exc).__name__}: {exc}"
        return report

    def keep_logs(self) -> Path:
        """Copy the worker logs to ``<farm dir>/soak-logs/<run>`` (removed later if the soak passes)."""
        logs = harness.farm_dir() / "soak-logs" / self.run_id
        try:
            logs.mkdir(parents=True, exist_ok=True)
            for worker in self.workers:
                if worker.log_path.exists():
                    shutil.copy(worker.log_path, logs / worker.log_path.name)
        except OSError as exc:
            print(f"soak: could not keep the worker logs in {logs}: {exc}", file=sys.stderr)
        return logs
