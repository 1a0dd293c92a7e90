"""The buildx backend on the real engines: secrets, build args, platforms, retries, private logins."""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from pathlib import Path

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.local_steps import build_image
from dockyard.tasks.request.spec import MULTI_PLATFORM_NEEDS_PUSH
from dockyard.tasks.engine.connection import open_client
from dockyard.tasks.errors import InvalidInput
from tests.farm.conftest import Registry, WorkerProcess
from tests.farm.flaky_registry import FlakyRegistry

TIMEOUT_S = 120


def files_in_image(engine: docker.DockerClient, image_id: str) -> dict[str, bytes]:
    """Every regular file of the image's filesystem, read from a created (never started) container."""
    container = engine.containers.create(image_id, command=["true"], network_mode="none")
    try:
        archive = io.BytesIO(b"".join(container.export()))
    finally:
        container.remove(force=True)
    found: dict[str, bytes] = {}
    with tarfile.open(fileobj=archive) as tar:
        for member in tar:
            if member.isfile():
                handle = tar.extractfile(member)
                found[member.name] = handle.read() if handle else b""
    return found


def test_a_secret_and_build_args_build_on_the_farm_and_the_secret_stays_out(
    tmp_path: Path, repo: str, base_image: str, redis_client: redis.Redis,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    secret = f"s3cr3t-{uuid.uuid4().hex}"
    (tmp_path / "token.txt").write_text(secret)
    context = tmp_path / "ctx"
    context.mkdir()
    (context / "Dockerfile").write_text(
        f"FROM {base_image}\nARG GREETING\n"
        "RUN --mount=type=secret,id=token wc -c < /run/secrets/token > /secret-length && echo $GREETING > /greeting\n"
    )
    result = client.build(
        repo, path=str(context), tag="bx", build_backend="buildx", timeout_s=TIMEOUT_S,
        secrets=[f"id=token,src={tmp_path / 'token.txt'}"], build_args={"GREETING": "hello-buildx"},
    )
    engine = engines[[w.host_id for w in farm_workers].index(result["host"])]
    files = files_in_image(engine, result["image_id"])
    assert files["greeting"].strip() == b"hello-buildx"
    assert int(files["secret-length"].strip()) == len(secret)
    assert not any(secret.encode() in content for content in files.values())
    assert secret.encode() not in json.dumps(engine.images.get(result["image_id"]).history()).encode()
    assert not any(secret.encode() in (redis_client.dump(name) or b"") for name in redis_client.scan_iter("dockyard-test:*"))


def test_several_platforms_without_push_give_the_reference_error(project: Path, repo: str, settings: Settings) -> None:
    with pytest.raises(ValueError, match="Multi-platform builds require push=True") as raised:
        build_image(repo, build_backend="buildx", build_kwargs={"platforms": ["linux/amd64", "linux/arm64"]}, settings=settings)
    assert str(raised.value) == MULTI_PLATFORM_NEEDS_PUSH
    with pytest.raises(InvalidInput, match="Multi-platform builds require push=True"):
        client.build(repo, build_backend="buildx", platform=["linux/amd64", "linux/arm64"])


def test_a_transient_registry_error_is_retried(
    tmp_path: Path, repo: str, registry: Registry, settings: Settings
) -> None:
    with FlakyRegistry(registry.url, registry.username, registry.password, failures=2) as flaky:
        context = tmp_path / "ctx"
        context.mkdir()
        (context / "Dockerfile").write_text(f"FROM {flaky.address}/base/busybox:1\nRUN echo {uuid.uuid4()} > /x\n")
        quick = settings.model_copy(update={"transient_retries": 3, "transient_backoff_s": 0.2})
        lines: list[str] = []
        result = build_image(
            repo, tag="retried", build_backend="buildx", build_kwargs={"path": str(context)},
            settings=quick, output=lines.append,
        )
    assert flaky.failed == 2 and flaky.forwarded > 0
    assert any("retrying" in line for line in lines)
    assert result["image_id"].startswith("sha256:")


def test_buildx_push_with_credentials_leaves_no_login_behind(
    project: Path, repo: str, registry: Registry, settings: Settings, farm_workers: list[WorkerProcess]
) -> None:
    config = Path.home() / ".docker" / "config.json"
    before = config.read_text() if config.exists() else None
    built = client.build(repo, path=str(project), tag="bxpush", build_backend="buildx", timeout_s=TIMEOUT_S)
    pushed = client.push(repo, tag="bxpush", credentials=registry.credentials, build_backend="buildx", timeout_s=TIMEOUT_S)
    assert pushed["host"] == built["host"]
    assert pushed["digest"] == registry.manifest_digest(repo.removeprefix(registry.url + "/"), "bxpush")
    after = config.read_text() if config.exists() else None
    assert after == before, "the worker user's Docker config did not change"
    if after:
        assert registry.url not in json.loads(after).get("auths", {})


def test_buildx_result_is_tagged_like_docker_py(project: Path, repo: str, settings: Settings) -> None:
    engine = open_client(settings)
    try:
        result = build_image(repo, tag="a", additional_tags=["b"], build_backend="buildx", settings=settings)
        assert {f"{repo}:a", f"{repo}:b"} <= set(engine.images.get(result["image_id"]).tags)
    finally:
        engine.close()
