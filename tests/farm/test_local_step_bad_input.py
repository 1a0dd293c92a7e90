"""Bad input gets a clear error and leaves nothing behind."""

from __future__ import annotations

from pathlib import Path

import docker
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.local_steps import build_docker_image
from dockyard.tasks.errors import BuildError, InvalidInput


def leftovers(engine: docker.DockerClient, repo: str) -> tuple[list[object], list[object]]:
    """Images tagged in ``repo`` and stopped build containers."""
    return engine.images.list(name=repo), engine.containers.list(all=True, filters={"status": "exited"})


def test_missing_context_path(tmp_path: Path, repo: str) -> None:
    with pytest.raises(InvalidInput, match="is not a directory"):
        build_docker_image(image_name=repo, path=str(tmp_path / "nope"))


def test_missing_dockerfile(project: Path, repo: str, engine: docker.DockerClient) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        build_docker_image(image_name=repo, dockerfile="Nope.Dockerfile")
    assert engine.images.list(name=repo) == []


def test_dockerfile_syntax_error(project: Path, repo: str, engine: docker.DockerClient) -> None:
    (project / "Dockerfile").write_text("FROMM nothing\n")
    with pytest.raises(BuildError, match="(?i)unknown instruction"):
        build_docker_image(image_name=repo, tag="x")
    assert engine.images.list(name=repo) == []


def test_failing_run_leaves_no_image_no_container_no_dockerfile(
    tmp_path: Path, repo: str, engine: docker.DockerClient, base_image: str, settings: Settings
) -> None:
    (tmp_path / "requirements.txt").write_text("x\n")
    before_containers = len(engine.containers.list(all=True))
    failing = settings.model_copy(update={"auto_install_command": "false"})
    from dockyard.tasks.local_steps import build_image

    with pytest.raises(BuildError, match="returned a non-zero code"):
        build_image(repo, tag="x", dockerfile="auto", additional_tags=["y"],
                    build_kwargs={"path": str(tmp_path)}, settings=failing)
    assert engine.images.list(name=repo) == []
    assert len(engine.containers.list(all=True)) == before_containers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["requirements.txt"]


def test_unknown_build_backend(project: Path, repo: str) -> None:
    with pytest.raises(ValueError, match="Invalid build_backend 'podman'"):
        build_docker_image(image_name=repo, build_backend="podman")


def test_unknown_build_kwarg(project: Path, repo: str, engine: docker.DockerClient) -> None:
    with pytest.raises(InvalidInput, match="build argument"):
        build_docker_image(image_name=repo, tag="x", no_such_option=True)
    assert engine.images.list(name=repo) == []


@pytest.mark.parametrize("bad_tag", ["has space", "-leading", "a" * 129, "colon:tag"])
def test_malformed_tag(project: Path, repo: str, bad_tag: str) -> None:
    with pytest.raises(InvalidInput, match="Invalid Docker tag"):
        build_docker_image(image_name=repo, tag=bad_tag)
