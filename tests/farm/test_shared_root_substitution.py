"""A shared-root build is cached only under its own context's key (issue 19, item 9), on the real farm.

The suite's workers read contexts under DOCKYARD_SHARED_CONTEXT_ROOT (tests/farm/conftest.py: the
temporary directory, where ``tmp_path`` lies). A message sent by name names context A's digest (a
valid key) and points ``context_path`` at directory B under the root, whose Dockerfile has the very
bytes of A's. The worker must refuse it, store nothing under A's key, and A's own caller must then
get a build of A's files, not a hit on B's.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec
from dockyard.tasks.task_names import BUILD_TASK
from tests.farm.conftest import SHARED_CONTEXT_ROOT, WorkerProcess

TIMEOUT_S = 120
MISMATCH = "does not match the spec's context_digest"


def context(directory: Path, base_image: str, content: str) -> Path:
    """A context whose image holds ``content`` at /app/app.txt; every such context has one Dockerfile."""
    directory.mkdir()
    (directory / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app/app.txt\n")
    (directory / "app.txt").write_text(content)
    return directory


def path_spec(repo: str, directory: Path, tag: str, settings: Settings) -> BuildSpec:
    """The spec a caller of the shared-filesystem transport sends for ``directory``."""
    spec, packed = prepare_build(
        {"image_name": repo, "tag": tag, "path": str(directory)}, settings.model_copy(update={"context_transport": "path"})
    )
    packed.close()
    return spec


def file_in_image(engine: docker.DockerClient, image_id: str) -> str:
    """/app/app.txt of ``image_id``, read in a container without any network (the engines have no bridge)."""
    output = engine.containers.run(image_id, ["cat", "/app/app.txt"], network_mode="none", remove=True)
    return bytes(output).decode(errors="replace")


def test_a_substituted_shared_directory_is_refused_and_the_real_context_builds_its_own_files(
    tmp_path: Path, repo: str, base_image: str, settings: Settings, redis_client: redis.Redis,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dockyard.workers.app import app

    assert tmp_path.resolve().is_relative_to(Path(SHARED_CONTEXT_ROOT).resolve()), "both contexts under the workers' root"
    real_files, other_files = f"real {uuid.uuid4()}\n", f"other {uuid.uuid4()}\n"
    real = context(tmp_path / "real", base_image, real_files)
    other = context(tmp_path / "other", base_image, other_files)
    claimed = path_spec(repo, real, "substituted", settings)
    assert path_spec(repo, other, "substituted", settings).dockerfile_digest == claimed.dockerfile_digest, \
        "only the files other than the Dockerfile differ"
    cache_key = client.caller_cache_key(claimed, settings)  # the key the farm caches A under (its base resolved)
    assert cache_key is not None
    cache = build_cache(redis_client, settings)  # the worker user's connection: it may read the cache's keys
    assert cache.peek(cache_key) is None

    forged = {**claimed.model_dump(), "context_path": str(other.resolve())}  # the key stays valid: it has no path
    sent = app.signature(BUILD_TASK, kwargs={"spec": forged}).apply_async()
    sent.get(timeout=TIMEOUT_S, propagate=False)
    refusal = sent.result if sent.state == "FAILURE" else None
    stored = cache.peek(cache_key)
    built_from_other = [image.id for engine in engines for image in engine.images.list(name=repo)]

    monkeypatch.setattr(client, "get_settings", lambda: settings.model_copy(update={"context_transport": "path"}))
    answer = client.build(repo, path=str(real), tag="real")
    holder = engines[[each.host_id for each in farm_workers].index(answer["host"])]

    observed: dict[str, Any] = {
        "substituted directory refused": isinstance(refusal, InvalidInput) and MISMATCH in str(refusal),
        "entry under A's key after it": None if stored is None else stored.value,
        "images built from it": built_from_other,
        "A's caller": answer["cache"],
        "A's image holds": file_in_image(holder, answer["image_id"]),
    }
    assert observed == {
        "substituted directory refused": True,
        "entry under A's key after it": None,
        "images built from it": [],
        "A's caller": "built",
        "A's image holds": real_files,
    }, f"the forged message ended {sent.state}: {sent.result!r}"
    assert str(other.resolve()) in str(refusal) and claimed.context_digest in str(refusal), "the refusal names the mismatch"
    entry = cache.peek(cache_key)
    assert entry is not None and entry.value["image_id"] == answer["image_id"], "A's own build is what A's key holds now"
