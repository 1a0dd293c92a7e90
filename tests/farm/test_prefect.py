"""Prefect, for real: the drop-in steps through Prefect's own step runner, and a real flow."""

from __future__ import annotations

import asyncio
import os
import tempfile
import uuid
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="dockyard-prefect-home-"))
os.environ.setdefault("PREFECT_LOGGING_TO_API_BATCH_INTERVAL", "0.3")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")

import yaml  # noqa: E402 - after PREFECT_HOME is chosen
from prefect import flow  # noqa: E402
from prefect.deployments.steps.core import run_steps  # noqa: E402

from dockyard.flows import build_and_push_on_farm  # noqa: E402
from tests.farm.conftest import Registry, WorkerProcess  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "workers" / "example"


def test_prefect_yaml_steps_run_through_prefects_step_runner(
    repo: str, registry: Registry, base_image: str, monkeypatch: pytest.MonkeyPatch,
    farm_workers: list[WorkerProcess], capsys: pytest.CaptureFixture[str],
) -> None:
    document = yaml.safe_load((EXAMPLE / "prefect.yaml").read_text())
    document["build"][0]["dockyard.steps.build_docker_image"]["image_name"] = repo
    # the engine may hold this example's layers from `dockyard up`: run its RUN step, so its output shows
    document["build"][0]["dockyard.steps.build_docker_image"]["nocache"] = True
    push_step = document["push"][0]["dockyard.steps.push_docker_image"]
    push_step["credentials"] = registry.credentials
    assert push_step["image_name"] == "{{ build-image.image_name }}"
    monkeypatch.chdir(EXAMPLE)

    outputs: dict[str, Any] = asyncio.run(run_steps(document["build"] + document["push"], {}))

    built = outputs["build-image"]
    assert set(built) == {"image_name", "tag", "image", "image_id", "additional_tags"}
    assert built["image_name"] == repo and built["tag"] == "dev"
    digest = registry.manifest_digest(repo.removeprefix(registry.url + "/"), "dev")
    assert digest is not None and digest == outputs["digest"], "the push step got the build's name and tag"
    assert "building the dockyard example" in capsys.readouterr().out, "the step printed the build output"
    assert not list(EXAMPLE.glob(".dockyard-*")), "nothing left in the project"


def test_a_flow_builds_and_pushes_and_logs_the_build_output(
    tmp_path: Path, repo: str, registry: Registry, base_image: str, farm_workers: list[WorkerProcess]
) -> None:
    marker = f"flow-output-{uuid.uuid4().hex[:8]}"
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(f"FROM {base_image}\nRUN echo {marker}\n")

    @flow(name="dockyard-release")
    def release() -> dict[str, Any]:
        return build_and_push_on_farm(repo, path=str(context), tag="flow", credentials=registry.credentials)

    state = release(return_state=True)
    result = state.result()
    assert result["push"]["digest"] == registry.manifest_digest(repo.removeprefix(registry.url + "/"), "flow")
    assert result["push"]["host"] == result["build"]["host"]

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    async def logs() -> list[str]:
        async with get_client() as api:
            found = await api.read_logs(LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id])))
            return [entry.message for entry in found]

    messages: list[str] = []
    for _ in range(50):
        messages = asyncio.run(logs())
        if any(marker in message and "echo" not in message for message in messages):
            break
        asyncio.run(asyncio.sleep(0.2))
    assert any(marker in message and "echo" not in message for message in messages), messages
