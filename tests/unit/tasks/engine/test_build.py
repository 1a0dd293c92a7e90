"""dockyard.tasks.engine.build: the build operation on one engine, with the fake engine client of tests/unit/fakes.py."""

from __future__ import annotations

import io
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import docker.errors
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.engine.build import IMAGE_LABELS, _read_build_events, _run_build, apply_tags, build_from_archive
from dockyard.tasks.local_steps import build_image
from dockyard.tasks.errors import DENIED_HINT, BaseUnavailable, BuildError, InvalidInput, TransientError
from dockyard.tasks.request.spec import BuildOptions
from tests.unit.fakes import FakeEngine, FakeImage, Output, context_tar
from tests.unit.support import make_settings

NAME = "reg.io/team/app"
SETTINGS = make_settings()  # the default build network policy




@pytest.fixture
def settings() -> Settings:
    return make_settings(auto_base_image="base:1", auto_install_command="pip install -r", default_namespace=None)


def options(**fields: Any) -> BuildOptions:
    return BuildOptions.parse({"image_name": NAME, "tag": "v1", **fields})



# build_from_archive


def test_the_archive_is_streamed_as_a_custom_context_and_every_tag_applied(engine: FakeEngine) -> None:
    archive = context_tar(**{"Dockerfile": b"FROM scratch\nCOPY app.py /\n", "app.py": b"print(1)\n"})
    archive.seek(0, io.SEEK_END)  # the engine gets it from the start whatever the position
    output = Output()
    image_id = build_from_archive(
        options(additional_tags=["latest"], build_kwargs={"labels": {"team": "a"}, "nocache": True}),
        archive, auto_lines=None, client=engine, settings=SETTINGS, output=output,  # type: ignore[arg-type]
    )
    assert engine.sources == [{"custom_context": True, "members": ["Dockerfile", "app.py"]}]
    build = engine.builds[0]
    assert build["dockerfile"] == "FROM scratch\nCOPY app.py /\n"
    assert build["labels"] == {"team": "a", **IMAGE_LABELS}
    assert (build["tag"], build["nocache"]) == (f"{NAME}:v1", True), "built under its first reference"
    assert (build["pull"], build["rm"], build["forcerm"]) == (True, True, True)
    assert engine.images.get(image_id).tags == [f"{NAME}:latest", f"{NAME}:v1"]
    assert output[0] == "Step 1/1 : FROM scratch\n"


def test_the_path_option_is_not_passed_to_the_engine(engine: FakeEngine) -> None:
    archive = context_tar(Dockerfile=b"FROM scratch\n")
    build_from_archive(options(build_kwargs={"path": "/caller/dir"}), archive, auto_lines=None, client=engine, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    assert "path" not in engine.builds[0]


def test_auto_appends_the_generated_dockerfile_as_a_member(engine: FakeEngine) -> None:
    archive = context_tar(**{"app.py": b"print(1)\n"})
    build_from_archive(
        options(dockerfile="auto"), archive, auto_lines=["FROM base:1", "COPY . /opt/prefect/ctx/"],
        client=engine, settings=SETTINGS, output=Output(),  # type: ignore[arg-type]
    )
    members = engine.sources[0]["members"]
    assert members[0] == "app.py" and len(members) == 2
    assert members[1].startswith(".dockyard-") and members[1].endswith(".Dockerfile")
    assert engine.builds[0]["dockerfile"] == "FROM base:1\nCOPY . /opt/prefect/ctx/\n"


def test_auto_refuses_an_archive_that_has_a_dockerfile(engine: FakeEngine) -> None:
    archive = context_tar(Dockerfile=b"FROM mine\n")
    with pytest.raises(InvalidInput, match="Dockerfile already exists."):
        build_from_archive(options(dockerfile="auto"), archive, auto_lines=["FROM b"], client=engine, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    assert engine.builds == []


def test_auto_without_lines_and_buildx_are_refused(engine: FakeEngine) -> None:
    archive = context_tar(**{"app.py": b"x"})
    with pytest.raises(InvalidInput, match="needs the generated Dockerfile's lines"):
        build_from_archive(options(dockerfile="auto"), archive, auto_lines=None, client=engine, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    with pytest.raises(InvalidInput, match="Only the docker-py backend"):
        build_from_archive(options(build_backend="buildx"), archive, auto_lines=None, client=engine, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    assert engine.builds == []


# the engine's network


def test_an_engine_without_a_bridge_builds_on_network_none(engine: FakeEngine) -> None:
    engine.bridge = False
    build_from_archive(options(), context_tar(Dockerfile=b"FROM scratch\n"), auto_lines=None, client=engine, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    assert engine.builds[0]["network_mode"] == "none"


def test_an_engine_with_a_bridge_builds_on_it_and_a_network_outside_the_policy_is_refused(engine: FakeEngine) -> None:
    build_from_archive(options(), context_tar(Dockerfile=b"FROM scratch\n"), auto_lines=None, client=engine, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    assert engine.builds[0]["network_mode"] == "bridge"
    bridgeless = FakeEngine()
    bridgeless.bridge = False
    archive = context_tar(Dockerfile=b"FROM scratch\n")
    with pytest.raises(InvalidInput, match="network_mode='bridge'.*DOCKYARD_BUILD_NETWORKS.*allowed here: none"):
        build_from_archive(options(build_kwargs={"network_mode": "bridge"}), archive, auto_lines=None, client=bridgeless, settings=SETTINGS, output=Output())  # type: ignore[arg-type]
    assert bridgeless.builds == []


def test_the_configured_networks_decide_and_the_first_is_the_default(engine: FakeEngine) -> None:
    farm = make_settings(build_networks=["host", "none"])
    build_from_archive(options(), context_tar(Dockerfile=b"FROM scratch\n"), auto_lines=None, client=engine, settings=farm, output=Output())  # type: ignore[arg-type]
    assert engine.builds[0]["network_mode"] == "host"
    assert engine.network_queries == [], "a configured policy needs nothing from the engine"
    with pytest.raises(InvalidInput, match="DOCKYARD_BUILD_NETWORKS"):
        build_from_archive(options(build_kwargs={"network_mode": "bridge"}), context_tar(Dockerfile=b"FROM scratch\n"), auto_lines=None, client=engine, settings=farm, output=Output())  # type: ignore[arg-type]


# the engine's answers


def events(*items: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield from items


def test_stream_lines_go_to_the_output_and_the_aux_id_is_returned() -> None:
    output = Output()
    image_id = _read_build_events(
        events({"stream": "Step 1/2\n"}, {"aux": {"ID": "sha256:abc"}}, {"aux": {"Other": 1}}, {"status": "x"}, {"stream": "done\n"}),
        output,
    )
    assert image_id == "sha256:abc"
    assert output == ["Step 1/2\n", "done\n"]


def test_no_image_id_is_a_build_error() -> None:
    with pytest.raises(BuildError, match="did not return an image ID"):
        _read_build_events(events({"stream": "ok\n"}, {"aux": "not a dict"}), Output())


@pytest.mark.parametrize("event", [{"error": "The command '/bin/sh -c false' returned a non-zero code: 1"}, {"message": "no space left"}])
def test_an_error_or_message_event_is_a_build_error_and_stops_reading(event: dict[str, Any]) -> None:
    output = Output()
    after: list[str] = []

    def stream() -> Iterator[dict[str, Any]]:
        yield {"stream": "Step 1/1\n"}
        yield event
        after.append("read on")
        yield {"aux": {"ID": "sha256:abc"}}

    with pytest.raises(BuildError) as raised:
        _read_build_events(stream(), output)
    assert not isinstance(raised.value, TransientError)
    assert str(raised.value) == (event.get("error") or event["message"])
    assert output == ["Step 1/1\n"] and after == []


def test_a_denied_build_gets_the_hint() -> None:
    with pytest.raises(BuildError) as raised:
        _read_build_events(events({"error": "pull access denied for private/base"}), Output())
    assert str(raised.value) == f"pull access denied for private/base\n{DENIED_HINT}"


def test_a_503_from_the_registry_is_transient() -> None:
    message = "Get https://registry-1.docker.io/v2/: received unexpected HTTP status: 503 Service Unavailable"
    with pytest.raises(BaseUnavailable) as raised:
        _read_build_events(events({"error": message}), Output())
    assert isinstance(raised.value, TransientError) and isinstance(raised.value, BuildError)


def test_engine_api_errors_and_bad_arguments_are_mapped() -> None:
    class Refusing(FakeEngine):
        def __init__(self, error: Exception) -> None:
            super().__init__()
            self.api.build = self.raise_  # type: ignore[method-assign]
            self.error = error

        def raise_(self, **kwargs: Any) -> Any:
            raise self.error

    with pytest.raises(InvalidInput, match="Unknown or wrong build argument"):
        _run_build(Refusing(TypeError("unexpected keyword 'bogus'")), {"path": "."}, "Dockerfile", {}, {}, Output())  # type: ignore[arg-type]
    with pytest.raises(BaseUnavailable):
        _run_build(Refusing(docker.errors.APIError("503 Service Unavailable")), {"path": "."}, "Dockerfile", {}, {}, Output())  # type: ignore[arg-type]


# apply_tags


def built(engine: FakeEngine, *refs: str) -> str:
    image_id = "sha256:" + "1" * 64
    engine.image_ids.add(image_id)
    for ref in refs:
        engine.refs[ref] = image_id
    return image_id


def test_every_missing_tag_is_applied_and_present_ones_left(engine: FakeEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    image_id = built(engine, f"{NAME}:v1")
    tagged: list[str] = []
    real_tag = FakeImage.tag

    def counting(image: FakeImage, repository: str, tag: str) -> bool:
        tagged.append(tag)
        return real_tag(image, repository=repository, tag=tag)

    monkeypatch.setattr(FakeImage, "tag", counting)
    apply_tags(engine, image_id, NAME, ["v1", "v2", "latest"])  # type: ignore[arg-type]
    assert tagged == ["v2", "latest"], "v1 was there already"
    assert engine.images.get(image_id).tags == [f"{NAME}:latest", f"{NAME}:v1", f"{NAME}:v2"]


def test_a_failing_tag_rolls_back_the_tags_applied_before_it(engine: FakeEngine) -> None:
    image_id = built(engine, f"{NAME}:v1")
    engine.failing_tags = {"v3"}
    with pytest.raises(BuildError, match=f"Tagging {NAME} failed: cannot tag {NAME}:v3"):
        apply_tags(engine, image_id, NAME, ["v1", "v2", "v3", "v4"])  # type: ignore[arg-type]
    assert engine.removed == [f"{NAME}:v2"], "only what this call applied; v1 was the caller's"
    assert engine.images.get(image_id).tags == [f"{NAME}:v1"]


def test_tagging_a_vanished_image_is_a_build_error(engine: FakeEngine) -> None:
    with pytest.raises(BuildError, match="vanished"):
        apply_tags(engine, "sha256:" + "9" * 64, NAME, ["v1"])  # type: ignore[arg-type]


# build_image


def project(root: Path, dockerfile: str | None = "FROM scratch\nCOPY app.py /\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text("print('hi')\n")
    if dockerfile is not None:
        (root / "Dockerfile").write_text(dockerfile)
    return root


def test_build_image_builds_the_directory_and_returns_prefect_dockers_result(
    tmp_path: Path, engine: FakeEngine, settings: Settings
) -> None:
    context = project(tmp_path / "ctx")
    result = build_image(
        NAME, tag="v1", additional_tags=["latest"], build_kwargs={"path": str(context)},
        settings=settings, client=engine, output=Output(),  # type: ignore[arg-type]
    )
    assert engine.sources == [{"path": str(context.resolve())}]
    assert result == {
        "image_name": NAME, "tag": "v1", "image": f"{NAME}:v1", "image_id": result["image_id"], "additional_tags": ["latest"],
    }
    assert engine.images.get(result["image_id"]).tags == [f"{NAME}:latest", f"{NAME}:v1"]


def test_build_image_auto_generates_removes_and_can_persist(tmp_path: Path, engine: FakeEngine, settings: Settings) -> None:
    context = project(tmp_path / "ctx", dockerfile=None)
    build_image(
        NAME, tag="v1", dockerfile="auto", persist_dockerfile=True, build_kwargs={"path": str(context)},
        settings=settings, client=engine, output=Output(),  # type: ignore[arg-type]
    )
    assert engine.builds[0]["dockerfile"] == "FROM base:1\nCOPY . /opt/prefect/ctx/\nWORKDIR /opt/prefect/ctx/\n"
    assert sorted(path.name for path in context.iterdir()) == ["Dockerfile.generated", "app.py"], "the build's copy removed"
    assert (context / "Dockerfile.generated").read_text() == engine.builds[0]["dockerfile"]


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"image_name": "Bad Name"}, "image"),
        ({"tag": "bad tag!"}, "tag"),
        ({"build_kwargs": {"bogus": 1}}, r"Unknown or wrong build argument\(s\) \['bogus'\]"),
        ({"build_backend": "podman"}, "Invalid build_backend"),
        ({"dockerfile": "../Dockerfile"}, "must be inside the build context"),
        ({"dockerfile": "Missing.Dockerfile"}, "not found in"),
        ({"dockerfile": "auto"}, "Dockerfile already exists."),
        ({"build_kwargs": {"labels": ["not", "a", "mapping"]}}, "labels must be a mapping"),
    ],
)
def test_build_image_validates_before_touching_the_engine(
    tmp_path: Path, engine: FakeEngine, settings: Settings, arguments: dict[str, Any], message: str
) -> None:
    context = project(tmp_path / "ctx")
    given: dict[str, Any] = {"image_name": NAME, "tag": "v1", **arguments}
    given["build_kwargs"] = {"path": str(context), **given.get("build_kwargs", {})}
    with pytest.raises(InvalidInput, match=message):
        build_image(given.pop("image_name"), **given, settings=settings, client=engine, output=Output())  # type: ignore[arg-type]
    assert engine.builds == [] and engine.network_queries == [] and engine.refs == {}
    assert sorted(path.name for path in context.iterdir()) == ["Dockerfile", "app.py"]
