"""config/defaults.py holds the settings' defaults only; modules keep their own tuning constants."""

from __future__ import annotations

import ast
from pathlib import Path

import dockyard.config.settings as settings_module
from dockyard.config import defaults


def names_settings_use() -> set[str]:
    source = Path(settings_module.__file__).read_text()
    return {
        node.attr for node in ast.walk(ast.parse(source))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id == "defaults"
    }


def test_every_name_in_defaults_is_the_default_of_a_setting() -> None:
    names = {name for name in vars(defaults) if name.isupper()}
    assert names and names - names_settings_use() == set(), "names in config/defaults.py that no setting uses"
