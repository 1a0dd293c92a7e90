"""dockyard.tasks.engine.step_cgroups: limits written into BuildKit's step cgroups as they appear, on a cgroup tree in a temporary directory.

A step cgroup is made as runc makes one (a directory under
``<controller>/docker/buildkit/``; with files, it is moved in whole). The
watcher's writes are waited for (with a deadline), never slept for.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from python_on_whales.components.buildx.cli_wrapper import BuildxCLI

from dockyard.tasks.engine import buildx, step_cgroups
from dockyard.tasks.engine.limits import limited
from dockyard.tasks.request.spec import BuildLimits
from tests.unit.fakes import FakeEngine
from tests.unit.support import make_settings

MIB = 1024**2
LIMITS = BuildLimits(memory_bytes=64 * MIB, cpus=0.5, pids=32)
KERNEL_DEFAULTS = {
    "memory": {"memory.limit_in_bytes": "9223372036854771712", "memory.memsw.limit_in_bytes": "9223372036854771712"},
    "pids": {"pids.max": "max"},
    "cpu": {"cpu.cfs_quota_us": "-1", "cpu.cfs_period_us": "100000"},
}
WRITTEN = {"memory.limit_in_bytes": str(64 * MIB), "pids.max": "32", "cpu.cfs_quota_us": "50000"}


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tree = tmp_path / "cgroup"
    for controller in KERNEL_DEFAULTS:
        (tree / controller).mkdir(parents=True)
        (tree / controller / "cgroup.procs").write_text("")
    return tree


def make_step(root: Path, name: str, values: dict[str, dict[str, str]] | None = None) -> None:
    """A BuildKit step's cgroup in every controller, its files holding ``values`` (default: the kernel's)."""
    for controller, files in (values or KERNEL_DEFAULTS).items():
        staging = root / f".{controller}-{name}"
        staging.mkdir()
        for file, value in files.items():
            (staging / file).write_text(value)
        staging.rename(root / controller / step_cgroups.BUILDKIT_STEPS / name)


def wait_for(path: Path, expected: str, timeout_s: float = 5.0) -> str:
    deadline = time.monotonic() + timeout_s
    while True:
        found = path.read_text().strip() if path.exists() else ""
        if found == expected or time.monotonic() > deadline:
            return found
        time.sleep(0.01)


def step_file(root: Path, name: str, file: str) -> Path:
    return root / file.split(".")[0] / step_cgroups.BUILDKIT_STEPS / name / file


def test_every_step_cgroup_made_while_the_build_runs_gets_the_limits(root: Path) -> None:
    with step_cgroups.buildkit_steps(str(root), LIMITS) as watching:
        assert watching
        make_step(root, "step1")
        for file, value in WRITTEN.items():
            assert wait_for(step_file(root, "step1", file), value) == value
    assert (root / "memory" / step_cgroups.BUILDKIT_STEPS / "step1" / "memory.memsw.limit_in_bytes").read_text() == str(64 * MIB)
    make_step(root, "after")  # the build is over: nothing watches
    assert (root / "pids" / step_cgroups.BUILDKIT_STEPS / "after" / "pids.max").read_text() == "max"


def test_of_two_builds_watching_at_once_the_larger_limits_win() -> None:
    assert step_cgroups._larger("max", 32, None) and step_cgroups._larger("-1", 50000, None)
    assert step_cgroups._larger("9223372036854771712", 64 * MIB, step_cgroups.UNLIMITED_FROM)
    assert step_cgroups._larger(str(32 * MIB), 64 * MIB, step_cgroups.UNLIMITED_FROM)
    assert not step_cgroups._larger(str(128 * MIB), 64 * MIB, step_cgroups.UNLIMITED_FROM)


def test_a_step_that_another_builds_watcher_gave_larger_limits_keeps_them(root: Path) -> None:
    larger = {"memory": {"memory.limit_in_bytes": str(128 * MIB)}, "pids": {"pids.max": "64"}, "cpu": {"cpu.cfs_quota_us": "100000"}}
    with step_cgroups.buildkit_steps(str(root), LIMITS):
        make_step(root, "other", larger)
        make_step(root, "mine")
        assert wait_for(step_file(root, "mine", "pids.max"), "32") == "32"  # the watcher has seen both by now
    assert step_file(root, "other", "pids.max").read_text() == "64"
    assert step_file(root, "other", "memory.limit_in_bytes").read_text() == str(128 * MIB)


def test_without_a_writable_v1_tree_nothing_is_watched(tmp_path: Path) -> None:
    with step_cgroups.buildkit_steps(str(tmp_path / "none"), LIMITS) as watching:
        assert not watching
    with step_cgroups.buildkit_steps("", LIMITS) as watching:
        assert not watching


def test_a_buildx_build_run_under_limits_has_each_of_its_steps_limited_before_the_step_runs(
    root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The whole buildx path: ``limited`` around ``buildx_build``, a fake buildx whose one step's cgroup
    appears (as the engine's BuildKit makes it) and records what the step would see."""
    seen: dict[str, str] = {}

    def build(_cli: BuildxCLI, context_path: str, **kwargs: Any) -> Iterator[str]:
        make_step(root, "run1")
        for file, value in WRITTEN.items():
            seen[file] = wait_for(step_file(root, "run1", file), value)
        Path(kwargs["metadata_file"]).write_text(json.dumps({"containerimage.config.digest": "sha256:" + "ab" * 32}))
        return iter(["#5 [2/2] RUN make\n", "#5 DONE 0.1s\n"])

    monkeypatch.setattr(BuildxCLI, "build", build)
    engine = FakeEngine()
    engine.info_answer = {"MemTotal": 1024 * MIB, "NCPU": 1, "CgroupDriver": "cgroupfs", "CgroupVersion": "1"}
    settings = make_settings(build_cgroup_root=str(root))
    (tmp_path / "Dockerfile").write_text("FROM base:1\nRUN make\n")
    lines: list[str] = []
    with limited("buildx", LIMITS, client=engine, settings=settings, output=lines.append) as output:  # type: ignore[arg-type]
        image_id = buildx.buildx_build(
            settings, context=tmp_path, dockerfile="Dockerfile", tags=["reg/app:1"], build_kwargs={}, labels={}, output=output,
        )
    assert image_id == "sha256:" + "ab" * 32
    assert seen == WRITTEN
    assert "dockyard: build limits: memory 64 MiB, 0.5 CPUs, 32 processes\n" in lines


def test_a_build_cgroup_left_by_a_killed_build_is_swept_once_stale_and_a_live_ones_is_not(root: Path) -> None:
    parents = root / "pids" / step_cgroups.BUILD_PARENT
    (parents / "build-dead").mkdir(parents=True)
    (parents / "build-live").mkdir()
    (parents / "other").mkdir()
    old = time.time() - 120
    os.utime(parents / "build-dead", (old, old))
    os.utime(parents / "other", (old, old))
    assert step_cgroups.sweep_parents(parents, stale_after_s=60) == [parents / "build-dead"]
    assert sorted(path.name for path in parents.iterdir()) == ["build-live", "other"]
