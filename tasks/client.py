"""The caller's side: signatures and chains sent by task name, and calls that wait.

``build`` and ``push`` answer straight from Redis when the result is already
cached (the fast path, no worker round trip); otherwise they send the task
and wait for it. Arguments are validated here with the same models the
worker validates the message with (``dockyard.tasks.request.spec``). The Celery app is
``dockyard.tasks.celery_app.caller_app``: a caller loads no worker or engine code
(``tests/static/test_imports.py`` holds it to that). ``cancel`` asks the farm to
cancel a build of the caller's team (``dockyard.tasks.teams.cancel``); a call that
waits for a cancelled task raises ``Cancelled``.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from celery import Celery
from celery.canvas import Signature, chain
from celery.exceptions import TimeoutError as TaskTimeout
from celery.result import AsyncResult

from dockyard.tasks.celery_app import caller_app
from dockyard.config.settings import Settings, get_settings
from dockyard.tasks.registry import base_images
from dockyard.tasks.farm import hosts
from dockyard.tasks.farm import image_use
from dockyard.tasks import keyspace
from dockyard.tasks.registry import manifests as registry
from dockyard.tasks.registry.login import pull_login
from dockyard.tasks.routing.broker_watch import BrokerWatch
from dockyard.tasks.cache.single_flight import Entry, build_cache, push_cache
from dockyard.tasks.request.cache_key import push_key
from dockyard.tasks.cache.coalesce import Coalescer
from dockyard.tasks.context.store import upload_context
from dockyard.tasks.context.pack import PackedContext
from dockyard.tasks.errors import ContextMissing, JoinTimeout, PushError
from dockyard.tasks.teams import cancel as cancel_requests
from dockyard.tasks.keyspace import redis_for
from dockyard.tasks.request.masking import masked_repr
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.cache.notify import Waiter
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.cache.live_output import StreamReader
from dockyard.tasks.output import OutputSink
from dockyard.tasks.request.arguments import push_request
from dockyard.tasks.request.results import FarmBuildResult, FarmPushResult, farm_build_result, farm_push_result
from dockyard.tasks.task_names import BUILD_TASK, PUSH_TASK
from dockyard.tasks.request.sealing import credentials_binding, seal
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest

CONTEXT_RESENDS = 2  # a build whose context left the store is uploaded and sent again this many times
RESULT_CATCH_UP_S = 0.5  # after a key's wake-up, how long a caller waits for its task's result to land
NO_KEY_POLL_S = 0.5  # a caller with no cache key to wake on (ignore_cache) reads its task's state this often

logger = logging.getLogger("dockyard.client")
_joins: Coalescer[Entry | None] = Coalescer()  # see wait_for_running_build


def prepare_and_upload(image_name: str, params: Mapping[str, Any], settings: Settings) -> BuildSpec:
    """Pack the context, compute the key and put the context in the store if it is not there."""
    spec, packed = prepare_build({"image_name": image_name, **params}, settings)
    try:
        if spec.context_path is None:
            upload_context(keyspace.context_store_for(settings), settings, packed)
    finally:
        packed.close()
    return spec


def _spec_signature(spec: BuildSpec, app: Celery | None) -> Signature:
    kwargs = {"spec": spec.model_dump()}
    return (app or caller_app()).signature(BUILD_TASK, kwargs=kwargs, kwargsrepr=masked_repr(kwargs))


def build_signature(image_name: str, *, app: Celery | None = None, **params: Any) -> Signature:
    """A build signature with prefect-docker's build arguments; the context is uploaded now."""
    return _spec_signature(prepare_and_upload(image_name, params, get_settings()), app)


def _sealed(request: PushRequest, settings: Settings, *, repository: str | None) -> dict[str, Any]:
    """The push message's arguments: credentials sealed with the farm's key before they leave, bound
    to the caller's team and to ``repository`` (None: any repository of the team's, a chain's push)."""
    kwargs = request.model_dump(exclude_none=True)
    if isinstance(request.credentials, Credentials):
        kwargs["credentials"] = seal(
            request.credentials.model_dump(exclude_none=True), settings.seal_public_key, ttl_s=settings.seal_ttl_s,
            bound_to=credentials_binding(settings.team, repository),
        )
        if repository is not None:
            kwargs["credentials"]["repository"] = repository
    return kwargs


def push_signature(
    image_name: str | None = None,
    *,
    credentials: Mapping[str, Any] | None = None,
    app: Celery | None = None,
    **params: Any,
) -> Signature:
    """A push signature; without ``image_name`` it takes the name and image from the build result before it.

    With ``image_name``, the image its tag names on the farm now is the one pushed.
    """
    settings = get_settings()
    if image_name is None:  # in a chain: the build result fills in name and tags on the worker
        placeholder = push_request("placeholder", settings=settings, credentials=credentials, **params)
        kwargs = _sealed(placeholder, settings, repository=None)
        del kwargs["image_name"]
        if not params.get("additional_tags"):
            kwargs.pop("additional_tags", None)
    else:
        request = push_request(image_name, settings=settings, credentials=credentials, **params)
        with contextlib.suppress(PushError):  # not on the farm yet: the worker takes what the tag names then
            request = pinned_push(request, settings)
        kwargs = _sealed(request, settings, repository=request.image_name)
    return (app or caller_app()).signature(PUSH_TASK, kwargs=kwargs, kwargsrepr=masked_repr(kwargs))


def build_and_push(
    image_name: str,
    *,
    credentials: Mapping[str, Any] | None = None,
    app: Celery | None = None,
    **build_params: Any,
) -> Signature:
    """``build | push``: push receives build's result and runs on the host that holds the image."""
    return chain(
        build_signature(image_name, app=app, **build_params),
        push_signature(credentials=credentials, app=app),
    )


def _servable(
    spec: BuildSpec, entry: Entry, locations: list[dict[str, Any] | None], settings: Settings, *, note_hit: bool = False
) -> bool:
    """The entry's image carries every tag of ``spec`` on a live host (so no worker is needed).

    ``note_hit``: the answer is a hit; its last use goes to the host's disk budget in the same
    round trip as the heartbeat check (best effort: a caller without that right still answers).
    """
    wanted = {"host": entry.host, "image_id": entry.value["image_id"]}
    if not all(location == wanted for location in locations):
        return False
    if not note_hit:
        return hosts.is_alive(redis_for(settings), settings, entry.host)
    pipe = redis_for(settings).pipeline(transaction=False)
    pipe.exists(hosts.host_key(settings, entry.host))
    image_use.note_hit(pipe, settings, entry.host, entry.value["image_id"])
    alive, _noted = pipe.execute(raise_on_error=False)
    if isinstance(alive, Exception):
        raise alive
    return bool(alive)


def caller_cache_key(spec: BuildSpec, settings: Settings) -> str | None:
    """The key the farm caches ``spec`` under (bases resolved now, one HEAD each); None if a base cannot be
    resolved from here, and then only a worker can answer."""
    digests = base_images.resolve(spec, settings)
    return None if digests is None else base_images.cache_key(spec, digests)


def cached_entry(spec: BuildSpec, cache_key: str | None, settings: Settings) -> Entry | None:
    """The fast path: the entry of ``cache_key``, if its image and all the spec's tags are on a live host.

    The entry and the tags' locations are read in one round trip, the host's heartbeat in a second.
    """
    if cache_key is None:
        return None
    cache = build_cache(redis_for(settings), settings)
    raw_entry, *raw_locations = redis_for(settings).mget(
        [cache.entry_key(cache_key), *hosts.location_keys(settings, spec.references)]
    )
    if not raw_entry:
        return None
    entry = Entry.from_json(raw_entry)
    return entry if _servable(spec, entry, hosts.parse_locations(raw_locations), settings, note_hit=True) else None


def cached_build(spec: BuildSpec, settings: Settings) -> FarmBuildResult | None:
    """The build's result from the cache, without a worker, or None."""
    entry = cached_entry(spec, caller_cache_key(spec, settings), settings)
    return _answer(spec, entry, "hit") if entry is not None else None


def _answer(spec: BuildSpec, entry: Entry, cache: Any) -> FarmBuildResult:
    return farm_build_result(spec, entry.value["image_id"], host=entry.host, cache=cache)


def wait_for_running_build(
    spec: BuildSpec,
    settings: Settings,
    cache_key: str | None = None,
    *,
    reader: StreamReader | None = None,
    on_output: OutputSink | None = None,
) -> FarmBuildResult | None:
    """Join a build of the same key already running on the farm; None if none runs or it gave nothing.

    With ``reader`` and ``on_output``, the running build's output lines go to ``on_output`` while it runs.
    """
    cache_key = cache_key or caller_cache_key(spec, settings)
    if cache_key is None:
        return None
    connection = redis_for(settings)
    output = (reader, on_output) if reader is not None and on_output is not None else None

    def join() -> Entry | None:
        return build_cache(connection, settings).join(
            cache_key,
            accept=lambda found: _servable(spec, found, hosts.locate_images(connection, settings, spec.references), settings),
            output=output,
        )

    # threads of this process joining the same key for the same tags share one wait (one Redis reader, not one each)
    entry = join() if output is not None else _joins.run((settings.key_prefix, cache_key, tuple(spec.references)), join)
    return _answer(spec, entry, "joined") if entry is not None else None


def cancel(task: str | AsyncResult) -> str:
    """Cancel a build (or any task) of the caller's team: its task id, or its ``AsyncResult``; the id.

    The request lands in the team's own namespace; a worker reads it there under the team of the
    task's queue, so only the task's own team can cancel it. A queued build answers ``Cancelled``
    without building; a running one is stopped on the engine, unless other calls wait for the same
    build: then it goes on for them and only the cancelled call raises ``Cancelled``.
    """
    task_id = task.id if isinstance(task, AsyncResult) else task
    settings = get_settings()
    cancel_requests.request_cancel(redis_for(settings), settings, task_id)
    return task_id


def build(
    image_name: str,
    *,
    app: Celery | None = None,
    timeout_s: float | None = None,
    on_output: OutputSink | None = None,
    on_sent: Callable[[str], None] | None = None,
    **params: Any,
) -> FarmBuildResult:
    """Build on the farm and wait: from the cache when possible, else through a worker.

    ``on_output`` receives the build's output lines while it runs, on whichever host.
    ``on_sent`` receives the task id when a build task is sent (what ``cancel`` takes).
    """
    settings = get_settings()
    spec, packed = prepare_build({"image_name": image_name, **params}, settings)
    reader = StreamReader(redis_for(settings), settings, spec.key) if on_output else None
    cache_key = None if spec.ignore_cache else caller_cache_key(spec, settings)
    try:
        if cache_key is not None:
            if (entry := cached_entry(spec, cache_key, settings)) is not None:
                return _answer(spec, entry, "hit")
            if (joined := wait_for_running_build(spec, settings, cache_key, reader=reader, on_output=on_output)) is not None:
                return joined
        return send_build(
            spec, packed, settings, app=app, timeout_s=timeout_s or settings.task_time_limit_s * 2,
            cache_key=cache_key, reader=reader, on_output=on_output, on_sent=on_sent,
        )
    finally:
        packed.close()


def send_build(
    spec: BuildSpec,
    packed: PackedContext,
    settings: Settings,
    *,
    app: Celery | None,
    timeout_s: float,
    cache_key: str | None,
    reader: StreamReader | None,
    on_output: OutputSink | None,
    on_sent: Callable[[str], None] | None = None,
) -> FarmBuildResult:
    """Upload the context (unless the store holds it), send the build and wait for it.

    A context that left the store before a worker read it (evicted, expired,
    found corrupt) fails the task with ``ContextMissing``: it is uploaded and
    the build sent again, ``CONTEXT_RESENDS`` times at most, then the error is raised.
    """
    attempt = 0
    while True:
        try:
            if spec.context_path is None:
                upload_context(keyspace.context_store_for(settings), settings, packed)
            signature = _spec_signature(spec, app)
            sent = signature.apply_async()
            if on_sent is not None:
                on_sent(sent.id)
            return await_build(
                sent, spec, settings, timeout_s=timeout_s, cache_key=cache_key, reader=reader,
                on_output=on_output, resend=lambda: signature.clone().apply_async(),
            )
        except ContextMissing as exc:
            if spec.context_path is not None or attempt >= CONTEXT_RESENDS:
                raise
            attempt += 1
            if on_output is not None:
                on_output(f"dockyard: {exc}; uploading it again and resending the build ({attempt}/{CONTEXT_RESENDS})\n")


def await_build(
    result: AsyncResult,
    spec: BuildSpec,
    settings: Settings,
    *,
    timeout_s: float,
    cache_key: str | None = None,
    reader: StreamReader | None = None,
    on_output: OutputSink | None = None,
    resend: Callable[[], AsyncResult] | None = None,
) -> FarmBuildResult:
    """The task's result, or sooner the same key's result stored by another caller's build
    (when ``cache_key`` is known: without it, only the task answers).

    Identical requests sent at the same moment each send a task; the first
    one stored answers them all, and their own tasks end as cheap hits.
    ``resend`` sends a copy of the task when the broker fails over before the
    task answers (see ``dockyard.tasks.routing.broker_watch``); the first of the copies to answer does.
    Once the caller's team asked to cancel the task (``cancel``), this raises ``Cancelled`` at its next
    wake-up, whatever the build does for others.
    """
    deadline = time.monotonic() + timeout_s
    sent_at = time.time()
    watch = RunningHost(result, settings)
    sent = Copies(result, settings, resend)
    waiter = Waiter(redis_for(settings), settings, "build", cache_key) if cache_key and not spec.ignore_cache else None
    catch_up: set[str] = set()  # this call's tasks whose key woke it with nothing to answer from yet (gone with the call)
    while time.monotonic() < deadline:
        if on_output is not None and (notice := watch.gone()) is not None:
            on_output(notice)
        if (cancelled := _cancelled(settings, sent.ids())) is not None:
            raise cancel_requests.cancelled_error(cancelled, "the caller stopped waiting for it")
        if (done := sent.answered()) is not None:
            _drain(reader, on_output)
            answer: FarmBuildResult = done.get(timeout=1)
            return answer
        if sent.failed_over():
            logger.warning("the broker failed over before task %s answered; sending %s:%s again", result.id, spec.image_name, spec.tag)
            if on_output is not None:
                on_output("dockyard: the broker failed over before this build answered; sending it again\n")
            result = sent.result
            watch = RunningHost(result, settings)
        if waiter is not None and (entry := cached_entry(spec, cache_key, settings)) is not None:
            _drain(reader, on_output)
            if entry.owner in sent.ids():
                return _answer(spec, entry, "built")
            if entry.created_at < sent_at - 1:
                return _answer(spec, entry, "hit")
            if _ready_within(result, RESULT_CATCH_UP_S):  # made about when this task was sent:
                own: FarmBuildResult = result.get(timeout=1)  # its own answer (a hit, or a join) says which
                return own
            return _answer(spec, entry, "joined")
        if result.id in catch_up:
            catch_up.discard(result.id)
            if _ready_within(result, RESULT_CATCH_UP_S):
                continue  # answered at the top of the loop
        if (got := _block(result, waiter, reader, on_output, min(settings.wait_wake_s, deadline - time.monotonic()), catch_up)) is not None:
            _drain(reader, on_output)
            return got
    raise JoinTimeout(f"No result for {spec.image_name}:{spec.tag} within {timeout_s:.0f} s.")


def _cancelled(settings: Settings, task_ids: set[str]) -> str | None:
    """The first of a call's task ids its team asked to cancel (``cancel``), or None: one round trip."""
    return cancel_requests.first_cancelled(redis_for(settings), settings, task_ids)


def _ready_within(result: AsyncResult, seconds: float, *, every_s: float = 0.05) -> bool:
    """Whether the task's result is stored within ``seconds`` (its state read, never Celery's result
    subscription, which does not follow a Sentinel failover)."""
    deadline = time.monotonic() + seconds
    while not result.ready():
        if time.monotonic() >= deadline:
            return False
        time.sleep(min(every_s, max(0.0, deadline - time.monotonic())))
    return True


def _block(
    result: AsyncResult, waiter: Waiter | None, reader: StreamReader | None, on_output: OutputSink | None, block_s: float,
    catch_up: set[str],
) -> FarmBuildResult | None:
    """Wait up to ``block_s`` without polling: for the key's wake-ups and output lines, or for the
    task's own result (Celery's result wait); the result if it came. A wake-up on the key before the
    result is stored notes the task in ``catch_up``, the waiting call's own set."""
    block_s = max(0.001, block_s)
    if waiter is None and (reader is None or on_output is None):
        _ready_within(result, block_s, every_s=NO_KEY_POLL_S)  # no key to wake on: the result's state
        return None
    if waiter is None:
        assert reader is not None and on_output is not None
        for line in reader.read(block_s=block_s):
            on_output(line + "\n")
        return None
    streaming = reader is not None and on_output is not None
    found = waiter.wait(block_s, also={reader.name: reader.last_id} if streaming and reader else None)
    if streaming and reader is not None and on_output is not None:
        for line in reader.take(found.get(reader.name, [])):
            on_output(line + "\n")
    if found.get(waiter.name) and not result.ready():  # woke on the key: answered from the cache next, if
        catch_up.add(result.id)  # it can be; else the task's own result may be a moment behind
    return None


class RunningHost:
    """The host running a task, checked about once a second: has its heartbeat stopped?"""

    def __init__(self, result: AsyncResult, settings: Settings) -> None:
        self.result, self.settings = result, settings
        self.next_check = time.monotonic() + 1.0
        self.seen: set[str] = set()
        self.told: set[str] = set()

    def gone(self) -> str | None:
        """A line for the caller when a host that ran its task stopped answering (once per host)."""
        if time.monotonic() < self.next_check:
            return None
        self.next_check = time.monotonic() + 1.0
        meta = self.result.backend.get_task_meta(self.result.id)
        info = meta.get("result") if meta.get("status") in ("STARTED", "PROGRESS") else None
        host = (info.get("host") or str(info.get("hostname") or "").split("@")[0]) if isinstance(info, dict) else ""
        if host:
            self.seen.add(host)  # remembered: a restored delivery soon names the host that took it over
        for each in sorted(self.seen - self.told):
            if not hosts.is_alive(redis_for(self.settings), self.settings, each):
                self.told.add(each)
                return f"dockyard: host {each} running this build stopped answering; a live host takes its work over\n"
        return None


def _drain(reader: StreamReader | None, on_output: OutputSink | None) -> None:
    """Pass on the lines written before the result was seen."""
    if reader is not None and on_output is not None:
        for line in reader.read(block_s=0.001):
            on_output(line + "\n")


class Copies:
    """A task and the copies of it sent again because the broker failed over before any answered (see
    ``dockyard.tasks.routing.broker_watch``); the first of them to answer does. Builds and pushes wait with it."""

    def __init__(self, result: AsyncResult, settings: Settings, resend: Callable[[], AsyncResult] | None) -> None:
        self.result = result  # the copy sent last
        self.earlier: list[AsyncResult] = []  # copies sent before a failover, any of which may still answer
        self.resend = resend
        self.broker = BrokerWatch(settings) if resend is not None else None

    def answered(self) -> AsyncResult | None:
        """The first copy whose result is stored (its state read, not Celery's result subscription)."""
        return next((each for each in (self.result, *self.earlier) if each.ready()), None)

    def ids(self) -> set[str]:
        return {self.result.id, *(each.id for each in self.earlier)}

    def failed_over(self) -> bool:
        """Whether the broker's master changed since the last look (then a copy was sent, ``result`` now)."""
        if self.broker is None or self.resend is None or not self.broker.moved():
            return False
        self.earlier.append(self.result)
        self.result = self.resend()
        return True


def await_task(
    result: AsyncResult, settings: Settings, *, timeout_s: float, what: str, resend: Callable[[], AsyncResult] | None = None
) -> Any:
    """The answer of a task with no cache key to wake on (a push): its stored state read every
    ``NO_KEY_POLL_S``, and with ``resend`` a copy sent when the broker fails over first (``Copies``).

    Raises Celery's ``TimeoutError`` after ``timeout_s``, as ``AsyncResult.get`` did.
    """
    deadline = time.monotonic() + timeout_s
    sent = Copies(result, settings, resend)
    while (done := sent.answered()) is None:
        if (left := deadline - time.monotonic()) <= 0:
            raise TaskTimeout(f"No result for {what} within {timeout_s:g} s.")
        if sent.failed_over():
            logger.warning("the broker failed over before task %s answered; sending %s again", sent.earlier[-1].id, what)
        _ready_within(sent.result, min(settings.wait_wake_s, left), every_s=NO_KEY_POLL_S)
    return done.get(timeout=1)


def pinned_push(request: PushRequest, settings: Settings) -> PushRequest:
    """The request with the image its tag names on the farm (read once, from the index), so the
    push sends exactly that image wherever it runs."""
    if request.image_id is not None:
        return request
    location = hosts.locate_images(redis_for(settings), settings, [request.reference])[0]
    if location is None:
        evicted = image_use.evicted_image(redis_for(settings), settings, request.reference)
        if evicted is None:
            raise PushError(f"No image {request.reference} on any farm host: build it on the farm first.")
        return request.model_copy(update={"image_id": evicted})  # the disk budget removed it: the worker rebuilds it
    return request.model_copy(update={"image_id": location["image_id"]})


def cached_push(request: PushRequest, settings: Settings) -> FarmPushResult | None:
    """The fast path of a push: the same image, repository, tags and registry were pushed before,
    and the registry still serves that digest under each tag to the caller's credentials."""
    assert request.image_id is not None, "a push is pinned to an image id before the cache is asked"
    key = push_key(
        image_id=request.image_id, repository=request.image_name, tags=request.tags,
        registry=registry_of(request.image_name),
    )
    entry = push_cache(redis_for(settings), settings).peek(key)
    if entry is None:
        return None
    credentials = request.credentials if isinstance(request.credentials, Credentials) else None
    credentials = credentials or pull_login(settings, request.image_name)  # the caller's own, never the workers'
    if not registry.serves(request.image_name, request.tags, entry.value.get("digest"), credentials):
        return None
    return farm_push_result(request, entry.value.get("digest"), host=entry.host, cache="hit")


def push(
    image_name: str,
    *,
    tag: str | None = None,
    credentials: Mapping[str, Any] | None = None,
    additional_tags: list[str] | None = None,
    ignore_cache: bool = False,
    build_backend: str = "docker-py",
    image_id: str | None = None,
    app: Celery | None = None,
    timeout_s: float | None = None,
) -> FarmPushResult:
    """Push on the farm (on the host holding the image) and wait; a repeated push is a hit.

    The tag is resolved to an image id once, here; ``image_id`` names it outright. A push the broker
    lost in a failover is sent again, pinned to the same image: a push-cache hit, or the same image pushed again.
    """
    settings = get_settings()
    request = pinned_push(push_request(
        image_name, settings=settings, tag=tag, credentials=credentials, additional_tags=additional_tags,
        ignore_cache=ignore_cache, build_backend=build_backend, image_id=image_id,
    ), settings)
    if not ignore_cache and (hit := cached_push(request, settings)) is not None:
        return hit
    kwargs = _sealed(request, settings, repository=request.image_name)
    signature = (app or caller_app()).signature(PUSH_TASK, kwargs=kwargs, kwargsrepr=masked_repr(kwargs))
    answer: FarmPushResult = await_task(
        signature.apply_async(), settings, timeout_s=timeout_s or settings.task_time_limit_s * 2,
        what=f"the push of {request.reference}", resend=lambda: signature.clone().apply_async(),
    )
    return answer
