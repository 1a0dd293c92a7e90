"""Resource limits of build steps: the farm's (settings, or computed from the host), a request's smaller ones, and what exceeding them looks like.

The farm sets memory, CPU and pids limits for every build step; a request may
ask for less (``BuildOptions.limits``), never more (``InvalidInput`` naming the
limit and its setting). Defaults keep the host alive: memory is the host's
memory per build slot times ``build_memory_fraction``, CPUs the host's CPUs
per slot (at least one), pids ``DEFAULT_PIDS``. How each backend enforces them is
``dockyard.tasks.engine.step_cgroups``; a step killed for its memory, or a
fork refused by its pids limit, fails the build with ``BuildLimitExceeded``.
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import weakref
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import docker

from dockyard.config.settings import Settings
from dockyard.tasks.engine import step_cgroups
from dockyard.tasks.errors import BuildError, BuildLimitExceeded, InvalidInput
from dockyard.tasks.output import OutputSink
from dockyard.tasks.request.spec import LIMIT_SETTINGS, MIN_LIMIT_MEMORY_BYTES, BuildLimits, BuildOptions, limits_refusal

logger = logging.getLogger(__name__)

DEFAULT_PIDS = 1024  # processes of one build when build_pids is unset: a fork bomb stops there, a make -j does not
MIB = 1024**2
KILLED_CODE = 137  # 128 + SIGKILL: what the engine reports for a step the kernel's OOM killer killed
KILLED_MARKERS = (re.compile(r"returned a non-zero code: 137\b"), re.compile(r"exit code: 137\b"))
FORK_FAILED = re.compile(r"can't fork|fork: retry|fork: Resource temporarily unavailable|Resource temporarily unavailable")


@dataclass(frozen=True)
class HostFacts:
    """What the engine's host has: memory, CPUs, and whether its cgroups are v1 under the cgroupfs driver."""

    memory_bytes: int
    cpus: int
    cgroupfs_v1: bool


_facts: weakref.WeakKeyDictionary[Any, HostFacts] = weakref.WeakKeyDictionary()
_facts_lock = threading.Lock()
UNKNOWN_HOST = HostFacts(memory_bytes=0, cpus=0, cgroupfs_v1=False)  # a client that cannot tell: only configured limits


def host_facts(client: docker.DockerClient) -> HostFacts:
    """The engine's host as ``docker info`` tells it (asked once per client)."""
    with _facts_lock, contextlib.suppress(TypeError):
        if (known := _facts.get(client)) is not None:
            return known
    ask = getattr(client, "info", None)
    if ask is None:
        return UNKNOWN_HOST
    info = ask()
    found = HostFacts(
        memory_bytes=int(info.get("MemTotal") or 0), cpus=int(info.get("NCPU") or 0),
        cgroupfs_v1=info.get("CgroupDriver") == "cgroupfs" and str(info.get("CgroupVersion", "1")) == "1",
    )
    with _facts_lock, contextlib.suppress(TypeError):
        _facts[client] = found
    return found


def farm_limits(settings: Settings, host: HostFacts) -> BuildLimits:
    """The farm's limits of one build step on ``host``: the settings', or the computed defaults."""
    slots = max(1, settings.worker_concurrency)
    memory = settings.build_memory_bytes or int(host.memory_bytes / slots * settings.build_memory_fraction)
    cpus = settings.build_cpus or min(float(host.cpus), max(1.0, round(host.cpus / slots, 3)))  # a slot gets 1 CPU at least
    return BuildLimits(
        memory_bytes=max(memory, MIN_LIMIT_MEMORY_BYTES) if memory else None,  # None: a host that does not say
        cpus=max(cpus, 0.01) if cpus else None,
        pids=settings.build_pids or DEFAULT_PIDS,
    )


def requested_memory(options: BuildOptions) -> int | None:
    """The memory the request asks for: ``limits.memory_bytes`` or docker-py's ``container_limits.memory``, the smaller."""
    asked = [options.limits.memory_bytes] if options.limits and options.limits.memory_bytes else []
    container = options.build_kwargs.get("container_limits")
    if isinstance(container, Mapping) and isinstance(container.get("memory"), int) and container["memory"] > 0:
        asked.append(int(container["memory"]))
    return min(asked) if asked else None


def build_limits(options: BuildOptions, settings: Settings, client: docker.DockerClient) -> BuildLimits:
    """The limits ``options`` builds under here: the farm's, or the smaller ones it asks for.

    ``InvalidInput`` when it asks for more than the farm allows (the worker's check; the caller
    checks against the settings it knows, ``BuildOptions.check_allowed``).
    """
    farm = farm_limits(settings, host_facts(client))
    reason = limits_refusal(options.limits, options.build_kwargs.get("container_limits"), farm)
    if reason is not None:
        raise InvalidInput(reason)
    asked = options.limits or BuildLimits()
    memory = requested_memory(options)
    return BuildLimits(
        memory_bytes=min(memory, farm.memory_bytes or memory) if memory else farm.memory_bytes,
        cpus=asked.cpus or farm.cpus,
        pids=asked.pids or farm.pids,
    )


def size(memory_bytes: int | None) -> str:
    """A memory size as people read it: MiB (or GiB from 10 GiB up)."""
    if memory_bytes is None:
        return "unlimited"
    if memory_bytes >= 10 * 1024 * MIB:
        return f"{memory_bytes / (1024 * MIB):.1f} GiB"
    return f"{memory_bytes / MIB:g} MiB"


def describe(limits: BuildLimits) -> str:
    """One line of the limits, for the build's output."""
    cpus = f"{limits.cpus:g} CPUs" if limits.cpus else "CPUs unlimited"
    pids = f"{limits.pids} processes" if limits.pids else "processes unlimited"
    return f"memory {size(limits.memory_bytes)}, {cpus}, {pids}"


def exceeded(message: str, limits: BuildLimits, *, fork_failed: bool) -> BuildLimitExceeded | None:
    """The error of a build step that hit its limits, from the engine's failure ``message`` (None: another failure)."""
    if any(marker.search(message) for marker in KILLED_MARKERS):
        return BuildLimitExceeded(
            f"a build step was killed: it exceeded its memory limit of {size(limits.memory_bytes)} "
            f"(DOCKYARD_{LIMIT_SETTINGS['memory_bytes'].upper()}, or the build's limits.memory_bytes)\n{message}"
        )
    if fork_failed:
        return BuildLimitExceeded(
            f"a build step could not start a process: it reached its pids limit of {limits.pids} "
            f"(DOCKYARD_{LIMIT_SETTINGS['pids'].upper()}, or the build's limits.pids)\n{message}"
        )
    return None


class ForkWatch:
    """An output sink that passes every line on and remembers whether a fork failed in one."""

    def __init__(self, output: OutputSink) -> None:
        self.output = output
        self.fork_failed = False

    def __call__(self, text: str) -> None:
        if not self.fork_failed and FORK_FAILED.search(text):
            self.fork_failed = True
        self.output(text)


@contextlib.contextmanager
def limited(
    backend: str, limits: BuildLimits, *, client: docker.DockerClient, settings: Settings, output: OutputSink,
) -> Iterator[OutputSink]:
    """Run the block's build under ``limits``; yield the output sink it writes to.

    The classic builder gets them as the engine's build parameters (``memory``,
    ``memswap``, ``cpuquota``, and a cgroup parent of this build with its pids
    limit); buildx's steps get them written into each step's cgroup as it
    appears (``dockyard.tasks.engine.step_cgroups``). A ``BuildError`` of a step
    that hit a limit becomes ``BuildLimitExceeded``.
    """
    watch = ForkWatch(output)
    root = settings.build_cgroup_root if host_facts(client).cgroupfs_v1 else ""
    with contextlib.ExitStack() as stack:
        if backend == "buildx":
            if not stack.enter_context(step_cgroups.buildkit_steps(root, limits)):
                output("dockyard: this host cannot limit buildx build steps (no cgroup v1 tree to watch)\n")
        else:
            parent = stack.enter_context(step_cgroups.build_parent(root, limits, stale_after_s=settings.task_time_limit_s))
            if parent is None:
                output("dockyard: this host cannot limit the processes of a build (no cgroup v1 tree)\n")
            stack.enter_context(step_cgroups.classic_parameters(client.api, step_cgroups.classic_query(limits, parent)))
        output(f"dockyard: build limits: {describe(limits)}\n")
        try:
            yield watch
        except BuildLimitExceeded:
            raise
        except BuildError as exc:
            mapped = exceeded(str(exc), limits, fork_failed=watch.fork_failed)
            if mapped is None:
                raise
            raise mapped from exc
