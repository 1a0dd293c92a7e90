"""Bad values refused by the one validator (``dockyard.tasks.request.spec``), on the caller and on the
worker alike, as ``InvalidInput`` naming the field, before anything reaches the engine:
``buildargs``/``build_args`` that are not a mapping of strings, and ``tag=""`` (only ``tag=None``
means a timestamp tag)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.local_steps import build_image
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.arguments import bind_build_arguments, build_options
from dockyard.tasks.request.naming import default_tag
from dockyard.tasks.request.spec import BuildOptions, BuildSpec, spec_key
from tests.unit.fakes import FakeEngine, Output
from tests.unit.support import make_settings

NAME = "reg.io/team/app"
DIGEST = "sha256:" + "0" * 64


@pytest.fixture
def settings() -> Settings:
    return make_settings()


def caller_options(settings: Settings, **params: Any) -> BuildOptions:
    return build_options(bind_build_arguments({"image_name": NAME, **params}), settings)


def worker_spec(**fields: Any) -> BuildSpec:
    """A spec message as a worker receives it, keyed to its content."""
    message: dict[str, Any] = {
        "image_name": NAME, "tag": "v1", "dockerfile_digest": DIGEST, "context_digest": DIGEST,
        "context_size": 0, **fields,
    }
    message["key"] = spec_key(BuildSpec.model_construct(**message))
    return BuildSpec.parse(message)


BAD_BUILD_ARGS = [
    ("docker-py", "buildargs", ["A=1"]),
    ("docker-py", "buildargs", "A=1"),
    ("docker-py", "buildargs", {"A": 1}),
    ("buildx", "build_args", ["A=1"]),
    ("buildx", "buildargs", ["A=1"]),
    ("buildx", "build_args", {"A": ["1"]}),
]


@pytest.mark.parametrize(("backend", "option", "value"), BAD_BUILD_ARGS)
def test_build_args_that_are_not_a_mapping_of_strings_are_refused_on_the_caller(
    settings: Settings, backend: str, option: str, value: Any,
) -> None:
    with pytest.raises(InvalidInput, match=rf"^{option} must be a mapping of strings"):
        caller_options(settings, build_backend=backend, **{option: value})


@pytest.mark.parametrize(("backend", "option", "value"), BAD_BUILD_ARGS)
def test_build_args_that_are_not_a_mapping_of_strings_are_refused_on_the_worker(backend: str, option: str, value: Any) -> None:
    with pytest.raises(InvalidInput, match=rf"{option} must be a mapping of strings"):
        worker_spec(build_backend=backend, build_kwargs={option: value})


def test_a_list_of_buildargs_never_reaches_the_engine(tmp_path: Path, engine: FakeEngine, settings: Settings) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(InvalidInput, match="buildargs must be a mapping of strings"):
        build_image(
            NAME, tag="v1", build_kwargs={"path": str(tmp_path), "buildargs": ["A=1"]},
            settings=settings, client=engine, output=Output(),  # type: ignore[arg-type]
        )
    assert engine.builds == []


def test_a_list_of_buildargs_is_refused_by_prepare_build(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(InvalidInput, match="buildargs must be a mapping of strings"):
        prepare_build({"image_name": NAME, "path": str(tmp_path), "buildargs": ["A=1"]}, settings)


def test_a_mapping_of_strings_is_kept(settings: Settings) -> None:
    options = caller_options(settings, buildargs={"A": "1", "EMPTY": ""})
    assert options.build_kwargs["buildargs"] == {"A": "1", "EMPTY": ""}
    assert worker_spec(build_backend="buildx", build_kwargs={"build_args": {"A": "1"}}).build_kwargs == {"build_args": {"A": "1"}}


def test_an_empty_tag_is_refused_naming_tag(settings: Settings) -> None:
    with pytest.raises(InvalidInput, match=r"^tag must not be empty"):
        caller_options(settings, tag="")
    with pytest.raises(InvalidInput, match=r"^tag must not be empty"):
        worker_spec(tag="")


def test_an_empty_tag_is_refused_by_the_local_step_before_building(tmp_path: Path, engine: FakeEngine, settings: Settings) -> None:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    with pytest.raises(InvalidInput, match="tag must not be empty"):
        build_image(NAME, tag="", build_kwargs={"path": str(tmp_path)}, settings=settings, client=engine, output=Output())  # type: ignore[arg-type]
    assert engine.builds == []


def test_no_tag_still_means_a_timestamp_tag(settings: Settings) -> None:
    tag = caller_options(settings, tag=None).tag
    assert len(tag) == len(default_tag()) and tag[:4].isdigit()
