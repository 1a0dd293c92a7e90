"""dockyard.tasks.registry.base_images: FROM images read from a Dockerfile, resolved to digests, and in the cache key."""

from __future__ import annotations

from pathlib import Path

import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.engine.images import engine_digest
from dockyard.tasks.registry import base_images
from dockyard.tasks.registry.login import farm_login
from dockyard.tasks.request.naming import split_reference
from dockyard.tasks.errors import BaseUnavailable, InvalidInput
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec
from tests.unit.fakes import FakeEngine, FakeRegistry
from tests.unit.support import make_settings

BASE = "reg.io/base/os:1"
OLD, NEW = "sha256:" + "1" * 64, "sha256:" + "2" * 64


@pytest.mark.parametrize(
    ("dockerfile", "buildargs", "expected"),
    [
        ("FROM reg.io/base/os:1\nRUN true\n", None, ["reg.io/base/os:1"]),
        ("# comment\nfrom --platform=linux/amd64 a:1 AS build\nFROM build\nFROM b\n", None, ["a:1", "b"]),
        ("FROM scratch\n", None, []),
        ("FROM a@sha256:" + "3" * 64 + "\n", None, []),
        ("ARG BASE=a:1\nFROM $BASE\nFROM ${BASE}\n", None, ["a:1"]),
        ("ARG BASE=a:1\nFROM ${BASE}\n", {"BASE": "b:2"}, ["b:2"]),
        ("FROM \\\n  a:1 \\\n  AS one\nFROM one\n", None, ["a:1"]),
    ],
)
def test_base_references(dockerfile: str, buildargs: dict[str, str] | None, expected: list[str]) -> None:
    assert base_images.base_references(dockerfile, buildargs) == expected


@pytest.mark.parametrize(
    ("reference", "expected"),
    [("reg.io:5000/base/os:1", ("reg.io:5000/base/os", "1")), ("reg.io:5000/base/os", ("reg.io:5000/base/os", "latest")), ("os", ("os", "latest"))],
)
def test_split_reference(reference: str, expected: tuple[str, str]) -> None:
    assert split_reference(reference) == expected


def spec_from(tmp_path: Path, settings: Settings, **params: object) -> BuildSpec:
    (tmp_path / "Dockerfile").write_text(f"FROM {BASE}\nRUN true\n")
    spec, packed = prepare_build({"image_name": "reg.io/team/app", "tag": "v1", "path": str(tmp_path), **params}, settings)
    packed.close()
    return spec


@pytest.fixture
def settings() -> Settings:
    return make_settings(registry_url="reg.io", registry_username="farm", registry_password="pw")


def test_the_caller_names_the_bases_and_they_are_in_the_key(tmp_path: Path, settings: Settings) -> None:
    spec = spec_from(tmp_path, settings)
    assert spec.base_images == [BASE]
    forged = spec.model_dump() | {"base_images": []}
    with pytest.raises(InvalidInput, match="key does not match"):
        BuildSpec.parse(forged)


def test_a_repushed_base_is_another_key_when_the_build_pulls(
    tmp_path: Path, settings: Settings, fake_registry: FakeRegistry
) -> None:
    spec = spec_from(tmp_path, settings)
    fake_registry.served[BASE] = OLD
    before = base_images.cache_key(spec, base_images.resolve(spec, settings) or {})
    fake_registry.served[BASE] = NEW
    after = base_images.cache_key(spec, base_images.resolve(spec, settings) or {})
    assert before != after and spec.key not in (before, after)
    assert fake_registry.heads == [BASE, BASE], "one HEAD per base"


def test_without_pull_the_key_names_the_base_by_its_tag(
    tmp_path: Path, settings: Settings, fake_registry: FakeRegistry
) -> None:
    spec = spec_from(tmp_path, settings, pull=False)
    assert base_images.resolve(spec, settings) == {} and fake_registry.heads == []
    assert base_images.cache_key(spec, {}) == spec.key


def test_the_farms_login_asks_for_its_own_registry_only(settings: Settings) -> None:
    login = farm_login(settings, BASE)
    assert login is not None and login.username == "farm"
    assert farm_login(settings, "other.io/base:1") is None


def test_an_unresolvable_base_is_no_cache_key_on_the_caller_and_unavailable_on_a_worker(
    tmp_path: Path, settings: Settings, fake_registry: FakeRegistry, engine: FakeEngine
) -> None:
    spec = spec_from(tmp_path, settings)
    assert base_images.resolve(spec, settings) is None
    engine.images.pull = lambda *args, **kwargs: (_ for _ in ()).throw(__import__("docker").errors.APIError("no"))  # type: ignore[method-assign]
    with pytest.raises(BaseUnavailable, match="Cannot resolve the base images"):
        base_images.worker_cache_key(spec, settings, lambda reference: engine_digest(reference, engine))  # type: ignore[arg-type]


def test_the_worker_checks_the_bases_against_the_dockerfile(tmp_path: Path, settings: Settings) -> None:
    spec = spec_from(tmp_path, settings)
    base_images.check_bases(spec, f"FROM {BASE}\n".encode())
    with pytest.raises(InvalidInput, match="do not match the Dockerfile's FROM images"):
        base_images.check_bases(spec, b"FROM reg.io/base/other:1\n")
