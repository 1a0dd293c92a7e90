"""dockyard.tasks.worker (build, holder, push): build, tag and push on one host, with a fake engine client and fakeredis.

``FakeEngine`` (tests/unit/fakes.py) answers what execute and the build and
push operations under it ask of docker-py.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.worker import build as execute
from dockyard.tasks.worker import push as worker_push
from dockyard.tasks.farm import hosts
from dockyard.tasks import keyspace
from dockyard.tasks.farm import metrics
from dockyard.tasks.routing import placement
from dockyard.tasks.cache.single_flight import Entry, Outcome, build_cache, push_cache
from dockyard.tasks.context.store import upload_context
from dockyard.tasks.errors import BuildError, NotPermitted, PushError, RegistryAuthError, RegistryUnavailable, TransientError
from dockyard.tasks.worker.build import execute_build, execute_tag
from dockyard.tasks.worker.holder import Forward
from dockyard.tasks.worker.push import execute_push
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest
from dockyard.tasks.worker.here import Here
from dockyard.tasks.teams import audit
from dockyard.tasks.teams.pushing import note_owned, owned_key
from tests.unit.fakes import FakeEngine, FakeRegistry, Output
from tests.unit.support import make_settings
from tests.probes import builders, store_entry

NAME = "reg.io/team/app"


@pytest.fixture
def settings() -> Settings:
    return make_settings(host_id="h1", lease_s=0.5, wait_wake_s=0.01)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.py /\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    return tmp_path


def uploaded_spec(settings: Settings, context: Path, **params: Any) -> BuildSpec:
    """A caller's spec with its context in the context store (the unit tests' ``fake_store``), as a worker receives it."""
    spec, packed = prepare_build({"image_name": NAME, "tag": "v1", "path": str(context), **params}, settings)
    try:
        upload_context(keyspace.context_store_for(settings), settings, packed)
    finally:
        packed.close()
    return spec


def build(spec: BuildSpec, connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, **kwargs: Any) -> Any:
    return execute_build(spec, here=Here(settings, connection, engine, Output()), **kwargs)  # type: ignore[arg-type]


# builds


def test_a_miss_builds_here_tags_and_records(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context, additional_tags=["latest"])
    output = Output()
    result = execute_build(spec, here=Here(settings, fake_redis, engine, output), owner="task-1")  # type: ignore[arg-type]
    assert not isinstance(result, Forward)
    image_id = result["image_id"]
    assert (result["host"], result["cache"], result["additional_tags"]) == ("h1", "built", ["latest"])
    assert engine.builds[0]["dockerfile"] == "FROM scratch\nCOPY app.py /\n", "the context was unpacked for the build"
    assert engine.images.get(image_id).tags == [f"{NAME}:latest", f"{NAME}:v1"]
    assert "Step 1/1 : FROM scratch\n" in output
    entry = build_cache(fake_redis, settings).peek(spec.key)
    assert entry is not None and (entry.value, entry.host, entry.owner) == ({"image_id": image_id}, "h1", "task-1")
    assert hosts.locate_images(fake_redis, settings, spec.references) == [{"host": "h1", "image_id": image_id}] * 2
    counted = metrics.read(fake_redis, settings, "h1")
    assert counted["builds_total"] == counted["cache_misses_total"] == counted["build_seconds_count"] == 1


def test_the_tags_are_located_before_the_entry_is_stored(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A joiner woken by the stored entry can answer at once: the tags' locations are already there."""
    from dockyard.tasks.cache.single_flight import SingleFlight

    spec = uploaded_spec(settings, context)
    located_at_store: list[Any] = []
    real_store = SingleFlight.store_as_owner

    def store_as_owner(self: SingleFlight, *args: Any, **kwargs: Any) -> Any:
        located_at_store.extend(hosts.locate_images(fake_redis, settings, spec.references))
        return real_store(self, *args, **kwargs)

    monkeypatch.setattr(SingleFlight, "store_as_owner", store_as_owner)
    result = build(spec, fake_redis, settings, engine)
    assert located_at_store == [{"host": "h1", "image_id": result["image_id"]}]

def test_the_same_key_again_is_a_hit_and_gets_its_own_tags(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    first = build(uploaded_spec(settings, context), fake_redis, settings, engine)
    again = build(uploaded_spec(settings, context, tag="v2"), fake_redis, settings, engine)
    assert len(engine.builds) == 1
    assert (again["cache"], again["image_id"]) == ("hit", first["image_id"])
    assert f"{NAME}:v2" in engine.images.get(first["image_id"]).tags
    assert metrics.read(fake_redis, settings, "h1")["cache_hits_total"] == 1


def test_a_hit_answered_here_is_timed_from_the_tasks_start(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    build(uploaded_spec(settings, context), fake_redis, settings, engine)
    assert "hit_seconds_count" not in metrics.read(fake_redis, settings, "h1"), "a miss is no hit"
    build(uploaded_spec(settings, context, tag="v2"), fake_redis, settings, engine, started=time.monotonic() - 5)
    counted = metrics.read(fake_redis, settings, "h1")
    assert counted["hit_seconds_count"] == 1 and 5 <= counted["hit_seconds_sum"] < 10
    elsewhere = settings.model_copy(update={"host_id": "h2"})
    hosts.beat(fake_redis, settings, "h1", {})
    assert isinstance(build(uploaded_spec(elsewhere, context, tag="v3"), fake_redis, elsewhere, engine), Forward)
    assert "hit_seconds_count" not in metrics.read(fake_redis, settings, "h2"), "forwarded: answered elsewhere"


@pytest.mark.parametrize("source", ["built", "joined", "hit"])
def test_each_outcome_is_counted_and_timed_as_what_it_was(
    fake_redis: fakeredis.FakeRedis, settings: Settings, source: Any
) -> None:
    outcome = Outcome({"image_id": "sha256:x"}, source, Entry({"image_id": "sha256:x"}, "h1", 0.0))
    execute.record_build(fake_redis, settings, outcome, 2.0)
    expected = {
        "built": {"builds_total": 1, "cache_misses_total": 1, "build_seconds_count": 1, "build_seconds_sum": 2},
        "joined": {"joins_total": 1, "wait_seconds_count": 1, "wait_seconds_sum": 2},
        "hit": {"cache_hits_total": 1},
    }[source]
    counted = metrics.read(fake_redis, settings, "h1")
    assert {name: value for name, value in counted.items() if "_bucket:" not in name} == expected
    if source != "hit":
        histogram = "build_seconds" if source == "built" else "wait_seconds"
        assert counted[f"{histogram}_bucket:2.5"] == 1 and f"{histogram}_bucket:1.0" not in counted


def test_a_build_records_its_lineage_on_this_host_and_a_hit_does_not(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    lineage = placement.lineage_of_options(spec)
    build(spec, fake_redis, settings, engine)
    assert set(builders(fake_redis, settings, lineage)) == {"h1"}
    elsewhere = settings.model_copy(update={"host_id": "h2"})
    hosts.beat(fake_redis, settings, "h1", {})
    again = build(uploaded_spec(elsewhere, context, tag="v2"), fake_redis, elsewhere, engine)
    assert isinstance(again, Forward) and (again.host, again.source) == ("h1", "hit")
    assert set(builders(fake_redis, settings, lineage)) == {"h1"}, "a hit on h2 built nothing there"
    assert placement.held_lineages(fake_redis, settings, "h1") == [f"{NAME} (Dockerfile)"]


def test_a_local_entry_whose_image_is_gone_is_rebuilt(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    first = build(spec, fake_redis, settings, engine)
    engine.delete(first["image_id"])
    again = build(spec, fake_redis, settings, engine)
    assert again["cache"] == "built" and len(engine.builds) == 2
    assert again["image_id"] != first["image_id"]
    assert engine.images.get(again["image_id"])


def test_an_entry_on_another_live_host_is_forwarded(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    store_entry(build_cache(fake_redis, settings), spec.key, {"image_id": "sha256:on-h2"}, host="h2")
    hosts.beat(fake_redis, settings, "h2", {})
    assert build(spec, fake_redis, settings, engine) == Forward("h2", "sha256:on-h2", "hit", spec.key)
    assert engine.builds == []


def test_the_holder_takes_the_forwarded_key_only_if_its_entry_holds_the_image(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = uploaded_spec(settings, context)
    image_id = build(spec, fake_redis, settings, engine)["image_id"]
    resolved: list[str] = []

    def worker_cache_key(spec: BuildSpec, *_: Any) -> tuple[str, dict[str, str]]:
        resolved.append(spec.key)
        return spec.key, {}

    monkeypatch.setattr(execute, "worker_cache_key", worker_cache_key)
    tag = lambda key: execute_tag(spec, image_id, "hit", cache_key=key, here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]  # noqa: E731
    tag(spec.key)
    assert resolved == [], "its own entry holds the image: no base resolved again"
    tag("f" * 64)
    assert resolved == [spec.key], "a key that is not this host's entry for the image is not taken"


def test_an_entry_on_a_dead_host_is_rebuilt_here(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    store_entry(build_cache(fake_redis, settings), spec.key, {"image_id": "sha256:on-h2"}, host="h2")
    result = build(spec, fake_redis, settings, engine)
    assert (result["cache"], result["host"]) == ("built", "h1")
    assert build_cache(fake_redis, settings).peek(spec.key).host == "h1"  # type: ignore[union-attr]


def test_ignore_cache_builds_again(fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path) -> None:
    build(uploaded_spec(settings, context), fake_redis, settings, engine)
    result = build(uploaded_spec(settings, context, ignore_cache=True), fake_redis, settings, engine)
    assert result["cache"] == "built" and len(engine.builds) == 2


def test_a_denied_build_fails_with_the_hint_and_is_not_cached(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    engine.build_error = "pull access denied for private/base, repository does not exist"
    with pytest.raises(BuildError, match="run `docker login`"):
        build(spec, fake_redis, settings, engine)
    assert build_cache(fake_redis, settings).peek(spec.key) is None
    assert fake_redis.exists(f"unit:failed:{spec.key}")


def test_a_shared_path_context_is_built_in_place(
    fake_redis: fakeredis.FakeRedis, fake_store: fakeredis.FakeRedis, engine: FakeEngine, context: Path
) -> None:
    settings = make_settings(host_id="h1", context_transport="path", shared_context_root=str(context.parent))
    spec, packed = prepare_build({"image_name": NAME, "tag": "v1", "path": str(context)}, settings)
    packed.close()
    assert build(spec, fake_redis, settings, engine)["cache"] == "built"
    assert not fake_store.keys("unit:ctx:*") and not fake_redis.keys("unit:ctx:*")


def test_a_docker_py_build_that_meets_an_unavailable_registry_is_retried(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    engine.build_error = "Get https://registry-1.docker.io/v2/: received unexpected HTTP status: 503 Service Unavailable"
    engine.build_error_once = True
    try:
        result = build(uploaded_spec(settings, context), fake_redis, settings, engine)
    except TransientError:
        return  # Celery's autoretry_for retries it
    assert result["cache"] == "built"


# tags


def test_tag_on_the_holder_applies_the_tags(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    image_id = build(uploaded_spec(settings, context), fake_redis, settings, engine)["image_id"]
    spec = uploaded_spec(settings, context, tag="v3", additional_tags=["stable"])
    result = execute_tag(spec, image_id, "joined", here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert (result["cache"], result["image_id"]) == ("joined", image_id)  # type: ignore[index]
    assert {f"{NAME}:v3", f"{NAME}:stable"} <= set(engine.images.get(image_id).tags)
    assert hosts.locate_images(fake_redis, settings, spec.references) == [{"host": "h1", "image_id": image_id}] * 2


def test_tag_of_a_vanished_image_forgets_it_and_rebuilds(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    image_id = build(spec, fake_redis, settings, engine)["image_id"]
    engine.delete(image_id)
    result = execute_tag(spec, image_id, "hit", here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert result["cache"] == "built" and result["image_id"] != image_id  # type: ignore[index]
    assert hosts.locate_images(fake_redis, settings, spec.references) == [{"host": "h1", "image_id": result["image_id"]}]  # type: ignore[index]


def test_a_tag_naming_an_image_its_spec_does_not_build_builds_the_spec_and_owns_nothing_else(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path, tmp_path: Path
) -> None:
    theirs = build(uploaded_spec(settings, context), fake_redis, settings, engine)["image_id"]
    fake_redis.delete(owned_key(settings, theirs))  # another team's image: this team never had it
    other = tmp_path / "other"
    other.mkdir()
    (other / "Dockerfile").write_text("FROM scratch\nCOPY other.txt /\n")
    (other / "other.txt").write_text("other")
    spec = uploaded_spec(settings, other, tag="stolen")
    result = execute_tag(spec, theirs, "hit", here=Here(settings, fake_redis, engine, Output()))  # type: ignore[arg-type]
    assert result["cache"] == "built" and result["image_id"] != theirs  # type: ignore[index]
    assert f"{NAME}:stolen" not in engine.images.get(theirs).tags
    assert not fake_redis.exists(owned_key(settings, theirs)), "naming an image id is no right to it"


# pushes


@pytest.fixture(autouse=True)
def registry_in_memory(fake_registry: FakeRegistry) -> FakeRegistry:
    """Push hits are checked against the engine's fake registry, never the network."""
    return fake_registry


def local_image(
    connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, *refs: str, owned: bool = True
) -> str:
    """An image on this host tagged ``refs``; ``owned``: a request of the settings' team had it (as a
    build, join or hit records it), so the team may push it."""
    image_id = f"sha256:{len(engine.image_ids) + 100:064x}"
    engine.image_ids.add(image_id)
    for ref in refs:
        engine.refs[ref] = image_id
    if owned:
        note_owned(connection, settings, image_id)
    return image_id


def push(request: PushRequest, connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, credentials: Credentials | None = None) -> Any:
    return execute_push(request, credentials, here=Here(settings, connection, engine, Output()))  # type: ignore[arg-type]


def test_a_push_pushes_every_tag_once(fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> None:
    local_image(fake_redis, settings, engine, f"{NAME}:v1", f"{NAME}:latest")
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "additional_tags": ["latest"]})
    result = push(request, fake_redis, settings, engine)
    assert engine.pushes == [f"{NAME}:v1", f"{NAME}:latest"]
    assert (result["digest"], result["cache"], result["host"]) == ("sha256:digest-of-v1", "built", "h1")
    again = push(request, fake_redis, settings, engine)
    assert again["cache"] == "hit" and again["digest"] == "sha256:digest-of-v1"
    assert len(engine.pushes) == 2, "a repeated push is not pushed again"
    counted = metrics.read(fake_redis, settings, "h1")
    assert (counted["pushes_total"], counted["push_cache_hits_total"]) == (1, 1)


def test_a_push_without_a_tag_pushes_what_its_key_names(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine
) -> None:
    local_image(fake_redis, settings, engine, f"{NAME}:latest")
    local_image(fake_redis, settings, engine, f"{NAME}:v2")
    push(PushRequest.parse({"image_name": NAME}), fake_redis, settings, engine)
    assert engine.pushes == [f"{NAME}:latest"]


def test_more_additional_tags_are_another_push(fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> None:
    local_image(fake_redis, settings, engine, f"{NAME}:v1", f"{NAME}:latest", f"{NAME}:stable")
    push(PushRequest.parse({"image_name": NAME, "tag": "v1"}), fake_redis, settings, engine)
    result = push(PushRequest.parse({"image_name": NAME, "tag": "v1", "additional_tags": ["latest"]}), fake_redis, settings, engine)
    assert result["cache"] == "built" and f"{NAME}:latest" in engine.pushes
    result = push(PushRequest.parse({"image_name": NAME, "tag": "v1", "additional_tags": ["stable"]}), fake_redis, settings, engine)
    assert result["cache"] == "built" and f"{NAME}:stable" in engine.pushes


def test_a_retagged_image_is_pushed_again(fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> None:
    local_image(fake_redis, settings, engine, f"{NAME}:v1")
    request = PushRequest.parse({"image_name": NAME, "tag": "v1"})
    push(request, fake_redis, settings, engine)
    local_image(fake_redis, settings, engine, f"{NAME}:v1")  # v1 now names a new image
    assert push(request, fake_redis, settings, engine)["cache"] == "built"
    assert len(engine.pushes) == 2


def test_a_push_hit_whose_tag_moved_in_the_registry_pushes_again(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, fake_registry: FakeRegistry
) -> None:
    image_x = local_image(fake_redis, settings, engine)
    request = PushRequest.parse({"image_name": NAME, "tag": "live", "image_id": image_x})
    assert push(request, fake_redis, settings, engine)["cache"] == "built"
    assert push(request, fake_redis, settings, engine)["cache"] == "hit"
    fake_registry.served[f"{NAME}:live"] = "sha256:digest-of-y"  # someone pushed Y to live
    again = push(request, fake_redis, settings, engine)
    assert again["cache"] == "built" and fake_registry.served[f"{NAME}:live"] == again["digest"]
    assert len(engine.pushes) == 2


def test_a_push_by_image_id_pushes_that_image_whatever_its_tag_names_here(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine
) -> None:
    first = local_image(fake_redis, settings, engine, f"{NAME}:v1")
    local_image(fake_redis, settings, engine, f"{NAME}:v1")  # a second build took the tag on this host
    push(PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": first}), fake_redis, settings, engine)
    assert engine.refs[f"{NAME}:v1"] == first and engine.pushes == [f"{NAME}:v1"]


def test_a_push_by_image_id_of_a_vanished_image_fails_clearly(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine
) -> None:
    local_image(fake_redis, settings, engine, f"{NAME}:v1")  # an older image still carries the tag: never pushed instead
    gone = local_image(fake_redis, settings, engine)
    engine.delete(gone)
    hosts.record_image(fake_redis, settings, host_id="h2", image_id="sha256:" + "9" * 64, references=[f"{NAME}:v1"])
    hosts.beat(fake_redis, settings, "h2", {})
    with pytest.raises(PushError, match=f"Image {gone} .* is no longer on host h1 nor on any live host"):
        push(PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": gone}), fake_redis, settings, engine)
    assert engine.pushes == []


def test_a_push_by_image_id_held_elsewhere_is_forwarded(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine
) -> None:
    elsewhere = "sha256:" + "8" * 64
    hosts.record_image(fake_redis, settings, host_id="h2", image_id=elsewhere, references=[f"{NAME}:v1"])
    hosts.beat(fake_redis, settings, "h2", {})
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": elsewhere})
    assert push(request, fake_redis, settings, engine) == Forward("h2", elsewhere, "forwarded")


def test_a_push_of_an_image_held_elsewhere_is_forwarded(fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> None:
    request = PushRequest.parse({"image_name": NAME, "tag": "v1"})
    hosts.record_image(fake_redis, settings, host_id="h2", image_id="sha256:on-h2", references=[request.reference])
    with pytest.raises(PushError, match="or on any live host"):
        push(request, fake_redis, settings, engine)
    hosts.beat(fake_redis, settings, "h2", {})
    assert push(request, fake_redis, settings, engine) == Forward("h2", "sha256:on-h2", "forwarded")
    assert engine.pushes == []


def test_credentials_log_in_a_private_client_only(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = FakeEngine(share=engine)

    @contextlib.contextmanager
    def docker_client(_settings: Settings) -> Iterator[FakeEngine]:
        yield private

    monkeypatch.setattr(worker_push, "docker_client", docker_client)
    local_image(fake_redis, settings, engine, f"{NAME}:v1")
    credentials = Credentials.parse({"username": "ci", "password": "pw"})
    result = push(PushRequest.parse({"image_name": NAME, "tag": "v1"}), fake_redis, settings, engine, credentials)
    assert result["cache"] == "built"
    assert private.logins == [{"username": "ci", "password": "pw", "registry": "reg.io", "reauth": True}]
    assert engine.logins == [], "the worker's shared client is never logged in by a call"
    assert b"pw" not in b"".join(fake_redis.get(name) or b"" for name in fake_redis.keys("unit:team:default:push:*"))


def test_refused_credentials_are_an_auth_error(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    private = FakeEngine(share=engine)
    private.login_error = "unauthorized: incorrect username or password"
    monkeypatch.setattr(worker_push, "docker_client", lambda _settings: contextlib.nullcontext(private))
    local_image(fake_redis, settings, engine, f"{NAME}:v1")
    with pytest.raises(RegistryAuthError):
        push(PushRequest.parse({"image_name": NAME, "tag": "v1"}), fake_redis, settings, engine, Credentials.parse({"username": "ci", "password": "bad"}))
    assert engine.pushes == []


def test_an_unavailable_registry_is_transient_and_not_cached(fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> None:
    local_image(fake_redis, settings, engine, f"{NAME}:v1")
    engine.push_error = "received unexpected HTTP status: 503 Service Unavailable"
    request = PushRequest.parse({"image_name": NAME, "tag": "v1"})
    with pytest.raises(RegistryUnavailable):
        push(request, fake_redis, settings, engine)
    assert list(push_cache(fake_redis, settings).entries()) == []
    assert not fake_redis.keys("unit:failed:*"), "a transient failure is not announced"
    engine.push_error = None
    assert push(request, fake_redis, settings, engine)["cache"] == "built"


# pushes: only images the team had, each one audited


def test_a_push_of_an_image_the_team_never_had_is_refused(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine
) -> None:
    """An image id read from another team's result, or a tag on the host's engine, proves nothing."""
    theirs = local_image(fake_redis, settings.model_copy(update={"team": "team-b"}), engine, f"{NAME}:v1")
    for request in (PushRequest.parse({"image_name": NAME, "tag": "v1"}), PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": theirs})):
        with pytest.raises(NotPermitted, match=f"Team default has no build of image {theirs} \\({NAME}:v1\\)"):
            push(request, fake_redis, settings, engine)
    assert engine.pushes == [] and audit.read_audit(fake_redis, settings) == []
    note_owned(fake_redis, settings, theirs)  # team default built the same content: the same image
    assert push(PushRequest.parse({"image_name": NAME, "tag": "v1"}), fake_redis, settings, engine)["cache"] == "built"


def test_a_build_gives_the_team_the_image_it_answered(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, context: Path
) -> None:
    spec = uploaded_spec(settings, context)
    built = build(spec, fake_redis, settings, engine)
    assert fake_redis.exists(f"unit:team:default:owns:{built['image_id']}")
    other = settings.model_copy(update={"team": "team-b"})
    with pytest.raises(NotPermitted, match="Team team-b has no build of image"):
        push(PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": built["image_id"]}), fake_redis, other, engine)
    assert build(spec, fake_redis, other, engine)["cache"] == "hit", "the build cache is the farm's"
    assert fake_redis.exists(f"unit:team:team-b:owns:{built['image_id']}"), "a hit gives the team the image too"
    pushed = push(PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": built["image_id"]}), fake_redis, other, engine)
    assert pushed["cache"] == "built"


def test_every_push_answered_here_is_audited(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(worker_push, "docker_client", lambda _settings: contextlib.nullcontext(FakeEngine(share=engine)))
    local_image(fake_redis, settings, engine, f"{NAME}:v1", f"{NAME}:latest")
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "additional_tags": ["latest"]})
    push(request, fake_redis, settings, engine)
    push(request, fake_redis, settings, engine)
    push(request, fake_redis, settings, engine, Credentials.parse({"username": "ci", "password": "pw"}))
    entries = audit.read_audit(fake_redis, settings)
    assert [(entry.team, entry.repository, entry.tags, entry.host, entry.login, entry.cache) for entry in entries] == [
        ("default", NAME, ["v1", "latest"], "h1", "farm", "built"),
        ("default", NAME, ["v1", "latest"], "h1", "farm", "hit"),
        ("default", NAME, ["v1", "latest"], "h1", "team", "hit"),
    ]
    assert {entry.digest for entry in entries} == {"sha256:digest-of-v1"}
    assert b"pw" not in b"".join(value for _id, fields in fake_redis.xrange("unit:audit:pushes") for value in fields.values())


def test_a_forwarded_push_is_audited_by_the_holder_not_here(
    fake_redis: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine
) -> None:
    hosts.record_image(fake_redis, settings, host_id="h2", image_id="sha256:on-h2", references=[f"{NAME}:v1"])
    hosts.beat(fake_redis, settings, "h2", {})
    assert isinstance(push(PushRequest.parse({"image_name": NAME, "tag": "v1"}), fake_redis, settings, engine), Forward)
    assert audit.read_audit(fake_redis, settings) == []
