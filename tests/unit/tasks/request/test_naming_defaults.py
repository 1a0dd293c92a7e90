"""Image names, namespaces and default tags (no services)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.naming import default_tag, qualify_image_name, registry_of, split_repository_path


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("app", (None, "app")),
        ("team/app", ("team", "app")),
        ("127.0.0.1:5000/app", ("127.0.0.1:5000", "app")),
        ("registry.io/team/app", ("registry.io/team", "app")),
    ],
)
def test_split_repository_path(path: str, expected: tuple[str | None, str]) -> None:
    assert split_repository_path(path) == expected


def test_default_namespace_only_when_missing() -> None:
    assert qualify_image_name("app", "ns") == "ns/app"
    assert qualify_image_name("team/app", "ns") == "team/app"
    assert qualify_image_name("app", None) == "app"


def test_whitespace_is_refused() -> None:
    with pytest.raises(InvalidInput, match="cannot contain spaces"):
        qualify_image_name("my app", None)


def test_default_tag_is_a_utc_slug() -> None:
    stamp = datetime(2026, 8, 21, 16, 27, 33, 123456, tzinfo=timezone.utc)
    assert default_tag(stamp) == "2026-08-21t16-27-33-123456-00-00"


def test_registry_of() -> None:
    assert registry_of("127.0.0.1:5000/a/b") == "127.0.0.1:5000"
    assert registry_of("team/app") is None
