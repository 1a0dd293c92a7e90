"""dockyard as users get it: a wheel built from this tree, installed into a fresh venv, used beside a
project that has its own ``tasks.py`` and ``config.py``.

The wheel must install one top-level name, ``dockyard`` (``dockyard.tasks``, ``dockyard.config``,
``dockyard.workers`` map the tree's ``tasks/``, ``config/``, ``workers/``): a top-level ``tasks`` or
``config`` would be shadowed by the user's own modules (``ImportError: cannot import name 'client'
from 'tasks' (<project>/tasks.py)``). The installed copy then runs prefect.yaml's two steps through
Prefect's own step runner on the farm, from the project's directory.

The fresh venv gets the dependencies without a network: a ``.pth`` file in its site-packages names
this venv's site-packages (a plain path line: the ``.pth`` files inside that directory are not
processed, so this checkout's editable install is not loaded; the test checks where every
``dockyard`` module came from).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.farm.conftest import Registry, WorkerProcess

REPO = Path(__file__).resolve().parents[2]
# the tree's package folders and where they must land in the wheel
LAYOUT = {"dockyard": "dockyard", "tasks": "dockyard/tasks", "config": "dockyard/config", "workers": "dockyard/workers"}
# what a build from the tree must not copy: git, venvs, earlier builds (setuptools' build/ would add stale files)
NOT_SOURCES = (".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.pyc", ".pytest_cache", ".mypy_cache")


def run(command: list[str | Path], timeout_s: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    """``command``, which must succeed; its output in the failure message."""
    result = subprocess.run([str(part) for part in command], capture_output=True, text=True, timeout=timeout_s, **kwargs)
    if result.returncode != 0:
        pytest.fail(f"{' '.join(map(str, command))} exited {result.returncode}\n"
                    f"--- stdout\n{result.stdout[-6000:]}\n--- stderr\n{result.stderr[-6000:]}")
    return result


def offline_wheel_build_possible() -> bool:
    """Whether this interpreter's setuptools can make a wheel itself (bdist_wheel: setuptools >= 70.1 or ``wheel``)."""
    return any(importlib.util.find_spec(name) is not None for name in ("setuptools.command.bdist_wheel", "wheel"))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A wheel built from a copy of the tree (the working tree as it is, never written to)."""
    work = tmp_path_factory.mktemp("wheel")
    source = work / "source"
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*NOT_SOURCES))
    command: list[str | Path] = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check"]
    if offline_wheel_build_possible():
        command.append("--no-build-isolation")
    else:  # this venv's setuptools cannot make wheels: pip fetches pyproject's build-system requirements
        print("test venv has no wheel builder (setuptools < 70.1, no `wheel`): building with build isolation")
    run([*command, "-w", work / "out", source], timeout_s=180)
    built = sorted((work / "out").glob("dockyard-*.whl"))
    assert len(built) == 1, built
    return built[0]


def expected_files() -> set[str]:
    """The wheel paths of every module of the tree's packages (folders with ``__init__.py``) and the
    workers' data files (shell scripts, the example project)."""
    expected: set[str] = set()
    for folder, target in LAYOUT.items():
        root = REPO / folder
        assert (root / "__init__.py").is_file(), f"{folder}/ is not a package"
        for init in root.rglob("__init__.py"):
            if "__pycache__" in init.parts:
                continue
            for module in init.parent.glob("*.py"):
                expected.add(f"{target}/{module.relative_to(root).as_posix()}")
    workers = REPO / "workers"
    data = [*workers.glob("*.sh"),
            *(path for path in (workers / "example").rglob("*") if path.is_file() and "__pycache__" not in path.parts)]
    expected.update(f"dockyard/workers/{path.relative_to(workers).as_posix()}" for path in data)
    return expected


def test_the_wheel_installs_one_top_level_name_with_every_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = [name for name in archive.namelist() if not name.endswith("/")]
        dist_info = {name.split("/")[0] for name in names if name.split("/")[0].endswith(".dist-info")}
        assert len(dist_info) == 1, dist_info
        top_level = archive.read(f"{next(iter(dist_info))}/top_level.txt").decode().split()
    tops = {name.split("/")[0] for name in names} - dist_info
    assert tops == {"dockyard"}, f"the wheel installs top-level {sorted(tops)}, not only dockyard"
    assert top_level == ["dockyard"], top_level
    for must in ("dockyard/steps.py", "dockyard/tasks/client.py", "dockyard/config/settings.py",
                 "dockyard/workers/cli.py", "dockyard/workers/provision.sh", "dockyard/workers/example/prefect.yaml"):
        assert must in names, f"{must} is not in the wheel"
    missing = sorted(expected_files() - set(names))
    assert not missing, f"the tree's files missing from the wheel (pyproject's [tool.setuptools] packages?): {missing}"


@pytest.fixture(scope="module")
def fresh_python(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The python of a new venv holding the wheel alone; the dependencies come from this venv by a ``.pth``."""
    venv = tmp_path_factory.mktemp("fresh") / "venv"
    run([getattr(sys, "_base_executable", sys.executable), "-m", "venv", venv])
    python = venv / "bin" / "python"
    run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--disable-pip-version-check", wheel])
    site_packages = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    assert site_packages.is_relative_to(venv), site_packages
    assert (site_packages / "dockyard" / "tasks" / "client.py").is_file()
    ours = dict.fromkeys([sysconfig.get_path("purelib"), sysconfig.get_path("platlib")])  # ordered, no repeats
    (site_packages / "zz-dockyard-test-dependencies.pth").write_text("".join(f"{path}\n" for path in ours))
    return python


# The user's script, run with the fresh venv's python from the project directory: the project's own
# modules first, then dockyard, then prefect.yaml's steps through Prefect's step runner.
DEPLOY = '''
import asyncio, json, sys
from pathlib import Path

import config
import tasks

import dockyard
import dockyard.steps
import dockyard.tasks.client
from prefect.deployments.steps.core import run_steps

steps = json.loads(sys.stdin.read())
outputs = asyncio.run(run_steps(steps, {}))
site = Path(dockyard.__file__).resolve().parents[1]
Path(sys.argv[1]).write_text(json.dumps({
    "outputs": outputs,
    "tasks": [tasks.__file__, tasks.MARKER, sys.modules["tasks"] is tasks],
    "config": [config.__file__, config.MARKER, sys.modules["config"] is config],
    "dockyard": dockyard.__file__,
    "client": dockyard.tasks.client.__file__,
    "steps": dockyard.steps.__file__,
    "dockyard_modules_elsewhere": sorted(
        name for name, module in list(sys.modules.items())
        if name.partition(".")[0] == "dockyard" and not Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(site)
    ),
    "top_level_from_the_wheel": sorted(
        name for name, module in list(sys.modules.items())
        if name.partition(".")[0] != "dockyard" and Path(getattr(module, "__file__", None) or "/").resolve().is_relative_to(site / "dockyard")
    ),
    "old_names_loaded": sorted(
        name for name in sys.modules if name.partition(".")[0] in ("tasks", "config", "workers") and name not in ("tasks", "config")
    ),
}))
'''


def test_the_installed_wheel_runs_prefects_steps_beside_a_project_with_its_own_tasks_and_config(
    fresh_python: Path, tmp_path: Path, repo: str, registry: Registry, base_image: str,
    farm_workers: list[WorkerProcess],
) -> None:
    venv = fresh_python.parents[1]
    project = tmp_path / "project"
    project.mkdir()
    run_id = uuid.uuid4().hex[:8]
    (project / "tasks.py").write_text(f'"""The project\'s own Celery tasks."""\nMARKER = "project-tasks-{run_id}"\n')
    (project / "config.py").write_text(f'"""The project\'s own settings."""\nMARKER = "project-config-{run_id}"\n')
    (project / "deploy.py").write_text(textwrap.dedent(DEPLOY))
    (project / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app/app.txt\n")
    (project / "app.txt").write_text(f"{run_id}\n")
    steps = [
        {"dockyard.steps.build_docker_image": {"id": "build-image", "image_name": repo, "tag": "wheel"}},
        {"dockyard.steps.push_docker_image": {
            "id": "push-image", "image_name": "{{ build-image.image_name }}", "tag": "{{ build-image.tag }}",
            "credentials": registry.credentials,
        }},
    ]
    report_path = tmp_path / "report.json"
    prefect_home = tmp_path / "prefect-home"
    prefect_home.mkdir()
    # the test's DOCKYARD_* settings (test database, key prefix, sealing key, registry) pass through
    env = {name: value for name, value in os.environ.items()
           if name not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV")}
    env.update(PYTHONNOUSERSITE="1", PYTHONDONTWRITEBYTECODE="1", PREFECT_HOME=str(prefect_home))

    result = run([fresh_python, "deploy.py", report_path], cwd=project, env=env, input=json.dumps(steps))

    report = json.loads(report_path.read_text())
    assert report["tasks"] == [str(project / "tasks.py"), f"project-tasks-{run_id}", True]
    assert report["config"] == [str(project / "config.py"), f"project-config-{run_id}", True]
    for name in ("dockyard", "client", "steps"):
        assert Path(report[name]).resolve().is_relative_to(venv.resolve()), f"{name} imported from {report[name]}"
        assert not Path(report[name]).resolve().is_relative_to(REPO), f"{name} imported from the checkout"
    assert report["dockyard_modules_elsewhere"] == []
    assert report["top_level_from_the_wheel"] == []
    assert report["old_names_loaded"] == []

    outputs = report["outputs"]
    built = outputs["build-image"]
    assert set(built) == {"image_name", "tag", "image", "image_id", "additional_tags"}
    assert built["image_name"] == repo and built["tag"] == "wheel" and built["image"] == f"{repo}:wheel"
    assert built["image_id"], built
    pushed = outputs["push-image"]
    assert pushed["image"] == f"{repo}:wheel"
    digest = pushed.get("digest")
    assert isinstance(digest, str) and digest.startswith("sha256:"), pushed
    assert registry.manifest_digest(repo.removeprefix(registry.url + "/"), "wheel") == digest
    assert "Running build_docker_image step" in result.stdout and "Running push_docker_image step" in result.stdout
    assert not list(project.glob(".dockyard-*")), "nothing left in the project"
