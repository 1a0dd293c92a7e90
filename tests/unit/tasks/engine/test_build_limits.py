"""dockyard.tasks.engine.limits (tests/farm/test_limits.py holds the farm's name): the farm's limits (settings or computed), a request's smaller ones, the error of a step that hit them.

The classic builder runs on the fake engine of tests/unit/fakes.py, which records the
engine parameters a build carries; a cgroup tree is a temporary directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.engine import limits, step_cgroups
from dockyard.tasks.engine.build import build_from_archive
from dockyard.tasks.engine.limits import DEFAULT_PIDS, HostFacts, build_limits, exceeded, farm_limits, limited
from dockyard.tasks.errors import BuildError, BuildLimitExceeded, InvalidInput
from dockyard.tasks.request.spec import BuildLimits, BuildOptions, BuildSpec, spec_key
from tests.unit.fakes import FakeEngine, context_tar
from tests.unit.support import make_settings

GIB = 1024**3
MIB = 1024**2
HOST = HostFacts(memory_bytes=16 * GIB, cpus=8, cgroupfs_v1=True)
CLASSIC_OOM = "The command '/bin/sh -c head -c 300m /dev/zero | tail > /dev/null' returned a non-zero code: 137"
BUILDX_OOM = "ERROR: failed to solve: executor failed running [/bin/sh -c head -c 300m /dev/zero | tail]: exit code: 137"


def options(**fields: Any) -> BuildOptions:
    return BuildOptions.parse({"image_name": "reg.io/team/app", "tag": "v1", **fields})


def small_farm(**overrides: Any) -> Settings:
    return make_settings(build_memory_bytes=64 * MIB, build_cpus=0.5, build_pids=32, **overrides)


# the farm's limits


def test_the_defaults_are_the_hosts_memory_per_slot_times_the_fraction_its_cpus_per_slot_and_1024_pids() -> None:
    found = farm_limits(make_settings(worker_concurrency=2, build_memory_fraction=0.75), HOST)
    assert found == BuildLimits(memory_bytes=6 * GIB, cpus=4.0, pids=DEFAULT_PIDS)
    assert DEFAULT_PIDS == 1024


def test_a_slot_gets_one_cpu_at_least_and_never_more_than_the_host_has() -> None:
    assert farm_limits(make_settings(worker_concurrency=16), HOST).cpus == 1.0
    assert farm_limits(make_settings(worker_concurrency=1), HostFacts(GIB, 1, True)).cpus == 1.0


def test_settings_set_the_limits_and_zero_means_the_computed_default() -> None:
    assert farm_limits(small_farm(), HOST) == BuildLimits(memory_bytes=64 * MIB, cpus=0.5, pids=32)
    zero = make_settings(build_memory_bytes=0, build_cpus=0, build_pids=0, worker_concurrency=4, build_memory_fraction=0.5)
    assert farm_limits(zero, HOST) == BuildLimits(memory_bytes=2 * GIB, cpus=2.0, pids=DEFAULT_PIDS)


def test_a_host_that_does_not_say_its_memory_gets_only_the_configured_limits() -> None:
    assert farm_limits(make_settings(), limits.UNKNOWN_HOST) == BuildLimits(memory_bytes=None, cpus=None, pids=DEFAULT_PIDS)


def test_the_host_is_read_from_docker_info_once_per_client() -> None:
    engine = FakeEngine()
    engine.info_answer = {"MemTotal": 4 * GIB, "NCPU": 2, "CgroupDriver": "cgroupfs", "CgroupVersion": "1"}
    assert limits.host_facts(engine) == HostFacts(4 * GIB, 2, True)  # type: ignore[arg-type]
    engine.info_answer = {}
    assert limits.host_facts(engine) == HostFacts(4 * GIB, 2, True)  # type: ignore[arg-type]


# a request's limits


def test_a_request_asking_for_more_than_the_farm_is_refused_naming_the_limit_and_its_setting() -> None:
    for asked, named in (
        ({"memory_bytes": 128 * MIB}, "limits.memory_bytes=134217728"),
        ({"cpus": 2}, "limits.cpus=2"),
        ({"pids": 64}, "limits.pids=64"),
    ):
        with pytest.raises(InvalidInput, match="more than the farm allows") as refused:
            build_limits(options(limits=asked), small_farm(), FakeEngine())  # type: ignore[arg-type]
        assert named in str(refused.value)
        assert "DOCKYARD_BUILD_" in str(refused.value)


def test_docker_pys_container_limits_may_not_ask_for_more_memory_either() -> None:
    asks = options(build_kwargs={"container_limits": {"memory": 256 * MIB}})
    with pytest.raises(InvalidInput, match=r"container_limits.memory=268435456.*DOCKYARD_BUILD_MEMORY_BYTES"):
        build_limits(asks, small_farm(), FakeEngine())  # type: ignore[arg-type]


def test_a_request_asking_for_less_gets_less_and_the_farms_for_the_rest() -> None:
    found = build_limits(options(limits={"memory_bytes": 32 * MIB}), small_farm(), FakeEngine())  # type: ignore[arg-type]
    assert found == BuildLimits(memory_bytes=32 * MIB, cpus=0.5, pids=32)
    smaller = options(build_kwargs={"container_limits": {"memory": 16 * MIB}}, limits={"pids": 8})
    assert build_limits(smaller, small_farm(), FakeEngine()) == BuildLimits(memory_bytes=16 * MIB, cpus=0.5, pids=8)  # type: ignore[arg-type]


def test_the_caller_refuses_more_than_the_limits_its_settings_name() -> None:
    with pytest.raises(InvalidInput, match="DOCKYARD_BUILD_PIDS"):
        options(limits={"pids": 64}).check_allowed(small_farm())
    options(limits={"pids": 64}).check_allowed(make_settings())  # no configured limit: the worker checks


def test_limits_are_validated_like_every_field() -> None:
    for wrong in ({"memory_bytes": 1024}, {"cpus": 0}, {"pids": 1}, {"pids": "32"}, {"swap": 1}):
        with pytest.raises(InvalidInput):
            options(limits=wrong)


def test_limits_are_not_in_the_build_key() -> None:
    fields: dict[str, Any] = {
        "image_name": "reg.io/team/app", "tag": "v1", "dockerfile_digest": "sha256:" + "a" * 64,
        "context_digest": "sha256:" + "b" * 64, "context_size": 1, "key": "0" * 64,
    }
    key = spec_key(BuildSpec.model_construct(**fields))
    plain = BuildSpec.parse({**fields, "key": key})
    limited_spec = BuildSpec.parse({**fields, "key": key, "limits": {"memory_bytes": 32 * MIB}})
    assert spec_key(plain) == spec_key(limited_spec) == key


# the classic builder


def classic_build(engine: FakeEngine, settings: Settings, chosen: BuildLimits) -> str:
    with limited("docker-py", chosen, client=engine, settings=settings, output=lambda _text: None) as output:  # type: ignore[arg-type]
        return build_from_archive(
            options(), context_tar(Dockerfile=b"FROM base:1\n"), auto_lines=None, client=engine, settings=settings, output=output,  # type: ignore[arg-type]
        )


def test_the_classic_builder_gets_memory_without_swap_and_a_cpu_quota_as_engine_parameters() -> None:
    engine = FakeEngine()
    classic_build(engine, make_settings(), BuildLimits(memory_bytes=64 * MIB, cpus=0.5, pids=32))
    assert engine.build_queries == [{
        "memory": str(64 * MIB), "memswap": str(64 * MIB), "cpuperiod": "100000", "cpuquota": "50000",
    }]
    assert step_cgroups.current_query() is None, "only the block's builds carry them"


def cgroup_tree(root: Path) -> Path:
    for controller in ("memory", "pids", "cpu"):
        (root / controller).mkdir(parents=True)
        (root / controller / "cgroup.procs").write_text("")
    return root


def test_on_a_cgroup_v1_host_a_classic_build_runs_under_a_cgroup_parent_holding_its_pids_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    removed: list[Path] = []
    monkeypatch.setattr(step_cgroups, "_remove", removed.append)  # cgroupfs removes a directory with its files; tmp does not
    engine = FakeEngine()
    engine.info_answer = {"MemTotal": GIB, "NCPU": 1, "CgroupDriver": "cgroupfs", "CgroupVersion": "1"}
    root = cgroup_tree(tmp_path / "cgroup")
    seen: list[str] = []
    original = engine.api.build

    def build(**kwargs: Any) -> Any:
        parent = str((step_cgroups.current_query() or {}).get("cgroupparent"))
        seen.append((root / "pids" / parent.lstrip("/") / "pids.max").read_text())
        return original(**kwargs)

    engine.api.build = build  # type: ignore[method-assign]
    classic_build(engine, make_settings(build_cgroup_root=str(root)), BuildLimits(memory_bytes=64 * MIB, cpus=1.0, pids=32))
    assert engine.build_queries[0]["cgroupparent"].startswith("/dockyard/build-")
    assert seen == ["32"]
    assert removed == [root / "pids" / engine.build_queries[0]["cgroupparent"].lstrip("/")], "removed after the build"


def test_the_engines_parameters_are_added_to_the_build_request_only() -> None:
    class Api:
        def __init__(self) -> None:
            self.sent: list[tuple[str, dict[str, Any]]] = []

        def _post(self, url: str, **kwargs: Any) -> None:
            self.sent.append((url, kwargs.get("params") or {}))

    api = Api()
    with step_cgroups.classic_parameters(api, {"memory": str(64 * MIB), "cgroupparent": "/dockyard/build-1"}):
        api._post("http+docker://localhost/v1.41/build", params={"t": "a:1", "memory": 32 * MIB})
        api._post("http+docker://localhost/v1.41/images/a/tag", params={"tag": "2"})
    api._post("http+docker://localhost/v1.41/build", params={"t": "b:1"})
    assert api.sent == [
        ("http+docker://localhost/v1.41/build", {"t": "a:1", "memory": 32 * MIB, "cgroupparent": "/dockyard/build-1"}),
        ("http+docker://localhost/v1.41/images/a/tag", {"tag": "2"}),
        ("http+docker://localhost/v1.41/build", {"t": "b:1"}),
    ], "a caller's smaller memory stays; other requests and later builds carry nothing"


# a step that hit its limits


def test_a_step_killed_with_137_fails_naming_the_memory_limit_on_either_backend() -> None:
    for message in (CLASSIC_OOM, BUILDX_OOM):
        found = exceeded(message, BuildLimits(memory_bytes=64 * MIB, pids=32), fork_failed=False)
        assert isinstance(found, BuildLimitExceeded)
        assert str(found).startswith(
            "a build step was killed: it exceeded its memory limit of 64 MiB (DOCKYARD_BUILD_MEMORY_BYTES"
        )
        assert message in str(found)


def test_a_classic_build_killed_for_its_memory_raises_build_limit_exceeded() -> None:
    engine = FakeEngine()
    engine.build_error = CLASSIC_OOM
    with pytest.raises(BuildLimitExceeded, match="exceeded its memory limit of 64 MiB"):
        classic_build(engine, make_settings(), BuildLimits(memory_bytes=64 * MIB, cpus=1.0, pids=32))


def test_a_failed_build_whose_output_shows_a_refused_fork_names_the_pids_limit() -> None:
    lines: list[str] = []
    with pytest.raises(BuildLimitExceeded, match=r"pids limit of 32 \(DOCKYARD_BUILD_PIDS"):
        with limited("docker-py", BuildLimits(pids=32), client=FakeEngine(), settings=make_settings(), output=lines.append) as output:  # type: ignore[arg-type]
            output("/bin/sh: can't fork: Resource temporarily unavailable\n")
            raise BuildError("The command '/bin/sh -c for i in $(seq 64); do sleep 5 & done' returned a non-zero code: 2")
    assert "/bin/sh: can't fork: Resource temporarily unavailable\n" in lines, "the output still reaches the caller"
    assert "dockyard: build limits: memory unlimited, CPUs unlimited, 32 processes\n" in lines


def test_another_failure_is_left_as_it_is() -> None:
    assert exceeded("The command '/bin/sh -c false' returned a non-zero code: 1", BuildLimits(pids=32), fork_failed=False) is None
    with pytest.raises(BuildError, match="non-zero code: 1") as failed:
        with limited("docker-py", BuildLimits(pids=32), client=FakeEngine(), settings=make_settings(), output=lambda _t: None):  # type: ignore[arg-type]
            raise BuildError("The command '/bin/sh -c false' returned a non-zero code: 1")
    assert not isinstance(failed.value, BuildLimitExceeded)
