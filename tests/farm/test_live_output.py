"""Build output reaches the caller while the build runs; the task shows STARTED and PROGRESS."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

from dockyard.tasks import client
from tests.farm.conftest import WorkerProcess

TIMEOUT_S = 120


def printing_context(root: Path, base_image: str, marker: str) -> Path:
    root.mkdir()
    (root / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN echo first-{marker} && sleep 4 && echo second-{marker}\n"
    )
    return root


def test_the_caller_gets_lines_before_the_build_finishes(
    tmp_path: Path, repo: str, base_image: str, farm_workers: list[WorkerProcess]
) -> None:
    marker = uuid.uuid4().hex[:8]
    context = printing_context(tmp_path / "ctx", base_image, marker)
    seen: list[tuple[float, str]] = []
    result = client.build(
        repo, path=str(context), tag="live", timeout_s=TIMEOUT_S,
        on_output=lambda text: seen.append((time.monotonic(), text)),
    )
    finished = time.monotonic()
    first = [at for at, text in seen if f"first-{marker}" in text and "echo" not in text]
    second = [at for at, text in seen if f"second-{marker}" in text and "echo" not in text]
    assert first and second, seen
    assert finished - first[0] >= 3, "the first line arrived while the build was still running"
    assert second[0] - first[0] >= 3
    assert result["cache"] == "built"


def test_the_task_shows_started_and_progress(
    tmp_path: Path, repo: str, base_image: str, farm_workers: list[WorkerProcess]
) -> None:
    context = printing_context(tmp_path / "ctx", base_image, uuid.uuid4().hex[:8])
    async_result = client.build_signature(repo, path=str(context), tag="states").apply_async()
    states: list[str] = []
    deadline = time.monotonic() + TIMEOUT_S
    while not async_result.ready() and time.monotonic() < deadline:
        states.append(async_result.state)
        time.sleep(0.1)
    assert async_result.get(timeout=5)["image"] == f"{repo}:states"
    assert "STARTED" in states and "PROGRESS" in states, sorted(set(states))


def test_a_caller_that_joins_from_another_process_gets_the_lines_too(
    tmp_path: Path, repo: str, base_image: str, farm_workers: list[WorkerProcess]
) -> None:
    """Another process starts the build; this one joins it (the fast path's join, no task of its own)."""
    import subprocess
    import sys

    marker = uuid.uuid4().hex[:8]
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN for i in 1 2 3 4 5 6; do echo tick-{marker}-$i; sleep 1; done\n")
    starter = subprocess.Popen(
        [sys.executable, "-c", f"from dockyard.tasks import client; client.build({repo!r}, path={str(context)!r}, tag='live', timeout_s=120)"],
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        from dockyard.config.settings import get_settings
        from dockyard.tasks.cache.single_flight import build_cache
        from dockyard.tasks.keyspace import redis_for
        from dockyard.tasks.prepare import prepare_build

        settings = get_settings()
        spec, packed = prepare_build({"image_name": repo, "path": str(context), "tag": "live"}, settings)
        packed.close()
        cache_key = client.caller_cache_key(spec, settings)
        assert cache_key is not None, "the caller resolves the base, so it can join"
        own_lease = build_cache(redis_for(settings), settings).lease(cache_key)
        spec_key = None
        deadline = time.monotonic() + 60
        while spec_key is None and time.monotonic() < deadline:  # this build's lease, not another test's
            spec_key = own_lease.name if redis_for(settings).exists(own_lease.name) else None
            time.sleep(0.1)
        assert spec_key is not None, "the other process's build started"
        seen: list[tuple[float, str]] = []
        result = client.build(
            repo, path=str(context), tag="live", timeout_s=TIMEOUT_S,
            on_output=lambda text: seen.append((time.monotonic(), text)),
        )
        finished = time.monotonic()
    finally:
        assert starter.wait(timeout=TIMEOUT_S) == 0
    ticks = [at for at, text in seen if f"tick-{marker}-" in text and "echo" not in text]
    assert result["cache"] == "joined", result
    assert ticks and finished - ticks[0] >= 2, f"lines of the running build arrived while it ran: {seen}"
