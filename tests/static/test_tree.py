"""The tree is the map: test files named once, every package installed, unit tests free of the farm."""

from __future__ import annotations

import tomllib
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = {"dockyard": "dockyard", "dockyard.config": "config", "dockyard.tasks": "tasks", "dockyard.workers": "workers"}


def test_no_two_test_files_share_a_name() -> None:
    names = Counter(path.name for path in (ROOT / "tests").rglob("test_*.py"))
    assert [name for name, count in names.items() if count > 1] == []


def test_every_package_folder_is_in_the_distribution() -> None:
    setuptools = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    assert setuptools["package-dir"] == MAPPED
    found = set()
    for name, folder in MAPPED.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(ROOT / folder)
            found.add(".".join([name, *relative.parts]))
    assert set(setuptools["packages"]) == found


def test_every_source_folder_is_a_package() -> None:
    for folder in MAPPED.values():
        for source in (ROOT / folder).rglob("*.py"):
            assert (source.parent / "__init__.py").exists(), f"{source.relative_to(ROOT)} is outside any package"


def test_unit_tests_import_nothing_of_the_farm_tests() -> None:
    offenders = [
        str(path.relative_to(ROOT)) for path in (ROOT / "tests" / "unit").rglob("*.py")
        if "tests.farm" in path.read_text()
    ]
    assert offenders == []
