"""dockyard.tasks.client: the caller's fast path from Redis, and the signatures it sends (credentials sealed).

No worker and no broker: ``caller_app`` fails if anything tries to send, and
Redis is fakeredis.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from celery import Celery
from pydantic import SecretStr

from dockyard.config.settings import Settings
from dockyard.tasks.cache import single_flight as cache_module
from dockyard.tasks import client
from dockyard.tasks.context import scan as context_scan
from dockyard.tasks.farm import hosts
from dockyard.tasks import keyspace
from dockyard.tasks.cache.single_flight import build_cache, push_cache
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.errors import InvalidInput, PushError
from dockyard.tasks.cache.lease import Lease
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK
from dockyard.tasks.request.sealing import credentials_binding, generate_keypair, unseal
from dockyard.tasks.request.spec import BuildSpec, PushRequest
from dockyard.tasks.cache.notify import Waiter
from tests.unit.fakes import FakeRegistry
from tests.unit.support import make_settings
from tests.probes import store_entry

IMAGE = "sha256:" + "1" * 64
PASSWORD = "pa55-w0rd-unit"
PUBLIC_KEY, PRIVATE_KEY = generate_keypair()  # the farm's; the caller holds only the public one
CREDENTIALS = {"username": "ci", "password": PASSWORD, "registry_url": "reg.io"}


class SentTask(AssertionError):
    """Something tried to reach the broker."""


@pytest.fixture
def settings() -> Settings:
    return make_settings(seal_public_key=PUBLIC_KEY, wait_wake_s=0.01)


@pytest.fixture(autouse=True)
def no_farm(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, settings: Settings) -> None:
    """Redis is fakeredis, the settings are the test's, and the broker is out of reach."""

    def caller_app() -> Celery:
        raise SentTask("a task was sent; the cache should have answered")

    monkeypatch.setattr(client, "caller_app", caller_app)
    monkeypatch.setattr(client, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(keyspace, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(client, "get_settings", lambda: settings)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    return tmp_path


@pytest.fixture
def app() -> Celery:
    return Celery("unit-caller")


def spec_for(settings: Settings, context: Path, **params: Any) -> BuildSpec:
    spec, packed = prepare_build({"image_name": "reg.io/team/app", "tag": "v1", "path": str(context), **params}, settings)
    packed.close()
    return spec


def built_on(
    connection: fakeredis.FakeRedis, settings: Settings, spec: BuildSpec, host: str = "h2", *, alive: bool = True
) -> None:
    """The farm built ``spec`` on ``host``: cache entry, every reference located there, host heartbeating."""
    store_entry(build_cache(connection, settings), spec.key, {"image_id": IMAGE}, host=host)
    hosts.record_image(connection, settings, host_id=host, image_id=IMAGE, references=spec.references)
    if alive:
        hosts.beat(connection, settings, host, {})


def on_poll(monkeypatch: pytest.MonkeyPatch, *steps: Callable[[], None]) -> None:
    pending = list(steps)

    def wait(self: Waiter, block_s: float, *, also: object = None) -> dict[str, list[tuple[object, object]]]:
        if pending:
            pending.pop(0)()
        return {}

    monkeypatch.setattr(Waiter, "wait", wait)


# the build fast path


def test_no_entry_no_answer(fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path) -> None:
    assert client.cached_build(spec_for(settings, context), settings) is None


def test_a_cached_build_on_a_live_host_answers(fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path) -> None:
    spec = spec_for(settings, context, additional_tags=["latest"])
    built_on(fake_redis, settings, spec)
    assert client.cached_build(spec, settings) == {
        "image_name": "reg.io/team/app", "tag": "v1", "image": "reg.io/team/app:v1", "image_id": IMAGE,
        "additional_tags": ["latest"], "host": "h2", "cache": "hit",
    }


def test_a_cached_build_on_a_dead_host_does_not_answer(
    fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path
) -> None:
    spec = spec_for(settings, context)
    built_on(fake_redis, settings, spec, alive=False)
    assert client.cached_entry(spec, spec.key, settings) is None


def test_a_tag_not_yet_on_the_image_needs_a_worker(fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path) -> None:
    built_on(fake_redis, settings, spec_for(settings, context))
    retagged = spec_for(settings, context, additional_tags=["new"])
    assert client.cached_entry(retagged, retagged.key, settings) is None, "the worker must apply the new tag first"


def test_a_tag_that_now_names_another_image_needs_a_worker(
    fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path
) -> None:
    spec = spec_for(settings, context)
    built_on(fake_redis, settings, spec)
    hosts.record_image(fake_redis, settings, host_id="h2", image_id="sha256:other", references=spec.references)
    assert client.cached_entry(spec, spec.key, settings) is None


def test_build_answers_from_the_cache_without_sending(
    fake_redis: fakeredis.FakeRedis, fake_store: fakeredis.FakeRedis, settings: Settings, context: Path
) -> None:
    built_on(fake_redis, settings, spec_for(settings, context))
    result = client.build("reg.io/team/app", tag="v1", path=str(context))
    assert (result["image_id"], result["host"], result["cache"]) == (IMAGE, "h2", "hit")
    assert not fake_store.keys("*ctx:*") and not fake_redis.keys("*ctx:*"), "a hit uploads no context"


def test_a_hit_packs_no_context(
    fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fast path costs a stat walk: the tar is packed only for an upload."""
    built_on(fake_redis, settings, spec_for(settings, context))

    def no_pack(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("the context was packed")

    monkeypatch.setattr(context_scan, "pack_context", no_pack)
    assert client.build("reg.io/team/app", tag="v1", path=str(context))["cache"] == "hit"
    (context / "new.txt").write_text("a change: now a miss")
    with pytest.raises(AssertionError, match="the context was packed"):
        client.build("reg.io/team/app", tag="v1", path=str(context))


def test_build_with_ignore_cache_sends_a_task(fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path) -> None:
    built_on(fake_redis, settings, spec_for(settings, context))
    with pytest.raises(SentTask):
        client.build("reg.io/team/app", tag="v1", path=str(context), ignore_cache=True)


def test_a_miss_uploads_the_context_then_sends(
    fake_redis: fakeredis.FakeRedis, fake_store: fakeredis.FakeRedis, settings: Settings, context: Path
) -> None:
    spec = spec_for(settings, context)
    with pytest.raises(SentTask):
        client.build("reg.io/team/app", tag="v1", path=str(context))
    assert fake_store.exists(f"unit:team:default:ctx:{spec.context_digest}:meta")
    assert not fake_redis.keys("*ctx:*"), "nothing of the context in the broker's Redis"


def test_build_joins_the_same_key_running_elsewhere(
    fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_for(settings, context)
    owner = Lease(fake_redis, f"unit:lease:{spec.key}", lease_s=60)
    assert owner.acquire()

    def finish() -> None:
        built_on(fake_redis, settings, spec, host="h3")
        owner.release()

    on_poll(monkeypatch, lambda: None, finish)
    result = client.build("reg.io/team/app", tag="v1", path=str(context))
    assert (result["host"], result["cache"]) == ("h3", "joined")


def test_wait_for_running_build_without_one_is_none(settings: Settings, context: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    on_poll(monkeypatch, lambda: pytest.fail("nothing runs: no wait"))
    assert client.wait_for_running_build(spec_for(settings, context), settings) is None


def test_wait_for_running_build_gives_none_when_it_fails(
    fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = spec_for(settings, context)
    owner = Lease(fake_redis, f"unit:lease:{spec.key}", lease_s=60)
    owner.acquire()
    on_poll(monkeypatch, owner.release)
    assert client.wait_for_running_build(spec, settings) is None


def test_threads_joining_one_key_share_one_wait(
    fake_redis: fakeredis.FakeRedis, settings: Settings, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Many threads of one process waiting on one build hold one Redis reader, not one each."""
    import threading
    from concurrent.futures import Future, ThreadPoolExecutor

    from dockyard.tasks.cache import coalesce

    wait_s = 30.0  # deadlines, not delays
    spec = spec_for(settings, context)
    built_on(fake_redis, settings, spec, host="h3")
    joins: list[str] = []
    release = threading.Event()
    real_join = cache_module.SingleFlight.join
    sharing = [0]  # threads blocked on the first one's wait (its Future in dockyard.tasks.cache.coalesce)
    changed = threading.Condition()

    class Watched(Future):  # type: ignore[type-arg]
        def result(self, timeout: float | None = None) -> Any:
            with changed:
                sharing[0] += 1
                changed.notify_all()
            return super().result(timeout)

    def counted_join(self: cache_module.SingleFlight, cache_key: str, *args: Any, **kwargs: Any) -> Any:
        joins.append(cache_key)
        release.wait(wait_s)
        return real_join(self, cache_key, *args, **kwargs)

    monkeypatch.setattr(coalesce, "Future", Watched)
    monkeypatch.setattr(cache_module.SingleFlight, "join", counted_join)
    with ThreadPoolExecutor(20) as pool:
        answers = [pool.submit(client.wait_for_running_build, spec, settings, spec.key) for _ in range(20)]
        try:
            with changed:
                assert changed.wait_for(lambda: sharing[0] >= 19, wait_s), (
                    f"19 threads share the first one's wait, not {sharing[0]} (joins: {len(joins)})"
                )
        finally:
            release.set()
        results = [each.result(wait_s) for each in answers]
    assert len(joins) == 1
    assert all(result is not None and result["host"] == "h3" for result in results)


# the push fast path


def pushed(
    connection: fakeredis.FakeRedis, settings: Settings, request: PushRequest, tags: list[str], served: FakeRegistry
) -> PushRequest:
    """``request``'s image was pushed under ``tags`` before, from h2, and the registry serves it; the pinned request."""
    hosts.record_image(connection, settings, host_id="h2", image_id=IMAGE, references=[request.reference])
    key = push_key(image_id=IMAGE, repository=request.image_name, tags=tags, registry="reg.io")
    store_entry(push_cache(connection, settings), key, {"digest": "sha256:pushed"}, host="h2")
    served.served.update({f"{request.image_name}:{tag}": "sha256:pushed" for tag in tags})
    return client.pinned_push(request, settings)


def test_a_repeated_push_is_a_hit_after_one_head_per_tag(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fake_registry: FakeRegistry
) -> None:
    request = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1", "additional_tags": ["latest"]})
    pinned = pushed(fake_redis, settings, request, ["v1", "latest"], fake_registry)
    assert pinned.image_id == IMAGE, "the tag is resolved to its image id through the index"
    assert client.cached_push(pinned, settings) == {
        "image_name": "reg.io/team/app", "tag": "v1", "image": "reg.io/team/app:v1", "additional_tags": ["latest"],
        "digest": "sha256:pushed", "host": "h2", "cache": "hit",
    }
    assert fake_registry.heads == ["reg.io/team/app:v1", "reg.io/team/app:latest"]


def test_a_tag_moved_in_the_registry_is_not_a_hit(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fake_registry: FakeRegistry
) -> None:
    request = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "live"})
    pinned = pushed(fake_redis, settings, request, ["live"], fake_registry)
    fake_registry.served["reg.io/team/app:live"] = "sha256:another-image"
    assert client.cached_push(pinned, settings) is None


def test_a_caller_who_cannot_read_the_repository_gets_no_hit(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fake_registry: FakeRegistry
) -> None:
    request = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1", "credentials": CREDENTIALS})
    pinned = pushed(fake_redis, settings, request, ["v1"], fake_registry)
    fake_registry.readers = {"someone-else"}
    assert client.cached_push(pinned, settings) is None
    fake_registry.readers = {CREDENTIALS["username"]}
    assert client.cached_push(pinned, settings) is not None


def test_a_push_with_other_additional_tags_is_not_a_hit(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fake_registry: FakeRegistry
) -> None:
    before = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1"})
    pushed(fake_redis, settings, before, ["v1"], fake_registry)
    more = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1", "additional_tags": ["latest"]})
    assert client.cached_push(client.pinned_push(more, settings), settings) is None


def test_a_push_of_an_image_no_host_holds_fails_on_the_caller(settings: Settings) -> None:
    with pytest.raises(PushError, match="No image reg.io/team/app:v9 on any farm host"):
        client.push("reg.io/team/app", tag="v9")


def test_push_answers_from_the_cache_without_sending(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fake_registry: FakeRegistry
) -> None:
    request = PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1"})
    pushed(fake_redis, settings, request, ["v1"], fake_registry)
    result = client.push("reg.io/team/app", tag="v1", credentials=CREDENTIALS)
    assert result["cache"] == "hit" and result["digest"] == "sha256:pushed"
    with pytest.raises(SentTask):
        client.push("reg.io/team/app", tag="v1", ignore_cache=True)


def test_a_push_signature_names_the_image_its_tag_names_now(
    fake_redis: fakeredis.FakeRedis, settings: Settings, fake_registry: FakeRegistry, app: Celery
) -> None:
    assert "image_id" not in client.push_signature("reg.io/team/app", tag="v1", app=app).kwargs, "not on the farm yet"
    pushed(fake_redis, settings, PushRequest.parse({"image_name": "reg.io/team/app", "tag": "v1"}), ["v1"], fake_registry)
    assert client.push_signature("reg.io/team/app", tag="v1", app=app).kwargs["image_id"] == IMAGE


# signatures: credentials sealed before they leave


def assert_nothing_clear(signature: Any) -> None:
    text = json.dumps(dict(signature), default=str)
    assert PASSWORD not in text and "username" not in text


def test_push_signature_seals_the_credentials(settings: Settings, app: Celery) -> None:
    signature = client.push_signature("reg.io/team/app", tag="v1", credentials=CREDENTIALS, app=app)
    assert signature.task == PUSH_TASK
    assert signature.kwargs["credentials"]["repository"] == "reg.io/team/app", "sealed for this push's repository"
    assert set(signature.kwargs["credentials"]) == {"sealed", "repository"}
    assert_nothing_clear(signature)
    assert signature.options["kwargsrepr"].count("***") == 1
    binding = credentials_binding("default", "reg.io/team/app")
    assert unseal(signature.kwargs["credentials"], SecretStr(PRIVATE_KEY), bound_to=binding) == {**CREDENTIALS, "reauth": True}
    for other in (credentials_binding("team-b", "reg.io/team/app"), credentials_binding("default", "reg.io/team/other"),
                  credentials_binding("default", None)):
        with pytest.raises(InvalidInput, match="could not be opened"):
            unseal(signature.kwargs["credentials"], SecretStr(PRIVATE_KEY), bound_to=other)
    assert PushRequest.parse(signature.kwargs).image_name == "reg.io/team/app", "the worker's validator takes it"


def test_a_chained_push_signature_leaves_name_and_tags_to_the_build(settings: Settings, app: Celery) -> None:
    signature = client.push_signature(credentials=CREDENTIALS, app=app)
    assert "image_name" not in signature.kwargs and "additional_tags" not in signature.kwargs
    assert "tag" not in signature.kwargs
    assert_nothing_clear(signature)
    assert set(signature.kwargs["credentials"]) == {"sealed"}, "a chain's repository is the build's: none named"
    opened = unseal(signature.kwargs["credentials"], SecretStr(PRIVATE_KEY), bound_to=credentials_binding("default", None))
    assert opened["password"] == PASSWORD


def test_credentials_without_the_farms_key_are_refused(monkeypatch: pytest.MonkeyPatch, app: Celery) -> None:
    monkeypatch.setattr(client, "get_settings", lambda: make_settings())
    with pytest.raises(InvalidInput, match="DOCKYARD_SEAL_PUBLIC_KEY"):
        client.push_signature("reg.io/team/app", credentials=CREDENTIALS, app=app)


def test_build_and_push_is_a_chain_with_sealed_credentials(
    fake_redis: fakeredis.FakeRedis, fake_store: fakeredis.FakeRedis, settings: Settings, context: Path, app: Celery
) -> None:
    workflow = client.build_and_push("reg.io/team/app", credentials=CREDENTIALS, app=app, tag="v1", path=str(context))
    build, push = workflow.tasks
    assert build.task == BUILD_TASK and push.task == PUSH_TASK
    spec = BuildSpec.parse(build.kwargs["spec"])
    assert fake_store.exists(f"unit:team:default:ctx:{spec.context_digest}:meta"), "the context is uploaded for the worker"
    assert not fake_redis.keys("*ctx:*"), "nothing of the context in the broker's Redis"
    assert set(push.kwargs["credentials"]) == {"sealed"}
    assert_nothing_clear(build)
    assert_nothing_clear(push)


def test_build_signature_sends_a_spec_the_worker_accepts(settings: Settings, context: Path, app: Celery) -> None:
    signature = client.build_signature("reg.io/team/app", app=app, tag="v1", path=str(context))
    assert list(signature.kwargs) == ["spec"]
    assert BuildSpec.parse(json.loads(json.dumps(signature.kwargs["spec"]))) == spec_for(settings, context)


# the caller is told when the host running its build stops answering


class Meta:
    """An AsyncResult whose backend answers ``get_task_meta`` with a fixed state."""

    def __init__(self, status: str, info: dict[str, Any]) -> None:
        self.id = "t-1"
        self.backend = self
        self.meta = {"status": status, "result": info}

    def get_task_meta(self, task_id: str) -> dict[str, Any]:
        return self.meta


def test_a_caller_is_told_once_when_the_host_running_its_build_stops_answering(
    fake_redis: fakeredis.FakeRedis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(client.time, "monotonic", lambda: clock[0])
    watch = client.RunningHost(Meta("STARTED", {"hostname": "h9@box", "pid": 1}), settings)  # type: ignore[arg-type]
    hosts.beat(fake_redis, settings, "h9", {})
    clock[0] += 1.5
    assert watch.gone() is None, "alive"
    fake_redis.delete(f"{settings.key_prefix}hosts:h9")
    assert watch.gone() is None, "checked at most once a second"
    clock[0] += 1.5
    assert watch.gone() == "dockyard: host h9 running this build stopped answering; a live host takes its work over\n"
    clock[0] += 1.5
    assert watch.gone() is None, "said once"


def test_a_queued_task_names_no_host(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(client.time, "monotonic", lambda: 1e9)
    assert client.RunningHost(Meta("PENDING", {}), settings).gone() is None  # type: ignore[arg-type]


def test_a_host_seen_running_the_task_is_remembered_after_another_took_it(
    fake_redis: fakeredis.FakeRedis, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    monkeypatch.setattr(client.time, "monotonic", lambda: clock[0])
    result = Meta("PROGRESS", {"host": "h9", "lines": 3})
    watch = client.RunningHost(result, settings)  # type: ignore[arg-type]
    hosts.beat(fake_redis, settings, "h9", {})
    hosts.beat(fake_redis, settings, "h8", {})
    clock[0] += 1.5
    assert watch.gone() is None
    result.meta = {"status": "STARTED", "result": {"hostname": "h8@box"}}  # its message was restored to h8
    fake_redis.delete(f"{settings.key_prefix}hosts:h9")
    clock[0] += 1.5
    told = watch.gone()
    assert told is not None and "host h9 " in told
