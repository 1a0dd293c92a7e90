"""Trust boundaries on the real farm (DESIGN.md, "Trust boundaries"; issue 10).

- hostile context archives streamed to the engine (docker-py) write nothing outside;
- an in-context symlink is kept, on both backends;
- a RUN step reaches no Redis of the host, on both backends;
- host-reaching build options are refused on the caller and again on the worker, naming the
  option and the setting, and work on a worker whose settings allow them;
- references that are not a repository name fail fast, on every path.
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import docker
import pytest
import redis

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.context.pack import PackedContext

from dockyard.tasks.context.store import upload_context
from dockyard.tasks.errors import BuildError, ContextMissing, InvalidInput
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK
from dockyard.tasks.request.spec import BuildSpec, spec_key
from tests.farm.farm_helpers import PROBE_LABEL, team_host_queue
from tests.farm.conftest import context_store_client, WorkerProcess, farm_docker_hosts
from tests.unit.tasks.context.test_unpack import Member, archive_of, realpath_limit_members, sparse_bomb
from tests.probes import bytes_digest

TIMEOUT_S = 120
# after the chain's last link (the destination, to the kernel; 16 directories deeper, to os.path.realpath):
# up to / for the kernel from any destination up to 16 deep, still inside for realpath
CLIMB = os.path.join(*[".."] * 16)


def worker_app() -> Any:
    from dockyard.workers.app import app

    return app


def engine_of(host: str, farm_workers: list[WorkerProcess], engines: list[docker.DockerClient]) -> docker.DockerClient:
    return engines[[each.host_id for each in farm_workers].index(host)]


def run_in(engine: docker.DockerClient, image: str, command: str) -> str:
    """``command``'s output in a container of ``image`` without any network."""
    output = engine.containers.run(image, ["sh", "-c", command], network_mode="none", remove=True)
    return bytes(output).decode(errors="replace")


def context_digest_of(data: bytes) -> str | None:
    """The tar's context digest; None for a tar that has none (members the digest refuses: pax, sparse)."""
    try:
        return bytes_digest(data)
    except InvalidInput:
        return None


def upload(settings: Settings, data: bytes) -> PackedContext:
    """Put ``data`` in the context store under its context digest or, if it has none, under the sha256
    of its bytes (a forgery)."""
    digest = context_digest_of(data) or "sha256:" + hashlib.sha256(data).hexdigest()
    packed = PackedContext(digest=digest, size=len(data), file=io.BytesIO(data))
    upload_context(context_store_client(), settings, packed)
    return packed


def prepared_spec(
    settings: Settings, params: dict[str, Any], allow: dict[str, bool] | None = None,
) -> BuildSpec:
    """A spec as dockyard.tasks.client makes it (under settings that ``allow``), its context in the store."""
    spec, packed = prepare_build(params, settings.model_copy(update=allow or {}))
    try:
        upload_context(context_store_client(), settings, packed)
    finally:
        packed.close()
    return spec


def send_spec(spec: BuildSpec, queue: str | None = None, timeout_s: float = TIMEOUT_S) -> Any:
    signature = worker_app().signature(BUILD_TASK, kwargs={"spec": spec.model_dump()})
    return signature.apply_async(**({"queue": queue} if queue else {})).get(timeout=timeout_s)


# --- 1. hostile archives streamed to the engine --------------------------------------------------


class Canary:
    """A fresh directory on the host with a flag file (what the archives aim at), and an absolute
    path under /tmp that must never come to exist."""

    def __init__(self, root: Path) -> None:
        self.secret = f"host-secret-{uuid.uuid4().hex}"
        self.directory = root / f"canary-{uuid.uuid4().hex[:8]}"
        self.directory.mkdir()
        (self.directory / "flag").write_text(self.secret)
        self.missing = Path(f"/tmp/dockyard-escape-{uuid.uuid4().hex}")

    def state(self) -> list[tuple[str, int, int, bytes]]:
        return sorted(
            (path.name, path.lstat().st_ino, path.lstat().st_nlink, path.read_bytes() if path.is_file() else b"")
            for path in self.directory.iterdir()
        )


def hostile_archives(dockerfile: bytes, canary: Canary) -> dict[str, bytes]:
    """The four archives of issue 10, each aimed at the canary directory and at an absolute path."""
    first = Member("Dockerfile", content=dockerfile)
    inside = os.path.join(CLIMB, str(canary.directory).lstrip("/"))
    missing = os.path.join(CLIMB, str(canary.missing).lstrip("/"))
    return {
        "realpath limit (CVE-2025-4517)": archive_of([
            first, *realpath_limit_members(240, inside),
            Member("escape2", tarfile.SYMTYPE, linkname=os.path.join(*"abcdefghijklmnop", "l" * 254, missing)),
            Member("escape2/newfile", content=b"new"),
        ]),
        "hardlink escape": archive_of([
            first,
            Member("climbing", tarfile.LNKTYPE, linkname=os.path.join(inside, "flag")),
            Member("climbing", content=b"overwrite"),
            Member("absolute", tarfile.LNKTYPE, linkname=str(canary.directory / "flag")),
            Member("absolute", content=b"overwrite"),
        ]),
        "sparse bomb (pax)": sparse_bomb("pax", realsize=16 * 1024 * 1024, dockerfile=dockerfile),
        "sparse bomb (gnu)": sparse_bomb("gnu", realsize=16 * 1024 * 1024, dockerfile=dockerfile),
        "absolute symlink": archive_of([
            first,
            Member("evil", tarfile.SYMTYPE, linkname=str(canary.directory)),
            Member("evil/newfile", content=b"new"),
            Member("evil/flag", content=b"overwrite"),
            Member("gone", tarfile.SYMTYPE, linkname=str(canary.missing)),
            Member("gone/newfile", content=b"new"),
        ]),
    }


ARCHIVES = ["realpath limit (CVE-2025-4517)", "hardlink escape", "sparse bomb (pax)", "sparse bomb (gnu)", "absolute symlink"]


@pytest.mark.parametrize("name", ARCHIVES)
def test_hostile_archive_streamed_to_the_engine_writes_nothing_outside(
    name: str, repo: str, project: Path, base_image: str, settings: Settings, redis_client: redis.Redis,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess], tmp_path: Path,
) -> None:
    dockerfile = f"FROM {base_image}\nCOPY . /ctx\n".encode()
    (project / "Dockerfile").write_bytes(dockerfile)
    canary = Canary(tmp_path)
    before = canary.state()
    data = hostile_archives(dockerfile, canary)[name]
    assert len(data) < 256 * 1024  # the long names of the realpath chain take the most
    spec = prepared_spec(settings, {"image_name": repo, "path": str(project), "tag": "t"})
    assert spec.build_backend == "docker-py"
    packed = upload(settings, data)
    crafted = spec.model_copy(update={"context_digest": packed.digest, "context_size": packed.size})
    crafted = crafted.model_copy(update={"key": spec_key(crafted)})
    try:
        result: Any = send_spec(crafted)
    except Exception as exc:  # noqa: BLE001 - failing is allowed; what it leaves is what is checked
        result = exc
    print(f"{name}: {result!r}")
    if context_digest_of(data) is None:  # sparse members, pax headers: the worker's download check refuses the tar
        assert isinstance(result, ContextMissing) and "corrupt" in str(result), result
    assert canary.state() == before, "the canary directory is unchanged"
    assert not canary.missing.exists(), f"{canary.missing} was not created"
    entry = build_cache(redis_client, settings).peek(str(client.caller_cache_key(crafted, settings)))
    if isinstance(result, Exception):
        assert entry is None, f"a failed build ({result!r}) stores no result"
        return
    # it built: the stored result is this archive's own image, with nothing of the host in it
    assert entry is not None and entry.value["image_id"] == result["image_id"]
    listing = run_in(engine_of(result["host"], farm_workers, engines), result["image_id"],
                     "cd /ctx && busybox find . -xdev | head -100; cat flaglink climbing absolute evil/flag 2>/dev/null; true")
    assert canary.secret not in listing, "no file of the host was copied into the image"


# --- 2. in-context symlinks ----------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["docker-py", "buildx"])
def test_in_context_symlink_is_kept_in_the_image(
    backend: str, repo: str, project: Path, base_image: str, engines: list[docker.DockerClient],
    farm_workers: list[WorkerProcess],
) -> None:
    (project / "link.txt").symlink_to("app.txt")
    (project / "Dockerfile").write_text(
        f"FROM {base_image}\nCOPY . /ctx\n"
        'RUN test -L /ctx/link.txt && test "$(busybox readlink /ctx/link.txt)" = app.txt\n'
    )
    result = client.build(repo, path=str(project), tag="link", build_backend=backend, timeout_s=TIMEOUT_S)
    engine = engine_of(result["host"], farm_workers, engines)
    shown = run_in(engine, f"{repo}:link", "busybox readlink /ctx/link.txt; cat /ctx/link.txt")
    assert shown.splitlines() == ["app.txt", (project / "app.txt").read_text().strip()]


# --- 3. a RUN step reaches no Redis ----------------------------------------------------------------


def farm_redis_port(settings: Settings) -> int:
    return urlsplit(settings.effective_broker_url).port or 6379


def probe_dockerfile(base_image: str, ports: list[int], marker: str) -> str:
    """A RUN step that sends PING to each Redis port on loopback addresses and keeps what it got."""
    probes = "; ".join(
        f"printf 'PING\\r\\n' | busybox nc -w 2 {address} {port}"
        for port in ports for address in ("127.0.0.1", "127.0.1.1", "localhost")
    )
    return f"FROM {base_image}\nRUN ({probes}; echo {marker}) > /probe.txt 2>&1 || true\n"


def probe_result(engine: docker.DockerClient, image: str, marker: str) -> str:
    text = run_in(engine, image, "cat /probe.txt")
    assert marker in text, f"the probe ran: {text!r}"
    return text


@pytest.mark.parametrize("backend", ["docker-py", "buildx"])
def test_a_run_step_reaches_no_redis(
    backend: str, repo: str, project: Path, base_image: str, settings: Settings,
    engines: list[docker.DockerClient], farm_workers: list[WorkerProcess],
) -> None:
    marker = f"probed-{uuid.uuid4().hex}"
    (project / "Dockerfile").write_text(probe_dockerfile(base_image, [farm_redis_port(settings), 6379], marker))
    result = client.build(repo, path=str(project), tag="probe", build_backend=backend, timeout_s=TIMEOUT_S)
    text = probe_result(engine_of(result["host"], farm_workers, engines), f"{repo}:probe", marker)
    assert "+PONG" not in text and "NOAUTH" not in text and "-ERR" not in text, text


# --- 4. host-reaching options ----------------------------------------------------------------------


def host_options(tmp_path: Path) -> list[tuple[str, str, Any, str]]:
    """(backend, option, value, setting) for each option that reaches the build host."""
    return [
        ("docker-py", "network_mode", "host", "allow_host_network"),
        ("buildx", "network", "host", "allow_host_network"),
        ("buildx", "output", [f"type=local,dest={tmp_path / 'out'}"], "allow_local_build_io"),
        ("buildx", "cache_to", [f"type=local,dest={tmp_path / 'cache'}"], "allow_local_build_io"),
        ("buildx", "cache_from", [f"type=local,src={tmp_path / 'cache'}"], "allow_local_build_io"),
        ("buildx", "build_contexts", {"x": "/etc"}, "allow_local_build_io"),
        ("buildx", "allow", ["network.host"], "allow_buildx_entitlements"),
        ("buildx", "builder", "default", "allow_buildx_builder"),
        ("buildx", "ssh", "default", "allow_ssh_agent"),
    ]


OPTION_IDS = ["network_mode", "network", "output", "cache_to", "cache_from", "build_contexts", "allow", "builder", "ssh"]


def refusal(option: str, setting: str) -> str:
    return rf"(?s)Build option {option}=.*DOCKYARD_{setting.upper()}=true"


@pytest.mark.parametrize("index", range(len(OPTION_IDS)), ids=OPTION_IDS)
def test_host_reaching_option_is_refused_on_the_caller(
    index: int, repo: str, project: Path, tmp_path: Path, redis_client: redis.Redis, settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Refused by the caller itself: nothing is uploaded or sent."""
    backend, option, value, setting = host_options(tmp_path)[index]

    def sent(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the caller uploaded or sent the request instead of refusing it")

    monkeypatch.setattr(client, "upload_context", sent)
    monkeypatch.setattr(client, "_spec_signature", sent)
    started = time.monotonic()
    with pytest.raises(InvalidInput, match=refusal(option, setting)):
        client.build(repo, path=str(project), tag="t", build_backend=backend, timeout_s=TIMEOUT_S, **{option: value})
    assert time.monotonic() - started < 1.0
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.mark.parametrize("index", range(len(OPTION_IDS)), ids=OPTION_IDS)
def test_host_reaching_option_is_refused_on_the_worker(
    index: int, repo: str, project: Path, tmp_path: Path, redis_client: redis.Redis, settings: Settings,
    farm_workers: list[WorkerProcess],
) -> None:
    """A spec made where the option is allowed, sent by name to the test workers, which do not allow it."""
    backend, option, value, setting = host_options(tmp_path)[index]
    assert not getattr(settings, setting), "the test workers run with the default settings"
    spec = prepared_spec(
        settings,
        {"image_name": repo, "path": str(project), "tag": "t", "build_backend": backend, option: value},
        allow={setting: True},
    )
    with pytest.raises(InvalidInput, match=refusal(option, setting)):
        send_spec(spec)
    assert build_cache(redis_client, settings).peek(str(client.caller_cache_key(spec, settings))) is None
    assert not (tmp_path / "out").exists() and not (tmp_path / "cache").exists()


@pytest.fixture
def open_worker(tmp_path: Path, farm_workers: list[WorkerProcess]) -> Iterator[WorkerProcess]:
    """One extra worker on the first engine that allows the host network and local build I/O."""
    worker = WorkerProcess(
        f"test-host-open-{uuid.uuid4().hex[:6]}", farm_docker_hosts()[0], tmp_path / "open.log",
        extra_env={"DOCKYARD_ALLOW_HOST_NETWORK": "true", "DOCKYARD_ALLOW_LOCAL_BUILD_IO": "true"},
    ).start()
    try:
        worker.wait_ready(worker_app())
        yield worker
    finally:
        worker.stop()


def test_host_reaching_options_work_on_a_worker_that_allows_them(
    open_worker: WorkerProcess, repo: str, project: Path, base_image: str, settings: Settings,
    redis_client: redis.Redis, engines: list[docker.DockerClient], tmp_path: Path,
) -> None:
    allow = {"allow_host_network": True, "allow_local_build_io": True}
    queue = team_host_queue(open_worker.host_id)
    # docker-py on the host network: the same probe now reaches the machine's Redis (the control of test 3)
    marker = f"probed-{uuid.uuid4().hex}"
    (project / "Dockerfile").write_text(probe_dockerfile(base_image, [6379], marker))
    spec = prepared_spec(
        settings,
        {"image_name": repo, "path": str(project), "tag": "host", "network_mode": "host"}, allow=allow,
    )
    result = send_spec(spec, queue=queue)
    assert result["host"] == open_worker.host_id
    assert "+PONG" in probe_result(engines[0], f"{repo}:host", marker)
    # buildx with a local output: the files appear in the directory named
    out = tmp_path / "out"
    (project / "Dockerfile").write_text(f"FROM {base_image}\nCOPY app.txt /app/app.txt\n")
    spec = prepared_spec(
        settings,
        {"image_name": repo, "path": str(project), "tag": "local", "build_backend": "buildx",
         "output": {"type": "local", "dest": str(out)}, "load": False},  # buildx cannot also --load here
        allow=allow,
    )
    with pytest.raises(BuildError, match="did not report an image id"):  # see the xfail test below
        send_spec(spec, queue=queue)
    assert (out / "app" / "app.txt").read_text() == (project / "app.txt").read_text()


@pytest.mark.xfail(strict=True, reason=(
    "BUG tasks/engine/buildx.py:98 (buildx_build): a build whose allowed local output is written (load=False, "
    "as buildx cannot --load alongside a local output) always ends in BuildError 'buildx did not report "
    "an image id', so DOCKYARD_ALLOW_LOCAL_BUILD_IO allows an output no build can succeed with"
))
def test_a_buildx_build_with_an_allowed_local_output_succeeds(
    open_worker: WorkerProcess, repo: str, project: Path, base_image: str, settings: Settings,
    redis_client: redis.Redis, tmp_path: Path,
) -> None:
    out = tmp_path / "out"
    spec = prepared_spec(
        settings,
        {"image_name": repo, "path": str(project), "tag": "local", "build_backend": "buildx",
         "output": {"type": "local", "dest": str(out)}, "load": False},
        allow={"allow_local_build_io": True},
    )
    send_spec(spec, queue=team_host_queue(open_worker.host_id))
    assert (out / "app" / "app.txt").is_file()


# --- 5. references that are not a repository name ---------------------------------------------------


def bad_names(repo: str) -> dict[str, dict[str, Any]]:
    registry = repo.split("/", 1)[0]
    return {
        "uppercase repository": {"image_name": f"{registry}/Team/App"},
        "name:tag in image_name": {"image_name": f"{repo}:v1"},
        "digest reference": {"image_name": f"{repo}@sha256:{'0' * 64}"},
        "additional_tags a string": {"image_name": repo, "additional_tags": "latest"},
    }


NAME_CASES = ["uppercase repository", "name:tag in image_name", "digest reference", "additional_tags a string"]


def engine_events(engines: list[docker.DockerClient], since: float, until: float) -> list[str]:
    """The container creates and image pulls the engines saw in [since, until], start-up probes left out."""
    seen = []
    for engine in engines:
        for event in engine.events(since=f"{since:.6f}", until=f"{until:.6f}", decode=True):
            attributes = event.get("Actor", {}).get("Attributes", {})
            if (event.get("Type"), event.get("Action")) in {("container", "create"), ("image", "pull")} \
                    and PROBE_LABEL not in attributes:
                seen.append(f"{event['Type']} {event['Action']} {event.get('Actor', {}).get('ID', '')}")
    return seen


def fails_fast(call: Any, engines: list[docker.DockerClient]) -> InvalidInput:
    """``call`` is refused as InvalidInput before any engine does work for it.

    Fast means refused by validation, not after a build or a timeout: the
    proof is that no engine created a container or pulled an image meanwhile
    (a loaded CI host can take over a second for the round trip itself), and
    that the answer came long before the call's own timeout.
    """
    started = time.time()
    with pytest.raises(InvalidInput) as caught:
        call()
    ended = time.time()
    assert ended - started < TIMEOUT_S / 4, f"took {ended - started:.2f} s"
    assert engine_events(engines, started, ended + 0.001) == []
    return caught.value


@pytest.mark.parametrize("case", NAME_CASES)
def test_bad_reference_fails_fast_on_every_path(
    case: str, repo: str, project: Path, farm_workers: list[WorkerProcess],
    engines: list[docker.DockerClient],
) -> None:
    params = bad_names(repo)[case]
    name, extra = params["image_name"], {k: v for k, v in params.items() if k != "image_name"}
    app = worker_app()
    fails_fast(lambda: client.build(name, path=str(project), tag="t", timeout_s=TIMEOUT_S, **extra), engines)
    fails_fast(lambda: client.push(name, tag="t", timeout_s=TIMEOUT_S, **extra), engines)
    fails_fast(lambda: app.send_task(BUILD_TASK, kwargs={"image_name": name, "path": str(project), "tag": "t", **extra}).get(timeout=TIMEOUT_S), engines)
    fails_fast(lambda: app.send_task(PUSH_TASK, kwargs={"image_name": name, "tag": "t", **extra}).get(timeout=TIMEOUT_S), engines)
    assert [tag for engine in engines for image in engine.images.list(name=repo) for tag in image.tags] == []
