"""The bad-input table of the README, on the real farm: each input gets its documented error,
and leaves nothing behind (no cache entry, no lease, no temporary file, no tagged image)."""

from __future__ import annotations

import glob
import io
import subprocess
import sys
import tarfile
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import kombu.exceptions
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.context.pack import PackedContext
from dockyard.tasks.errors import ContextTooLarge, UnsafeContext

from dockyard.tasks.context.store import upload_context
from dockyard.tasks.errors import BuildError, InvalidInput, PushError, RegistryAuthError
from dockyard.tasks.task_names import BUILD_TASK
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import spec_key
from tests.farm.conftest import context_store_client, Registry, WorkerProcess
from tests.probes import bytes_digest

TIMEOUT_S = 120


@dataclass
class Case:
    """One row of the table: what is sent, and the error it must get."""

    name: str
    run: Callable[[Any], Any]
    error: type[BaseException]
    message: str


class Farm:
    """What a case can use: the test's repository, project, registry and settings."""

    def __init__(self, repo: str, project: Path, registry: Registry, settings: Settings, tmp_path: Path, redis_client: redis.Redis) -> None:
        self.repo, self.project, self.registry, self.settings = repo, project, registry, settings
        self.tmp_path, self.redis = tmp_path, redis_client

    def build(self, **params: Any) -> Any:
        params.setdefault("path", str(self.project))
        params.setdefault("tag", "t")
        return client.build(params.pop("image_name", self.repo), timeout_s=TIMEOUT_S, **params)

    def push(self, **params: Any) -> Any:
        params.setdefault("tag", "t")
        return client.push(params.pop("image_name", self.repo), timeout_s=TIMEOUT_S, **params)

    def dockerfile(self, text: str) -> Any:
        (self.project / "Dockerfile").write_text(text)
        return self.build()

    def outside_dockerfile(self) -> Any:
        (self.project.parent / "outside.Dockerfile").write_text("FROM 127.0.0.1:5000/base/busybox:1\n")
        return self.build(dockerfile="../outside.Dockerfile")

    def send_raw(self, name: str, **kwargs: Any) -> Any:
        from dockyard.workers.app import app

        return app.send_task(name, kwargs=kwargs)

    def cli(self, *args: str) -> Any:
        completed = subprocess.run(
            [sys.executable, "-m", "dockyard.workers.cli", *args], capture_output=True, text=True, timeout=TIMEOUT_S
        )
        if completed.returncode != 0:
            raise CliFailed(f"exit {completed.returncode}: {completed.stderr.strip()}")
        return completed.stdout

    def crafted_archive(self, member: tarfile.TarInfo) -> Any:
        """A context archive made by hand (the project's Dockerfile and ``member``), put in the store,
        sent to a worker in a buildx build spec (buildx builds from a directory the worker unpacks)."""
        dockerfile = (self.project / "Dockerfile").read_bytes()
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w") as archive:
            header = tarfile.TarInfo("Dockerfile")
            header.size = len(dockerfile)
            archive.addfile(header, io.BytesIO(dockerfile))
            archive.addfile(member, io.BytesIO(b"x" * member.size))
        data = buffer.getvalue()
        packed = PackedContext(digest=bytes_digest(data), size=len(data), file=io.BytesIO(data))
        upload_context(context_store_client(), self.settings, packed)  # where workers read contexts
        spec, real = prepare_build(
            {"image_name": self.repo, "path": str(self.project), "tag": "t", "build_backend": "buildx"}, self.settings
        )
        real.close()
        crafted = spec.model_copy(update={"context_digest": packed.digest})
        crafted = crafted.model_copy(update={"key": spec_key(crafted)})
        from dockyard.workers.app import app

        return app.signature(BUILD_TASK, kwargs={"spec": crafted.model_dump()}).apply_async().get(timeout=TIMEOUT_S)


class CliFailed(Exception):
    """The CLI exited non-zero."""


def member(name: str, *, kind: bytes = tarfile.REGTYPE, linkname: str = "", size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.size = kind, linkname, size if kind == tarfile.REGTYPE else 0
    return info


def big_context(farm: Farm) -> Any:
    (farm.project / "big.bin").write_bytes(b"\0" * 4096)
    small = farm.settings.model_copy(update={"context_max_bytes": 2048})
    return prepare_build({"image_name": farm.repo, "path": str(farm.project)}, small)


CASES = [
    Case("image name with a space", lambda f: f.build(image_name="my image"), InvalidInput, "Invalid Docker image name"),
    Case("empty image name", lambda f: f.build(image_name=""), InvalidInput, "Invalid Docker image name"),
    Case("image name not a string", lambda f: f.build(image_name=42), InvalidInput, "Invalid Docker image name"),
    Case("tag with a space", lambda f: f.build(tag="v 1"), InvalidInput, "Invalid Docker tag"),
    Case("tag starting with '-'", lambda f: f.build(tag="-v1"), InvalidInput, "Invalid Docker tag"),
    Case("tag over 128 characters", lambda f: f.build(tag="v" * 129), InvalidInput, "Invalid Docker tag"),
    Case("additional tag with ':'", lambda f: f.build(additional_tags=["a:b"]), InvalidInput, "Invalid Docker tag"),
    Case("path that does not exist", lambda f: f.build(path=str(f.tmp_path / "nope")), InvalidInput, "not a directory"),
    Case("path that is a file", lambda f: f.build(path=str(f.project / "Dockerfile")), InvalidInput, "not a directory"),
    Case("missing Dockerfile", lambda f: f.build(dockerfile="Nope.Dockerfile"), InvalidInput, "not found"),
    Case("Dockerfile outside the context", lambda f: f.outside_dockerfile(), InvalidInput, "must be inside the build context"),
    Case("empty Dockerfile", lambda f: f.dockerfile(""), BuildError, "(?i)empty|no instructions|cannot be empty"),
    Case("Dockerfile syntax error", lambda f: f.dockerfile("FROMM nothing\n"), BuildError, "(?i)unknown instruction"),
    Case("failing RUN", lambda f: f.dockerfile("FROM 127.0.0.1:5000/base/busybox:1\nRUN false\n"), BuildError, "non-zero code"),
    Case("auto with an existing Dockerfile", lambda f: f.build(dockerfile="auto"), InvalidInput, "Dockerfile already exists."),
    Case("unknown build_backend", lambda f: f.build(build_backend="podman"), InvalidInput, "Invalid build_backend"),
    Case("labels not a mapping", lambda f: f.build(labels=["a=b"]), InvalidInput, "labels must be a mapping"),
    Case("build kwarg that is not JSON", lambda f: f.build(buildargs={"A": object()}), InvalidInput, "JSON-serialisable"),
    Case("unknown docker-py build kwarg", lambda f: f.build(no_such_option=True), InvalidInput, "build argument"),
    Case("context over the size limit", big_context, ContextTooLarge, "over the limit"),
    Case("several platforms without push", lambda f: f.build(build_backend="buildx", platforms=["linux/amd64", "linux/arm64"]), InvalidInput, "require push=True"),
    Case("build secret without src or env", lambda f: f.build(build_backend="buildx", secrets=["id=x"]), InvalidInput, "needs src=PATH or env=VAR"),
    Case("build secret file missing", lambda f: f.build(build_backend="buildx", secrets=["id=x,src=/no/such/file"]), InvalidInput, "cannot read"),
    Case("context archive with '..'", lambda f: f.crafted_archive(member("../escape")), UnsafeContext, "outside the context"),
    Case("context archive with an absolute name", lambda f: f.crafted_archive(member("/etc/escape")), UnsafeContext, "outside the context"),
    Case("context archive with an escaping link", lambda f: f.crafted_archive(member("evil", kind=tarfile.SYMTYPE, linkname="../../../etc")), UnsafeContext, "refused"),
    Case("push name with a space", lambda f: f.push(image_name="my image"), InvalidInput, "Invalid Docker image name"),
    Case("push tag malformed", lambda f: f.push(tag="no good"), InvalidInput, "Invalid Docker tag"),
    Case("credentials not a mapping", lambda f: f.push(credentials="user:pass"), InvalidInput, "credentials must be a mapping"),
    Case("credentials without a password", lambda f: f.push(credentials={"username": "u", "registry_url": "127.0.0.1:5000"}), InvalidInput, "password"),
    Case("credentials with an unknown key", lambda f: f.push(credentials={"username": "u", "password": "p", "token": "t"}), InvalidInput, "Unknown credentials keys"),
    Case("wrong registry password", lambda f: (f.build(), f.push(credentials={**f.registry.credentials, "password": "wrong"})), RegistryAuthError, "Login to 127.0.0.1:5000 failed"),
    Case("push of an image no host has", lambda f: f.push(tag="never-built"), PushError, "No image"),
    Case("task arguments that are not JSON", lambda f: f.send_raw(BUILD_TASK, image_name=object()), kombu.exceptions.EncodeError, "not JSON serializable"),
    Case("CLI build with a bad name", lambda f: f.cli("build", "bad name", "--path", str(f.project)), CliFailed, "exit 1: dockyard: InvalidInput: Invalid Docker image name"),
    Case("CLI build of a missing path", lambda f: f.cli("build", f.repo, "--path", "/no/such/dir"), CliFailed, "exit 1: dockyard: InvalidInput: .* is not a directory"),
    Case("CLI push with a bad tag", lambda f: f.cli("push", f.repo, "--tag", "bad tag"), CliFailed, "exit 1: dockyard: InvalidInput: Invalid Docker tag"),
    Case("CLI unknown command", lambda f: f.cli("launch"), CliFailed, "(?s)exit 2: .*invalid choice"),
]


def snapshot(redis_client: redis.Redis, settings: Settings, engines: list[docker.DockerClient], repo: str) -> dict[str, Any]:
    keys = {k.decode() for pattern in ("lease:*", "build:*", "push:*", "call:*") for k in redis_client.scan_iter(settings.key_prefix + pattern)}
    temporary = set(glob.glob(str(Path(tempfile.gettempdir()) / "dockyard-*")))
    images = [tag for engine in engines for image in engine.images.list(name=repo) for tag in image.tags]
    return {"keys": keys, "temporary": temporary, "images": images}


@pytest.fixture
def farm(repo: str, project: Path, registry: Registry, settings: Settings, tmp_path: Path, redis_client: redis.Redis) -> Iterator[Farm]:
    yield Farm(repo, project, registry, settings, tmp_path, redis_client)


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_bad_input_gets_its_error_and_leaves_nothing_behind(
    case: Case, farm: Farm, engines: list[docker.DockerClient], farm_workers: list[WorkerProcess]
) -> None:
    before = snapshot(farm.redis, farm.settings, engines, farm.repo)
    project_before = sorted(p.name for p in farm.project.iterdir())
    with pytest.raises(case.error, match=case.message):
        case.run(farm)
    after = snapshot(farm.redis, farm.settings, engines, farm.repo)
    assert [k for k in after["keys"] - before["keys"] if ":lease:" in k] == [], "no lease held"
    new_entries = [k for k in after["keys"] - before["keys"] if ":lease:" not in k]
    if case.name == "wrong registry password":
        assert all(":build:" in k for k in new_entries), "only the good build is cached, not the push"
    else:
        assert new_entries == [], "nothing cached"
    assert after["temporary"] - before["temporary"] == set(), "no temporary file or directory left"
    if case.name != "wrong registry password":
        assert after["images"] == before["images"], "no image tagged"
    leftovers = sorted(p.name for p in farm.project.iterdir())
    assert [n for n in leftovers if n.startswith(".dockyard-")] == [], "no generated Dockerfile left"
    assert len(leftovers) <= len(project_before) + 1  # the big.bin of the size-limit case
