"""dockyard.tasks.prepare: prefect-docker's build arguments to a keyed BuildSpec, on temporary directories."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from dockyard.config.settings import Settings
from dockyard.tasks.context.pack import pack_context
from dockyard.tasks.errors import ContextTooLarge, InvalidInput
from dockyard.tasks.prepare import bind_build_arguments, prepare_build
from dockyard.tasks.request.build_secrets import materialized_secrets
from dockyard.tasks.request.sealing import generate_keypair
from dockyard.tasks.request.spec import BuildSpec, auto_dockerfile_bytes, dockerfile_digest, spec_key
from tests.unit.support import make_settings

PUBLIC_KEY, PRIVATE_KEY = generate_keypair()  # the farm's; callers hold only the public one


@pytest.fixture
def settings() -> Settings:
    return make_settings(seal_public_key=PUBLIC_KEY, default_namespace="team")


def project(root: Path, dockerfile: str | None = "FROM scratch\nCOPY app.py /\n") -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "app.py").write_text("print('hello')\n")
    if dockerfile is not None:
        (root / "Dockerfile").write_text(dockerfile)
    return root


def prepare(settings: Settings, context: Path, **params: Any) -> BuildSpec:
    spec, packed = prepare_build({"image_name": "app", "tag": "v1", "path": str(context), **params}, settings)
    packed.close()
    return spec


def test_the_spec_carries_the_packed_context_and_its_own_key(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    spec, packed = prepare_build({"image_name": "app", "tag": "v1", "path": str(context)}, settings)
    try:
        expected = pack_context(context, dockerfile="Dockerfile", max_bytes=settings.context_max_bytes)
        assert (spec.context_digest, spec.context_size) == (expected.digest, expected.size)
        assert (packed.digest, packed.size) == (expected.digest, expected.size)
        expected.close()
    finally:
        packed.close()
    assert spec.image_name == "team/app", "qualified with the default namespace"
    assert spec.dockerfile == "Dockerfile" and spec.dockerfile_lines is None
    assert spec.dockerfile_digest == dockerfile_digest((context / "Dockerfile").read_bytes())
    assert spec.key == spec_key(spec)
    assert "path" not in spec.build_kwargs, "the caller's path is not sent nor keyed"
    assert spec.context_path is None, "redis transport: the worker downloads by digest"
    assert BuildSpec.parse(json.loads(json.dumps(spec.model_dump()))) == spec, "the message passes the worker's check"


def test_path_transport_sends_the_directory(tmp_path: Path) -> None:
    context = project(tmp_path / "ctx")
    spec = prepare(make_settings(context_transport="path"), context)
    assert spec.context_path == str(context.resolve())


def test_a_default_tag_is_filled_in(tmp_path: Path, settings: Settings) -> None:
    spec, packed = prepare_build({"image_name": "app", "path": str(project(tmp_path / "ctx"))}, settings)
    packed.close()
    assert spec.tag and spec.tag[0].isdigit()


def test_same_content_in_another_directory_gives_the_same_key(tmp_path: Path, settings: Settings) -> None:
    first = prepare(settings, project(tmp_path / "one"))
    second = prepare(settings, project(tmp_path / "two"), tag="other", additional_tags=["x"])
    assert first.key == second.key


def test_two_dockerfiles_in_one_context_get_different_keys(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    (context / "Dockerfile.dev").write_text("FROM scratch\nCOPY . /\n")
    main = prepare(settings, context)
    dev = prepare(settings, context, dockerfile="Dockerfile.dev")
    assert main.context_digest == dev.context_digest, "one context: only the Dockerfile tells them apart"
    assert main.dockerfile_digest != dev.dockerfile_digest
    assert main.key != dev.key


def test_editing_the_dockerfile_changes_the_key(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    before = prepare(settings, context)
    (context / "Dockerfile").write_text("FROM busybox\n")
    assert prepare(settings, context).key != before.key


def test_a_dockerfile_in_a_subdirectory(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    (context / "docker").mkdir()
    (context / "docker" / "Dockerfile").write_text("FROM busybox\n")
    spec = prepare(settings, context, dockerfile="docker/Dockerfile")
    assert spec.dockerfile == "docker/Dockerfile"
    assert spec.dockerfile_digest == dockerfile_digest(b"FROM busybox\n")


def test_an_ignored_dockerfile_is_still_sent(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    (context / ".dockerignore").write_text("Dockerfile*\n")
    (context / "Dockerfile.dev").write_text("FROM busybox\n")
    main, dev = prepare(settings, context), prepare(settings, context, dockerfile="Dockerfile.dev")
    assert main.context_digest != dev.context_digest, "each context holds its own Dockerfile"


def test_a_dockerfile_symlinked_outside_the_context_is_refused(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx", dockerfile=None)
    (tmp_path / "outside").write_text("FROM scratch\n")
    (context / "Dockerfile").symlink_to(tmp_path / "outside")
    with pytest.raises(InvalidInput, match="must be inside the build context"):
        prepare(settings, context)


@pytest.mark.parametrize("dockerfile", ["../Dockerfile", "/etc/hostname"])
def test_a_dockerfile_path_outside_the_context_is_refused(tmp_path: Path, settings: Settings, dockerfile: str) -> None:
    with pytest.raises(InvalidInput, match="inside the build context"):
        prepare(settings, project(tmp_path / "ctx"), dockerfile=dockerfile)


def test_a_missing_dockerfile_is_refused(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        prepare(settings, project(tmp_path / "ctx", dockerfile=None))


def test_a_context_that_is_not_a_directory_is_refused(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="is not a directory"):
        prepare(settings, tmp_path / "missing")


def test_a_context_over_the_limit_is_refused(tmp_path: Path) -> None:
    context = project(tmp_path / "ctx")
    (context / "big").write_bytes(b"x" * 20_000)
    with pytest.raises(ContextTooLarge):
        prepare(make_settings(context_max_bytes=10_000), context)


def test_options_other_than_logging_ones_are_keyed(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    plain = prepare(settings, context)
    with_arg = prepare(settings, context, buildargs={"A": "1"})
    quiet = prepare(settings, context, quiet=True)
    assert with_arg.build_kwargs == {"buildargs": {"A": "1"}}
    assert with_arg.key != plain.key
    assert quiet.key == plain.key


def test_bad_arguments_are_invalid_input() -> None:
    with pytest.raises(InvalidInput, match="Bad build arguments"):
        bind_build_arguments({"tag": "v1"})
    assert bind_build_arguments({"image_name": "a", "pull": False})["build_kwargs"] == {"pull": False}


# dockerfile="auto"


def test_auto_sends_the_generated_lines_and_their_digest(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "app", dockerfile=None)
    (context / "requirements.txt").write_text("requests\n")
    spec = prepare(settings, context, dockerfile="auto")
    assert spec.dockerfile == "auto"
    assert spec.dockerfile_lines is not None and spec.dockerfile_lines[0] == f"FROM {settings.auto_base_image}"
    assert any("requirements.txt" in line for line in spec.dockerfile_lines)
    assert spec.dockerfile_digest == dockerfile_digest(auto_dockerfile_bytes(spec.dockerfile_lines))
    assert not (context / "Dockerfile").exists(), "nothing written into the caller's directory"


def test_auto_builds_of_identical_directories_with_different_names_get_different_keys(
    tmp_path: Path, settings: Settings
) -> None:
    one = prepare(settings, project(tmp_path / "one", dockerfile=None), dockerfile="auto")
    two = prepare(settings, project(tmp_path / "two", dockerfile=None), dockerfile="auto")
    assert one.context_digest == two.context_digest
    assert one.dockerfile_lines != two.dockerfile_lines, "the directory's name is in the WORKDIR"
    assert one.key != two.key


def test_auto_with_a_dockerfile_present_is_refused(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(InvalidInput, match="Dockerfile already exists"):
        prepare(settings, project(tmp_path / "ctx"), dockerfile="auto")


def test_auto_persists_the_dockerfile_inside_the_context_only(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx", dockerfile=None)
    spec = prepare(settings, context, dockerfile="auto", persist_dockerfile=True, dockerfile_output_path="out/Dockerfile.gen")
    assert (context / "out" / "Dockerfile.gen").read_bytes() == auto_dockerfile_bytes(spec.dockerfile_lines or [])
    with pytest.raises(InvalidInput, match="inside the build context"):
        prepare(settings, context, dockerfile="auto", persist_dockerfile=True, dockerfile_output_path="../escape")
    assert not (tmp_path / "escape").exists()


# build secrets


def test_secrets_are_read_here_and_sealed_for_buildx(tmp_path: Path, settings: Settings) -> None:
    context = project(tmp_path / "ctx")
    (tmp_path / "token.txt").write_text("s3cr3t-value")
    spec = prepare(settings, context, build_backend="buildx", secrets=[f"id=token,src={tmp_path / 'token.txt'}"])
    assert spec.secret_ids == ["token"]
    assert "secrets" not in spec.build_kwargs
    assert spec.sealed_secrets is not None and set(spec.sealed_secrets) == {"sealed"}
    assert spec.secrets_owner == "default", "the caller's team: the worker opens them only for its messages"
    assert "s3cr3t-value" not in json.dumps(spec.model_dump())
    with materialized_secrets(spec.sealed_secrets, SecretStr(PRIVATE_KEY), team="default") as entries:
        (entry,) = entries
        assert entry.startswith("id=token,src=") and Path(entry.split("src=", 1)[1]).read_text() == "s3cr3t-value"
    with pytest.raises(InvalidInput):
        with materialized_secrets(spec.sealed_secrets, settings.seal_private_key, team="default"):
            pass  # the caller cannot open its own seal


def test_secret_ids_are_keyed_but_not_their_content(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    context = project(tmp_path / "ctx")
    monkeypatch.setenv("UNIT_TOKEN", "one")
    first = prepare(settings, context, build_backend="buildx", secrets="id=token,env=UNIT_TOKEN")
    monkeypatch.setenv("UNIT_TOKEN", "two")
    second = prepare(settings, context, build_backend="buildx", secrets="id=token,env=UNIT_TOKEN")
    renamed = prepare(settings, context, build_backend="buildx", secrets="id=other,env=UNIT_TOKEN")
    plain = prepare(settings, context, build_backend="buildx")
    assert first.key == second.key
    assert len({first.key, renamed.key, plain.key}) == 3
    theirs = prepare(settings.model_copy(update={"team": "team-b"}), context, build_backend="buildx", secrets="id=token,env=UNIT_TOKEN")
    assert theirs.secrets_owner == "team-b" and theirs.key != first.key, "another team's secrets: another build"
    assert plain.secrets_owner is None


def test_secrets_need_buildx(tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_TOKEN", "one")
    with pytest.raises(InvalidInput, match="secrets"):
        prepare(settings, project(tmp_path / "ctx"), secrets="id=token,env=UNIT_TOKEN")


def test_secrets_need_the_farms_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("UNIT_TOKEN", "one")
    with pytest.raises(InvalidInput, match="DOCKYARD_SEAL_PUBLIC_KEY"):
        prepare(make_settings(), project(tmp_path / "ctx"), build_backend="buildx", secrets="id=token,env=UNIT_TOKEN")
