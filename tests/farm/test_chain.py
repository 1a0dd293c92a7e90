"""Build and push through a real Celery worker on the real farm."""

from __future__ import annotations

import tempfile
from pathlib import Path

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks.client import build_and_push, build_signature, prepare_and_upload, push_signature
from dockyard.tasks.task_names import BUILD_TASK
from dockyard.tasks.errors import InvalidInput, RegistryAuthError
from dockyard.tasks.teams.keys import team_key
from tests.farm.conftest import Registry, WorkerProcess

TIMEOUT_S = 180


def test_chain_build_then_push_through_the_worker(
    project: Path, repo: str, registry: Registry, farm_workers: list[WorkerProcess]
) -> None:
    job = build_and_push(
        repo, credentials=registry.credentials, path=str(project), tag="chained", additional_tags=["extra"],
    ).apply_async()
    pushed = job.get(timeout=TIMEOUT_S)
    built = job.parent.get(timeout=5)
    assert built["host"] in {each.host_id for each in farm_workers}
    assert pushed["host"] == built["host"], "push runs on the host that holds the image"
    assert pushed["image_name"] == built["image_name"] == repo
    assert pushed["tag"] == "chained" and pushed["additional_tags"] == ["extra"]
    repository = repo.removeprefix(registry.url + "/")
    assert registry.manifest_digest(repository, "chained") == pushed["digest"]
    assert registry.manifest_digest(repository, "extra") == pushed["digest"]


def test_push_sent_on_its_own_after_a_build(project: Path, repo: str, registry: Registry, worker: str) -> None:
    built = build_signature(repo, path=str(project), tag="solo").apply_async().get(timeout=TIMEOUT_S)
    pushed = push_signature(repo, tag=built["tag"], credentials=registry.credentials).apply_async().get(timeout=TIMEOUT_S)
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "solo") == pushed["digest"]


def test_errors_cross_the_wire_with_their_type(project: Path, worker: str) -> None:
    """Sent by name, so the caller's validator never runs: the worker's InvalidInput comes back as such."""
    from dockyard.workers.app import app

    result = app.send_task(BUILD_TASK, kwargs={"image_name": "bad name", "path": str(project)})
    with pytest.raises(InvalidInput, match="Invalid Docker image name"):
        result.get(timeout=TIMEOUT_S)
    assert result.state == "FAILURE" and type(result.result) is InvalidInput


def test_wrong_password_fails_the_chain_without_retrying_forever(project: Path, repo: str, registry: Registry, worker: str) -> None:
    wrong = {**registry.credentials, "password": "wrong"}
    job = build_and_push(repo, credentials=wrong, path=str(project), tag="nope").apply_async()
    with pytest.raises(RegistryAuthError):
        job.get(timeout=TIMEOUT_S)
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "nope") is None


def test_unknown_build_arguments_are_refused(project: Path, repo: str, worker: str) -> None:
    """Sent by name with arguments the caller would refuse: the worker refuses them too."""
    from dockyard.workers.app import app

    for bad in ({"labels": "not-a-dict"}, {"no_such_option": True}):
        result = app.send_task(BUILD_TASK, kwargs={"image_name": repo, "path": str(project), **bad})
        with pytest.raises(InvalidInput):
            result.get(timeout=TIMEOUT_S)


WORKER_DIRECTORY = Path("/etc")  # a directory of the worker's own, outside the shared root (the temp dir)
assert not WORKER_DIRECTORY.is_relative_to(tempfile.gettempdir())


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"path": str(WORKER_DIRECTORY)}, "DOCKYARD_SHARED_CONTEXT_ROOT"),
        ({"dockerfile": "auto", "persist_dockerfile": True, "dockerfile_output_path": "/tmp/x"}, "persist_dockerfile"),
        ({"build_backend": "buildx", "secrets": ["id=x,env=DOCKYARD_SEAL_PRIVATE_KEY"]}, "read on the caller"),
        ({"network_mode": "host"}, "DOCKYARD_ALLOW_HOST_NETWORK"),
    ],
    ids=["a worker directory", "persist_dockerfile", "an env secret of the worker", "host network"],
)
def test_raw_arguments_by_name_never_read_the_workers_files_or_environment(
    arguments: dict[str, object], message: str, project: Path, repo: str,
    engines: list[docker.DockerClient], worker: str,
) -> None:
    from dockyard.workers.app import app

    (project / "Dockerfile").unlink()  # so that "auto" gets as far as the output path
    sent = {"image_name": repo, "path": str(project), **arguments}
    result = app.send_task(BUILD_TASK, kwargs=sent)
    with pytest.raises(InvalidInput, match=message):
        result.get(timeout=TIMEOUT_S)
    assert [image for engine in engines for image in engine.images.list(name=repo)] == [], "nothing built"
    assert not Path("/tmp/x").exists()


def _hand_made_spec(repo: str, project: Path, settings: Settings) -> dict[str, object]:
    """A valid spec whose context is in the store, as a dict to spoil by hand."""
    spec = prepare_and_upload(repo, {"path": str(project), "tag": "good"}, settings)
    return spec.model_dump()


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        ({"tag": "v 1"}, "Invalid Docker tag"),
        ({"additional_tags": "latest"}, "additional_tags"),
        ({"key": "0" * 64}, "key does not match"),
        ({"dockerfile": "/etc/passwd"}, "inside the build context"),
        ({"image_name": "127.0.0.1:5000/Team/App"}, "lowercase"),
        ({"context_path": str(WORKER_DIRECTORY)}, "DOCKYARD_SHARED_CONTEXT_ROOT"),
    ],
    ids=[
        "tag with a space", "additional_tags a string", "another key", "absolute Dockerfile",
        "uppercase repository", "a worker directory",
    ],
)
def test_the_worker_refuses_a_hand_made_spec_the_caller_would_refuse(
    spoil: dict[str, object], message: str, project: Path, repo: str, settings: Settings,
    redis_client: redis.Redis, engines: list[docker.DockerClient], worker: str,
) -> None:
    from dockyard.workers.app import app

    spec = {**_hand_made_spec(repo, project, settings), **spoil}
    result = app.send_task(BUILD_TASK, kwargs={"spec": spec})
    with pytest.raises(InvalidInput, match=message):
        result.get(timeout=TIMEOUT_S)
    assert [image for engine in engines for image in engine.images.list(name=repo)] == [], "nothing built"
    written = [name for pattern in ("build:*", "lease:*") for name in redis_client.scan_iter(settings.key_prefix + pattern)]
    assert not [name for name in written if str(spec["key"]).encode() in name], "nothing stored under the key"


def test_a_build_sent_by_name_with_prefect_arguments_reads_path_on_the_worker(
    project: Path, repo: str, worker: str
) -> None:
    from dockyard.workers.app import app

    result = app.send_task(
        "dockyard.build_docker_image", kwargs={"image_name": repo, "tag": "by-name", "path": str(project)}
    ).get(timeout=TIMEOUT_S)
    assert result["image"] == f"{repo}:by-name" and result["image_id"].startswith("sha256:")


def test_shared_filesystem_transport_uploads_nothing(project: Path, repo: str, settings: Settings, redis_client: redis.Redis, worker: str) -> None:
    from dockyard.tasks.task_names import BUILD_TASK
    from dockyard.tasks.prepare import prepare_build
    from dockyard.workers.app import app

    path_settings = settings.model_copy(update={"context_transport": "path"})
    spec, packed = prepare_build({"image_name": repo, "tag": "shared", "path": str(project)}, path_settings)
    packed.close()
    assert spec.context_path == str(project.resolve())
    result = app.signature(BUILD_TASK, kwargs={"spec": spec.model_dump()}).apply_async().get(timeout=TIMEOUT_S)
    assert result["cache"] == "built"
    assert not redis_client.exists(team_key(settings, "ctx", spec.context_digest, "meta"))


def test_the_fast_path_answers_without_a_worker(project: Path, repo: str, monkeypatch: pytest.MonkeyPatch, worker: str) -> None:
    from dockyard.tasks import client

    first = client.build(repo, path=str(project), tag="fast")

    def no_worker() -> object:
        raise AssertionError("the fast path sent a task")

    monkeypatch.setattr(client, "caller_app", no_worker)
    again = client.build(repo, path=str(project), tag="fast")
    assert again["cache"] == "hit" and again["image_id"] == first["image_id"]
