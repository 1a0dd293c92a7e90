"""Redis fails over under pushes: the Sentinel master is SIGKILLed just after pushes are sent, every one is answered.

The push variant of ``tests/farm/test_sentinel.py``. The test runs this module as a script (the
driver, ``main``) in a process of its own, on the ``sentinel://`` URLs of
``workers/provision_sentinel.sh`` (provisioned here, so a ``CI=true`` run needs nothing more), the
test database and prefix, and production defaults: two workers; one build; then ``PUSHES`` pushes of
that image from client threads, each under the build's tag and one tag of its own, and the master
killed the moment the last of them is sent (``dockyard.tasks.client.await_task`` is called right
after the send). A push the old master took with it is sent again once the sentinels name a new one
(``dockyard.tasks.client.Copies``): a push-cache hit, or the same image pushed again. The registry must
serve the answered digest under every tag. Afterwards the killed Redis runs again as a replica.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
import traceback
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from benchmarks import harness
from benchmarks.failover import Resends, stop_on_sigterm
from benchmarks.failover_sentinel import provision
from tests.farm.farm_helpers import production_environment

REPO = Path(__file__).resolve().parents[2]
PUSHES = 6
BUILD_TAG = "built"
RUN_LABEL = "io.dockyard.failover.run"  # as benchmarks.failover: on the run's images, removed afterwards
CALL_TIMEOUT_S = 90.0
DRIVER_TIMEOUT_S = 170


def test_pushes_sent_just_before_the_master_is_killed_are_all_answered_with_the_served_digest(tmp_path: Path) -> None:
    # not at the top: the driver imports this module and must not export the test suite's settings
    from tests.farm.conftest import TEST_REDIS_DB

    figures_path = tmp_path / "figures.json"
    run = subprocess.Popen(
        [sys.executable, "-m", "tests.farm.test_sentinel_push", "--db", TEST_REDIS_DB,
         "--key-prefix", "dockyard-test:", "--json", str(figures_path)],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=production_environment(),
    )
    try:
        _out, err = run.communicate(timeout=DRIVER_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        run.terminate()  # the driver stops the workers it started on SIGTERM
        _out, err = run.communicate(timeout=60)
        pytest.fail(f"the push failover run took over {DRIVER_TIMEOUT_S} s: {err[-4000:]}")
    assert run.returncode == 0, err[-4000:]
    figures = json.loads(figures_path.read_text())
    report = json.dumps(figures, indent=1)
    assert "new_master_port" in figures and figures["killed_port"] != figures["new_master_port"], report
    assert figures["answered_at_kill"] < PUSHES, report  # the kill came while pushes were under way
    assert (figures["answered"], figures["failed"]) == (PUSHES, 0), report
    print(f"pushes answered at the kill: {figures['answered_at_kill']} of {PUSHES}; sent again after the failover: "
          f"{figures['resent_after_failover']}; answers: {figures['outcomes']}; kill to new master: "
          f"{figures.get('kill_to_new_master_s')} s; wall: {figures['wall_s']} s")
    digest = figures["built_digest"]
    assert digest and all(record["digest"] == digest for record in figures["records"]), report  # one image, one digest
    assert figures["served"] == {tag: digest for tag in [BUILD_TAG, *push_tags()]}, report
    assert all(record["cache"] in ("built", "hit", "joined") for record in figures["records"]), report
    assert len(figures["workers_alive_at_end"]) == 2, report


def push_tags() -> list[str]:
    return [f"p{index}" for index in range(PUSHES)]


# the driver: ``python -m tests.farm.test_sentinel_push`` (run by the test above)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="tests.farm.test_sentinel_push", description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=int, default=harness.BENCH_REDIS_DB, help="database on the sentinels' master")
    parser.add_argument("--key-prefix", default=harness.BENCH_KEY_PREFIX)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args(argv)


class Sends:
    """Counts pushes sent (each ``await_task`` follows its send) and answered; ``all_sent`` once every one is."""

    def __init__(self, expected: int) -> None:
        self.expected, self.sent, self.answered = expected, 0, 0
        self.all_sent = threading.Event()
        self._lock = threading.Lock()

    def wrap(self, await_task: Any) -> Any:
        def counted(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                self.sent += 1
                if self.sent >= self.expected:
                    self.all_sent.set()
            try:
                return await_task(*args, **kwargs)
            finally:
                with self._lock:
                    self.answered += 1

        return counted


def write_context(directory: Path, run_id: str) -> Path:
    directory.mkdir(parents=True)
    (directory / "Dockerfile").write_text(
        f"FROM {harness.base_image()}\nLABEL {RUN_LABEL}={run_id}\nRUN echo {uuid.uuid4()} > /built\n"
    )
    return directory


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    setup = provision()
    harness.setup_environment(redis_db=args.db, key_prefix=args.key_prefix)
    os.environ.update(setup.environment(args.db))
    from dockyard.config.settings import get_settings
    from dockyard.tasks import client
    from dockyard.tasks.keyspace import redis_for
    from dockyard.tasks.registry.manifests import served_digest
    from dockyard.tasks.request.spec import Credentials
    from dockyard.workers.app import app

    connection = redis_for(get_settings())
    connection.flushdb()
    run_id = uuid.uuid4().hex[:10]
    engine_urls = harness.docker_hosts()[:2]
    registry_url, user, password = harness.registry()
    credentials = {"username": user, "password": password, "registry_url": registry_url}
    repository = f"{registry_url}/{harness.BENCH_REPOSITORY}/sentinel-push-{run_id}"
    figures: dict[str, Any] = {"run": run_id, "pushes": PUSHES}
    sends = Sends(PUSHES)
    client.await_task = sends.wrap(client.await_task)  # type: ignore[method-assign]

    def one(tag: str) -> dict[str, Any]:
        record: dict[str, Any] = {"tag": tag}
        try:
            answer = client.push(repository, tag=BUILD_TAG, additional_tags=[tag], credentials=credentials,
                                 timeout_s=CALL_TIMEOUT_S)
            record.update(digest=answer.get("digest"), cache=answer.get("cache"), host=answer.get("host"))
        except Exception as exc:  # noqa: BLE001 - every failure is a figure
            record["error"] = f"{type(exc).__name__}: {exc}"[:300]
            record["where"] = [f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno} {f.name}" for f in traceback.extract_tb(exc.__traceback__)][-12:]
        return record

    with harness.temp_dir("dockyard-sentinel-push-") as scratch:
        context = write_context(scratch / "context", run_id)
        workers = harness.bench_workers(f"sentinel-push-{run_id}", engine_urls, scratch)
        try:
            harness.start_workers(app, workers, timeout_s=120)
            built = client.build(repository, path=str(context), tag=BUILD_TAG, timeout_s=CALL_TIMEOUT_S)
            figures["built_on"] = built.get("host")
            resends = Resends()
            logging.getLogger("dockyard.client").addHandler(resends)
            began = time.monotonic()
            with ThreadPoolExecutor(max_workers=PUSHES) as pool:
                futures = [pool.submit(one, tag) for tag in push_tags()]
                if not sends.all_sent.wait(timeout=CALL_TIMEOUT_S):
                    raise RuntimeError(f"only {sends.sent} of {PUSHES} pushes were sent")
                figures["answered_at_kill"] = sends.answered
                killed_at = time.monotonic()
                port, pid = setup.kill_master()
                figures.update(killed_port=port, killed_pid=pid)
                figures["new_master_port"] = setup.wait_new_master(port)
                figures["kill_to_new_master_s"] = round(time.monotonic() - killed_at, 2)
                records = [future.result() for future in futures]
            figures["wall_s"] = round(time.monotonic() - began, 2)
            figures["resent_after_failover"] = resends.count
            failed = [record for record in records if "error" in record]
            figures.update(answered=len(records) - len(failed), failed=len(failed), records=records)
            figures["outcomes"] = {cache: sum(r.get("cache") == cache for r in records) for cache in {r.get("cache") for r in records}}
            secret = Credentials.parse({"username": user, "password": password})
            figures["served"] = {tag: served_digest(repository, tag, secret) for tag in [BUILD_TAG, *push_tags()]}
            figures["built_digest"] = figures["served"][BUILD_TAG]
            figures["workers_alive_at_end"] = [w.host_id for w in workers if w.running()]
        except BaseException:
            harness.print_log_tails(workers)
            raise
        finally:
            for worker in workers:
                worker.stop()
            provision()  # the killed Redis comes back as a replica of the new master
            engines = [harness.engine(url, logged_in=False) for url in engine_urls]
            figures["images_removed"] = harness.remove_images(engines, label=RUN_LABEL, repositories=[repository])["removed"]
            connection.flushdb()
    print(json.dumps(figures), flush=True)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
