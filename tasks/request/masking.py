"""How task arguments appear in logs and events: secrets masked, build specs summarised."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def masked_repr(kwargs: Mapping[str, Any]) -> str:
    """What logs and events show of a task's arguments: secrets masked, specs summarised."""
    shown: dict[str, Any] = {}
    for name, value in kwargs.items():
        if name in ("credentials", "sealed_secrets"):
            shown[name] = "***" if value is not None else None
        elif name == "spec" and isinstance(value, Mapping):
            shown[name] = {
                "image": f"{value.get('image_name')}:{value.get('tag')}",
                "key": value.get("key"),
                "sealed_secrets": "***" if value.get("sealed_secrets") else None,
            }
        else:
            shown[name] = value
    return repr(shown)
