"""The local build step keeps its persisted Dockerfile inside the build context, with the check
``prepare_build`` applies (``dockyard.tasks.request.arguments.dockerfile_output_in``): a path that
climbs out, an absolute one, or one through a link leading out is refused before anything is built
or written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dockyard.config.settings import Settings
from dockyard.tasks import prepare
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.local_steps import build_image
from dockyard.tasks.request import arguments
from tests.unit.fakes import FakeEngine, Output
from tests.unit.support import make_settings

NAME = "reg.io/team/app"


@pytest.fixture
def settings() -> Settings:
    return make_settings(auto_base_image="base:1", auto_install_command="pip install -r")


def tree(root: Path) -> list[str]:
    return sorted(str(path.relative_to(root)) for path in root.rglob("*"))


def auto_build(context: Path, engine: FakeEngine, settings: Settings, output_path: str) -> None:
    build_image(
        NAME, tag="v1", dockerfile="auto", persist_dockerfile=True, dockerfile_output_path=output_path,
        build_kwargs={"path": str(context)}, settings=settings, client=engine, output=Output(),  # type: ignore[arg-type]
    )


@pytest.fixture
def context(tmp_path: Path) -> Path:
    root = tmp_path / "ctx"
    root.mkdir()
    (root / "app.py").write_text("print('hi')\n")
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", root / "out-link")
    return root


@pytest.mark.parametrize("where", ["../x", "ABSOLUTE", "out-link/x", "sub/../../x", ""])
def test_the_local_step_refuses_a_dockerfile_output_path_outside_the_context(
    tmp_path: Path, context: Path, engine: FakeEngine, settings: Settings, where: str,
) -> None:
    output_path = str(tmp_path / "abs" / "x") if where == "ABSOLUTE" else where
    before = tree(tmp_path)
    with pytest.raises(InvalidInput, match="dockerfile_output_path"):
        auto_build(context, engine, settings, output_path)
    assert tree(tmp_path) == before, "nothing written, inside the context or out"
    assert engine.builds == [], "refused before the build"


def test_the_local_step_persists_inside_the_context(context: Path, engine: FakeEngine, settings: Settings) -> None:
    auto_build(context, engine, settings, "out/Dockerfile.kept")
    assert (context / "out" / "Dockerfile.kept").read_text() == engine.builds[0]["dockerfile"]


def test_prepare_and_the_local_step_use_the_one_check() -> None:
    assert prepare.dockerfile_output_in is arguments.dockerfile_output_in  # type: ignore[attr-defined]


def test_the_check_resolves_inside_and_refuses_the_rest(tmp_path: Path) -> None:
    dockerfile_output_in = arguments.dockerfile_output_in  # type: ignore[attr-defined]
    assert dockerfile_output_in(tmp_path, "a/b") == (tmp_path / "a" / "b").resolve()
    for bad in ("..", "../x", str(tmp_path.parent / "x"), ".", ""):
        with pytest.raises(InvalidInput, match="dockerfile_output_path"):
            dockerfile_output_in(tmp_path, bad)
    with pytest.raises(InvalidInput, match="dockerfile_output_path"):
        dockerfile_output_in(tmp_path, 3)
