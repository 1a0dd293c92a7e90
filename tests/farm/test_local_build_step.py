"""build_docker_image on a real engine: each case of prefect-docker's own step tests."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import docker
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.local_steps import build_docker_image
from dockyard.tasks.local_steps import build_image
from dockyard.tasks.errors import BuildError

TIMESTAMP_TAG = re.compile(r"^\d{4}-\d{2}-\d{2}t\d{2}-\d{2}-\d{2}-\d{6}-00-00$")


def tags_of(engine: docker.DockerClient, image_id: str) -> set[str]:
    return set(engine.images.get(image_id).tags)


def test_name_only_builds_with_a_timestamp_tag(project: Path, repo: str, engine: docker.DockerClient) -> None:
    result = build_docker_image(image_name=repo)
    assert TIMESTAMP_TAG.match(result["tag"]), result["tag"]
    assert result["image_name"] == repo
    assert result["image"] == f"{repo}:{result['tag']}"
    assert result["additional_tags"] == []
    assert tags_of(engine, result["image_id"]) == {result["image"]}
    assert engine.images.get(result["image_id"]).labels["io.dockyard.builder"] == "dockyard"


def test_custom_dockerfile(project: Path, repo: str, engine: docker.DockerClient, base_image: str) -> None:
    (project / "Custom.Dockerfile").write_text(f"FROM {base_image}\nLABEL custom=yes\n")
    result = build_docker_image(image_name=repo, dockerfile="Custom.Dockerfile", tag="custom")
    assert engine.images.get(result["image_id"]).labels["custom"] == "yes"


def test_explicit_tag(project: Path, repo: str, engine: docker.DockerClient) -> None:
    result = build_docker_image(image_name=repo, tag="v1")
    assert result["tag"] == "v1" and result["image"] == f"{repo}:v1"
    assert tags_of(engine, result["image_id"]) == {f"{repo}:v1"}


def test_additional_tags_are_applied_to_the_same_image(project: Path, repo: str, engine: docker.DockerClient) -> None:
    result = build_docker_image(image_name=repo, tag="main", additional_tags=["v1.0", "abc123"])
    assert result["additional_tags"] == ["v1.0", "abc123"]
    assert tags_of(engine, result["image_id"]) == {f"{repo}:main", f"{repo}:v1.0", f"{repo}:abc123"}


def test_auto_generates_and_removes_its_dockerfile(
    tmp_path: Path, repo: str, engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    context = tmp_path / "myflow"
    context.mkdir()
    (context / "flow.py").write_text("print('flow')\n")
    monkeypatch.chdir(context)
    result = build_docker_image(image_name=repo, tag="auto", dockerfile="auto")
    image = engine.images.get(result["image_id"])
    assert image.attrs["Config"]["WorkingDir"] == "/opt/prefect/myflow/"
    assert sorted(p.name for p in context.iterdir()) == ["flow.py"]


def test_auto_installs_requirements(
    tmp_path: Path, repo: str, engine: docker.DockerClient, settings: Settings
) -> None:
    context = tmp_path / "withreqs"
    context.mkdir()
    (context / "requirements.txt").write_text("requests\n")
    custom = settings.model_copy(update={"auto_install_command": "cat"})
    result = build_image(repo, tag="reqs", dockerfile="auto", build_kwargs={"path": str(context)}, settings=custom)
    history = " ".join(str(layer.get("CreatedBy")) for layer in engine.images.get(result["image_id"]).history())
    assert "cat /opt/prefect/withreqs/requirements.txt" in history
    assert sorted(p.name for p in context.iterdir()) == ["requirements.txt"]


def test_auto_with_path_uses_that_directory(
    tmp_path: Path, repo: str, engine: docker.DockerClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    context = tmp_path / "ctxdir"
    context.mkdir()
    (context / "data.txt").write_text("x\n")
    monkeypatch.chdir(elsewhere)
    result = build_docker_image(image_name=repo, tag="p", dockerfile="auto", path=str(context))
    assert engine.images.get(result["image_id"]).attrs["Config"]["WorkingDir"] == "/opt/prefect/ctxdir/"
    assert sorted(p.name for p in context.iterdir()) == ["data.txt"]
    assert list(elsewhere.iterdir()) == []


def test_auto_persist_dockerfile(tmp_path: Path, repo: str, monkeypatch: pytest.MonkeyPatch, base_image: str) -> None:
    monkeypatch.chdir(tmp_path)
    build_docker_image(image_name=repo, tag="keep", dockerfile="auto", persist_dockerfile=True)
    persisted = (tmp_path / "Dockerfile.generated").read_text()
    assert persisted.startswith(f"FROM {base_image}\n")
    assert f"WORKDIR /opt/prefect/{tmp_path.name}/" in persisted
    assert not (tmp_path / "Dockerfile").exists()


def test_auto_persist_to_custom_output_path(tmp_path: Path, repo: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    build_docker_image(
        image_name=repo, tag="keep", dockerfile="auto", persist_dockerfile=True,
        dockerfile_output_path="out/My.Dockerfile",
    )
    assert (tmp_path / "out" / "My.Dockerfile").read_text().startswith("FROM ")
    assert not (tmp_path / "Dockerfile.generated").exists()


def test_auto_refuses_an_existing_dockerfile(project: Path, repo: str, engine: docker.DockerClient) -> None:
    before = (project / "Dockerfile").read_text()
    with pytest.raises(ValueError, match="Dockerfile already exists."):
        build_docker_image(image_name=repo, dockerfile="auto")
    assert (project / "Dockerfile").read_text() == before
    assert engine.images.list(name=repo) == []


class UntouchableEngine:
    """An engine client that fails the test if the build reaches it."""

    def __getattr__(self, name: str) -> object:
        raise AssertionError(f"the engine was used ({name}) for an invalid name")


@pytest.mark.parametrize("bad_name", ["my image", "name\twith-tab", "trailing\n", ""])
def test_invalid_image_name_builds_nothing(project: Path, bad_name: str, settings: Settings) -> None:
    with pytest.raises(ValueError, match="Invalid Docker image name"):
        build_docker_image(image_name=bad_name)
    with pytest.raises(ValueError, match="Invalid Docker image name"):
        build_image(bad_name, settings=settings, client=UntouchableEngine())  # type: ignore[arg-type]


def test_default_namespace_is_prefixed(project: Path, settings: Settings, registry: object, engine: docker.DockerClient) -> None:
    namespaced = settings.model_copy(update={"default_namespace": "127.0.0.1:5000/teamns"})
    result = build_image("nsapp", tag="ns", settings=namespaced)
    try:
        assert result["image_name"] == "127.0.0.1:5000/teamns/nsapp"
        assert "127.0.0.1:5000/teamns/nsapp:ns" in tags_of(engine, result["image_id"])
    finally:
        engine.images.remove("127.0.0.1:5000/teamns/nsapp:ns")


def test_name_with_a_namespace_keeps_it(project: Path, settings: Settings, repo: str) -> None:
    namespaced = settings.model_copy(update={"default_namespace": "other/ns"})
    result = build_image(repo, tag="keep", settings=namespaced)
    assert result["image_name"] == repo


def test_access_denied_gets_a_hint(project: Path, repo: str, settings: Settings, registry: object) -> None:
    (project / "Dockerfile").write_text("FROM 127.0.0.1:5000/private/never-pushed:1\n")
    anonymous = settings.model_copy(update={"registry_password": None})
    with pytest.raises(BuildError) as raised:
        build_image(repo, tag="denied", settings=anonymous)
    assert "Docker reported access denied" in str(raised.value)


def test_build_kwargs_pass_through_to_the_engine(project: Path, repo: str, engine: docker.DockerClient, base_image: str) -> None:
    (project / "Dockerfile").write_text(f"FROM {base_image}\nARG GREETING\nLABEL greeting=$GREETING\n")
    result = build_docker_image(
        image_name=repo, tag="kw", buildargs={"GREETING": "hi"}, labels={"team": "infra"}
    )
    labels = engine.images.get(result["image_id"]).labels
    assert labels["greeting"] == "hi" and labels["team"] == "infra"
    assert labels["io.dockyard.builder"] == "dockyard"


def test_steps_on_a_bridgeless_engine_get_loopback_and_release_their_sandbox(
    project: Path, repo: str, engine: docker.DockerClient, base_image: str
) -> None:
    """The farm's engines have no bridge: a step gets only loopback, and its
    network sandbox is released when the step's container goes (the engine's
    implicit default would leak one sandbox per step until its next start)."""
    assert not [net for net in engine.networks.list(names=["bridge"]) if net.name == "bridge"]
    (project / "Dockerfile").write_text(
        f"FROM {base_image}\nRUN cat /proc/net/dev > /interfaces\nRUN echo {uuid.uuid4()} > /run-id\n"
    )
    since = int(time.time())
    result = build_docker_image(image_name=repo, tag="net")
    reader = engine.containers.run(result["image_id"], "cat /interfaces", network_mode="none", detach=True)
    try:
        reader.wait(timeout=30)
        interfaces = reader.logs().decode()
    finally:
        reader.remove(force=True)
    names = {line.split(":")[0].strip() for line in interfaces.splitlines()[2:]}
    assert names == {"lo"}
    actions: dict[str, list[str]] = {}
    until = int(time.time()) + 1
    for event in engine.events(since=since, until=until, decode=True, filters={"type": "network"}):
        attributes = event["Actor"]["Attributes"]
        if attributes.get("name") == "none" and attributes.get("container") != reader.id:
            actions.setdefault(attributes["container"], []).append(event["Action"])
    assert len(actions) >= 2, actions  # one container per RUN step
    assert all(steps == ["connect", "disconnect"] for steps in actions.values()), actions
