"""The core imports without the ``prefect`` extra: only ``dockyard.flows`` needs it."""

from __future__ import annotations

import pkgutil
import subprocess
import sys
from pathlib import Path

import dockyard.tasks

BLOCK_PREFECT = """
import importlib.abc, sys

class NoPrefect(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name == "prefect" or name.startswith("prefect."):
            raise ImportError(f"{name} is blocked: the prefect extra is not installed")
        return None

sys.meta_path.insert(0, NoPrefect())
for name in sys.argv[1:]:
    __import__(name)
print("imported", len(sys.argv) - 1)
"""


def core_modules() -> list[str]:
    found = [f"tasks.{info.name}" for info in pkgutil.iter_modules(tasks.__path__)]
    return sorted(found + ["tasks", "dockyard.config.settings", "dockyard.config.celery", "dockyard", "dockyard.steps"])


def run_blocked(modules: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCK_PREFECT, *modules],
        capture_output=True, text=True, timeout=120, cwd=Path(__file__).resolve().parents[2],
    )


def test_every_tasks_module_and_the_client_import_without_prefect() -> None:
    modules = core_modules()
    assert "dockyard.tasks.client" in modules and "dockyard.tasks.request.spec" in modules
    completed = run_blocked(modules)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.strip() == f"imported {len(modules)}"


def test_the_blocker_really_blocks_prefect() -> None:
    completed = run_blocked(["dockyard.flows"])
    assert completed.returncode != 0 and "prefect is blocked" in completed.stderr
