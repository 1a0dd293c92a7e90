"""dockyard.tasks.context.auto_dockerfile: the generated Dockerfile of dockerfile="auto" (temporary directories only)."""

from __future__ import annotations

import io
import tarfile
from pathlib import Path

import pytest

from dockyard.tasks.context.auto_dockerfile import (
    append_generated_dockerfile,
    auto_dockerfile_lines,
    generated_dockerfile,
    persist_dockerfile,
)
from dockyard.tasks.errors import InvalidInput
from tests.unit.fakes import context_tar


def test_auto_lines_without_requirements(tmp_path: Path) -> None:
    context = tmp_path / "proj"
    context.mkdir()
    assert auto_dockerfile_lines(context, base_image="base:1", install_command="pip install -r") == [
        "FROM base:1",
        "COPY . /opt/prefect/proj/",
        "WORKDIR /opt/prefect/proj/",
    ]


def test_auto_lines_install_requirements_first(tmp_path: Path) -> None:
    context = tmp_path / "proj"
    context.mkdir()
    (context / "requirements.txt").write_text("requests\n")
    assert auto_dockerfile_lines(context, base_image="base:1", install_command="uv pip install -r") == [
        "FROM base:1",
        "COPY requirements.txt /opt/prefect/proj/requirements.txt",
        "RUN uv pip install -r /opt/prefect/proj/requirements.txt",
        "COPY . /opt/prefect/proj/",
        "WORKDIR /opt/prefect/proj/",
    ]


def test_auto_lines_name_the_resolved_directory(tmp_path: Path) -> None:
    (tmp_path / "real").mkdir()
    lines = auto_dockerfile_lines(tmp_path / "real" / ".", base_image="b", install_command="i")
    assert "WORKDIR /opt/prefect/real/" in lines


def test_the_generated_file_exists_inside_the_block_and_is_removed_after(tmp_path: Path) -> None:
    with generated_dockerfile(tmp_path, ["FROM b", "RUN true"]) as name:
        assert (tmp_path / name).read_text() == "FROM b\nRUN true\n"
        assert name != "Dockerfile" and "/" not in name
    assert list(tmp_path.iterdir()) == []


def test_the_generated_file_is_removed_when_the_build_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError):
        with generated_dockerfile(tmp_path, ["FROM b"]):
            raise RuntimeError("build failed")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_dockerfile_is_refused_and_kept(tmp_path: Path) -> None:
    (tmp_path / "Dockerfile").write_text("FROM mine\n")
    with pytest.raises(InvalidInput, match="Dockerfile already exists."):
        with generated_dockerfile(tmp_path, ["FROM b"]):
            pass
    assert [path.name for path in tmp_path.iterdir()] == ["Dockerfile"]
    assert (tmp_path / "Dockerfile").read_text() == "FROM mine\n"


def test_concurrent_builds_of_one_directory_get_their_own_files(tmp_path: Path) -> None:
    with generated_dockerfile(tmp_path, ["FROM a"]) as first, generated_dockerfile(tmp_path, ["FROM b"]) as second:
        assert first != second
        assert (tmp_path / first).read_text() == "FROM a\n"
        assert (tmp_path / second).read_text() == "FROM b\n"
    assert list(tmp_path.iterdir()) == []


def test_persist_writes_a_copy_creating_its_directory(tmp_path: Path) -> None:
    target = tmp_path / "out" / "deep" / "Dockerfile.generated"
    persist_dockerfile(["FROM b", "WORKDIR /x"], target)
    assert target.read_text() == "FROM b\nWORKDIR /x\n"



def test_append_adds_the_generated_dockerfile_as_a_member_and_rewinds() -> None:
    archive = context_tar(**{"app.py": b"print(1)\n", "sub/data": b"x"})
    name = append_generated_dockerfile(archive, ["FROM b", "COPY . /app/"])
    assert archive.tell() == 0
    assert name.startswith(".dockyard-") and name.endswith(".Dockerfile") and name != "Dockerfile"
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        assert tar.getnames() == ["app.py", "sub/data", name], "the context's members kept, in order"
        member = tar.getmember(name)
        assert member.isreg() and member.mode == 0o644
        handle = tar.extractfile(member)
        assert handle is not None and handle.read() == b"FROM b\nCOPY . /app/\n"
        app = tar.extractfile("app.py")
        assert app is not None and app.read() == b"print(1)\n"


def test_append_gives_each_build_its_own_name() -> None:
    assert append_generated_dockerfile(context_tar(), ["FROM a"]) != append_generated_dockerfile(context_tar(), ["FROM a"])


def test_append_refuses_an_archive_with_a_dockerfile() -> None:
    archive = context_tar(Dockerfile=b"FROM mine\n")
    with pytest.raises(InvalidInput, match="Dockerfile already exists."):
        append_generated_dockerfile(archive, ["FROM b"])
    archive.seek(0)
    with tarfile.open(fileobj=archive, mode="r:") as tar:
        assert tar.getnames() == ["Dockerfile"], "nothing was added"
