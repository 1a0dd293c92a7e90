"""dockyard.tasks.request.naming: tag validation, names, namespaces (no services).

tests/unit/tasks/request/test_naming_defaults.py covers split_repository_path, default namespaces,
whitespace, default_tag and registry_of's basic cases; these add the rest.
"""

from __future__ import annotations

import pytest

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.naming import qualify_image_name, registry_of, validate_image_name, validate_tag
from tests.probes import validate_tags


@pytest.mark.parametrize("tag", ["v1", "latest", "_x", "1.2.3-rc_1", "a" * 128])
def test_valid_tags_pass(tag: str) -> None:
    validate_tag(tag)


@pytest.mark.parametrize("tag", ["", "-v1", ".v1", "v 1", "a:b", "a/b", "a" * 129, 1, None])
def test_invalid_tags_are_refused(tag: object) -> None:
    with pytest.raises(InvalidInput, match="Invalid Docker tag"):
        validate_tag(tag)  # type: ignore[arg-type]


def test_additional_tags_must_be_a_list_of_valid_tags() -> None:
    validate_tags(["v1"], None)
    validate_tags(["v1"], ["latest", "stable"])
    with pytest.raises(InvalidInput, match="must be a list"):
        validate_tags(["v1"], "latest")
    with pytest.raises(InvalidInput, match="Invalid Docker tag"):
        validate_tags(["v1"], ["ok", "not:ok"])


@pytest.mark.parametrize("name", ["", None, 5, "tab\there"])
def test_empty_non_string_or_blank_names_are_refused(name: object) -> None:
    with pytest.raises(InvalidInput, match="Invalid Docker image name"):
        validate_image_name(name)  # type: ignore[arg-type]


def test_a_registry_qualified_name_keeps_its_registry() -> None:
    assert qualify_image_name("127.0.0.1:5000/app", "ns") == "127.0.0.1:5000/app"
    assert qualify_image_name("registry.io/team/app", "ns") == "registry.io/team/app"


def test_registry_of_localhost_and_docker_hub() -> None:
    assert registry_of("localhost/app") == "localhost"
    assert registry_of("registry.io/team/app") == "registry.io"
    assert registry_of("app") is None


def test_a_tag_ending_in_a_newline_is_refused() -> None:
    with pytest.raises(InvalidInput, match="Invalid Docker tag"):
        validate_tag("v1\n")
