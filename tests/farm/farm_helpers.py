"""Helpers for tests on several hosts: build counts read from the Docker engines themselves."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import docker

from dockyard.tasks.engine.network_probe import PROBE_LABEL


def container_creates(
    engines: list[docker.DockerClient], since: float, until: float, *, from_image: str | None = None
) -> int:
    """Containers the engines created in [since, until], optionally only those made from ``from_image``.

    The classic builder creates a container for each step it does not take
    from its layer cache; a step made from the base image is the first step
    of a real build. A worker's start-up probe of its build network is no
    build: its containers (labelled ``PROBE_LABEL``) are not counted.
    """
    total = 0
    for engine in engines:
        events = engine.events(
            since=f"{since:.6f}", until=f"{until:.6f}", decode=True,
            filters={"type": "container", "event": "create"},
        )
        total += sum(
            1 for event in events
            if PROBE_LABEL not in event.get("Actor", {}).get("Attributes", {})
            and (from_image is None or event.get("Actor", {}).get("Attributes", {}).get("image") == from_image)
        )
    return total


def image_id_on_any(engines: list[docker.DockerClient], reference: str) -> str:
    for engine in engines:
        try:
            return str(engine.images.get(reference).id)
        except docker.errors.ImageNotFound:
            continue
    raise AssertionError(f"no engine has {reference}")


def slow_context(root: Path, base_image: str, *, seconds: float = 3) -> Path:
    """A context whose only RUN step sleeps and writes a fresh value (one container per real build)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "Dockerfile").write_text(f"FROM {base_image}\nRUN sleep {seconds} && echo {uuid.uuid4()} > /built\n")
    return root


def settle() -> float:
    """A timestamp safely after every earlier event, and safely before every later one."""
    time.sleep(0.05)
    stamp = time.time()
    time.sleep(0.05)
    return stamp


def production_environment() -> dict[str, str]:
    """This environment without the test suite's shortened ``DOCKYARD_*`` settings (leases, limits): a run
    started with it reads the farm's own from farm.env and keeps every production default."""
    return {k: v for k, v in os.environ.items() if not k.startswith("DOCKYARD_") or k == "DOCKYARD_FARM_DIR"}


def team_host_queue(host_id: str) -> str:
    """``host_id``'s own queue of the session's team A (the test process's team)."""
    from dockyard.config.settings import host_queue, team_queue
    from tests.farm import conftest

    return team_queue(host_queue(host_id), conftest.TEAM_A)


def team_fast_queue(host_id: str) -> str:
    """``host_id``'s fast queue of the session's team A."""
    from dockyard.config.settings import fast_queue, team_queue
    from tests.farm import conftest

    return team_queue(fast_queue(host_id), conftest.TEAM_A)


def team_shared_queue() -> str:
    """The shared build queue of the session's team A."""
    from dockyard.config.settings import get_settings, team_queue
    from tests.farm import conftest

    return team_queue(get_settings().build_queue, conftest.TEAM_A)
