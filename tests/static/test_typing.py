"""The packages type-check under mypy --strict (configured in pyproject.toml).

mypy does not follow setuptools' package-dir mapping, so the check runs on a
view of the installed layout: ``dockyard/`` with ``tasks``, ``config`` and
``workers`` linked in under it, as the wheel places them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MAPPED = ("config", "tasks", "workers")  # pyproject.toml: [tool.setuptools.package-dir]


def installed_view(into: Path) -> Path:
    """``into/dockyard`` laid out as installed, every file a link into the checkout."""
    package = into / "dockyard"
    package.mkdir()
    for source in (ROOT / "dockyard").glob("*.py"):
        (package / source.name).symlink_to(source)
    for folder in MAPPED:
        (package / folder).symlink_to(ROOT / folder, target_is_directory=True)
    return package


def test_mypy_strict_passes(tmp_path: Path) -> None:
    installed_view(tmp_path)
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--config-file", str(ROOT / "pyproject.toml"), "-p", "dockyard"],
        cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "Success" in completed.stdout
