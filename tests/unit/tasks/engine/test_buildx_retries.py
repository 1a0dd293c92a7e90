"""A buildx build's transient errors are retried by one layer only: the Celery task's retry on the farm
(``autoretry_for=(TransientError,)``, ``transient_retries`` times), the local step's own loop off it.

python-on-whales' ``buildx.build`` is replaced by a fake that counts its attempts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from python_on_whales.components.buildx.cli_wrapper import BuildxCLI
from python_on_whales.exceptions import DockerException

from dockyard.config.settings import Settings
from dockyard.tasks.engine import buildx
from dockyard.tasks.errors import BaseUnavailable, BuildError, TransientError
from tests.unit.fakes import FakeEngine
from tests.unit.support import make_settings

OUTAGE = "ERROR: failed to solve: docker.io/library/python:3.12: 503 Service Unavailable"
RUN_FAILED = "ERROR: process \"/bin/sh -c make\" did not complete: returned a non-zero code: 2"
IMAGE_ID = "sha256:" + "ab" * 32


class FakeBuildx:
    """``BuildxCLI.build``: fails with ``errors`` (one per attempt), then builds; counts the attempts."""

    def __init__(self, errors: list[str]) -> None:
        self.errors = list(errors)
        self.attempts = 0

    def __call__(self, _cli: Any, context_path: str, **kwargs: Any) -> Iterator[str]:
        self.attempts += 1
        if self.errors:
            raise DockerException(["docker", "buildx", "build", context_path], 1, b"", self.errors.pop(0).encode())
        Path(kwargs["metadata_file"]).write_text(json.dumps({"containerimage.config.digest": IMAGE_ID}))
        return iter(["#1 DONE\n"])


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []
    monkeypatch.setattr("time.sleep", slept.append)
    return slept


def fake_buildx(monkeypatch: pytest.MonkeyPatch, errors: list[str]) -> FakeBuildx:
    fake = FakeBuildx(errors)

    def build(cli: BuildxCLI, context_path: str, **kwargs: Any) -> Iterator[str]:
        return fake(cli, context_path, **kwargs)

    monkeypatch.setattr(BuildxCLI, "build", build)
    return fake


def settings(retries: int = 3) -> Settings:
    return make_settings(transient_retries=retries, transient_backoff_s=2.0)


def build(tmp_path: Path, chosen: Settings) -> str:
    (tmp_path / "Dockerfile").write_text("FROM python:3.12\n")
    return buildx.buildx_build(
        chosen, context=tmp_path, dockerfile="Dockerfile", tags=["reg/app:1"], build_kwargs={},
        labels={}, output=lambda _text: None,
    )


def test_a_transient_error_is_tried_once_and_left_to_the_tasks_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float],
) -> None:
    fake = fake_buildx(monkeypatch, [OUTAGE] * 10)
    with pytest.raises(BaseUnavailable, match="503"):
        build(tmp_path, settings(retries=3))
    assert fake.attempts == 1
    assert sleeps == [], "no backoff inside the build: the task's retry waits"


def test_one_farm_build_is_attempted_transient_retries_plus_one_times(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float],
) -> None:
    """The task's retry layer as Celery runs it: the task body again while it raises what
    ``autoretry_for`` names, up to ``max_retries`` times."""
    from dockyard.tasks.celery_tasks import build_task, get_settings

    retries = get_settings().transient_retries
    assert build_task.max_retries == retries and retries >= 1
    fake = fake_buildx(monkeypatch, [OUTAGE] * 100)
    for run in range(retries + 1):
        try:
            build(tmp_path, settings(retries=retries))
        except build_task.autoretry_for:
            if run == retries:
                break
    assert fake.attempts == retries + 1, f"{fake.attempts} attempts of one build, not (r+1)^2"


def test_a_failed_run_step_is_not_retried_by_either_layer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float],
) -> None:
    fake = fake_buildx(monkeypatch, [RUN_FAILED])
    with pytest.raises(BuildError) as raised:
        build(tmp_path, settings())
    assert not isinstance(raised.value, TransientError)
    assert fake.attempts == 1


def test_a_build_that_succeeds_returns_the_image_id_after_one_attempt(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float],
) -> None:
    fake = fake_buildx(monkeypatch, [])
    assert build(tmp_path, settings()) == IMAGE_ID
    assert fake.attempts == 1


# the local step: no Celery behind it, so it retries a buildx build itself, once per outage


def local_build(tmp_path: Path, chosen: Settings) -> Any:
    from dockyard.tasks.local_steps import build_image

    (tmp_path / "Dockerfile").write_text("FROM python:3.12\n")
    return build_image(
        "reg.example/app", tag="1", build_backend="buildx", build_kwargs={"path": str(tmp_path)},
        settings=chosen, client=FakeEngine(), output=lambda _text: None,  # type: ignore[arg-type]
    )


def test_the_local_step_retries_a_buildx_outage_transient_retries_times_with_backoff(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float],
) -> None:
    fake = fake_buildx(monkeypatch, [OUTAGE] * 100)
    with pytest.raises(BaseUnavailable):
        local_build(tmp_path, settings(retries=3))
    assert fake.attempts == 4
    assert sleeps == [2.0, 4.0, 8.0]


def test_the_local_step_builds_after_a_passing_outage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sleeps: list[float],
) -> None:
    fake = fake_buildx(monkeypatch, [OUTAGE, OUTAGE])
    result = local_build(tmp_path, settings(retries=3))
    assert result["image_id"] == IMAGE_ID
    assert fake.attempts == 3
