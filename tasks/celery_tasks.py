"""The Celery tasks: thin wrappers that unpack JSON, call the operation, map errors.

Names are stable, so any program can send them by name without importing
this code: ``dockyard.build_docker_image`` (prefect-docker's keyword
arguments, or a prepared ``spec``), ``dockyard.push_docker_image`` (a build
result first in a chain, then push's keyword arguments) and
``dockyard.tag_image`` (internal: tags a cached image on the host holding it)
and ``dockyard.ping`` (a trivial task: the round trip of the farm's queues).

In a host's fast lane (``dockyard.tasks.farm.lane``) a task only answers from the cache:
work that turns out not to be cheap is handed to the build lanes. A drained host
(``dockyard.tasks.farm.drain``) builds nothing new: a build it pops goes to another host;
its tags and pushes still run there, where the image is.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import docker.errors
import kombu.exceptions
import redis.exceptions
import requests.exceptions
from celery import Task, shared_task
from celery.exceptions import Ignore, Retry
from celery.worker.request import Request as CeleryRequest

from dockyard.config import defaults
from dockyard.config.settings import Settings, farm_queue, get_settings, host_queue, team_queue
from dockyard.config.teams import Team
from dockyard.tasks.farm import drain, hosts, recovery
from dockyard.tasks.farm.deliveries import count_delivery, forget_deliveries, hand_over_deliveries
from dockyard.tasks.request.masking import masked_repr
from dockyard.tasks.engine.build_network import engine_policy
from dockyard.tasks.engine.connection import shared_client
from dockyard.tasks.errors import EngineUnavailable, InvalidInput, StoreUnavailable, TransientError
from dockyard.tasks.worker.build import execute_build, execute_tag
from dockyard.tasks.worker.holder import Forward
from dockyard.tasks.worker.here import Here
from dockyard.tasks.worker.push import execute_push
from dockyard.tasks.engine.images import image_here
from dockyard.tasks.engine.limits import build_limits
from dockyard.tasks.worker.fast_answer import answer_build, answer_push
from dockyard.tasks.routing.fast_lane import forward_queue
from dockyard.tasks.routing.placement import elsewhere_queue
from dockyard.tasks.farm.lane import in_fast_lane
from dockyard.tasks.cache.live_output import ProgressState, StreamOutput, tee
from dockyard.tasks.output import OutputSink
from dockyard.tasks.task_names import BUILD_TASK, PING_TASK, PUSH_TASK, TAG_TASK
from dockyard.tasks.request.chain import push_arguments
from dockyard.tasks.request.sealing import credentials_binding, unseal
from dockyard.tasks.worker.sent_arguments import prepare_sent_arguments
from dockyard.tasks.request.arguments import push_request
from dockyard.tasks.request.spec import BuildSpec, Credentials, PushRequest, Sealed
from dockyard.tasks.keyspace import redis_for
from dockyard.tasks.teams import audit, cancel, caps
from dockyard.tasks.teams.pushing import check_repository, sending_team
from dockyard.tasks.teams.identity import for_team, request_team, task_settings, verified_team

STORE_OUTAGE_WAIT_S = 120  # how long a task waits for Redis to come back before failing
STORE_OUTAGE_ATTEMPTS = 3  # runs of a task body across Redis outages
RETRY_BACKOFF_MAX_S = 300  # longest delay between retries of a transient error

logger = logging.getLogger("dockyard.tasks")
_RETRY = {
    "autoretry_for": (TransientError,),
    "max_retries": get_settings().transient_retries,
    "retry_backoff": get_settings().transient_backoff_s,
    "retry_backoff_max": RETRY_BACKOFF_MAX_S,
    "retry_jitter": False,
}


class OutputToLog:
    """Build output sink on a worker: whole lines to the task's log."""

    def __init__(self, task_id: str | None) -> None:
        self.task_id = task_id
        self._partial = ""

    def __call__(self, text: str) -> None:
        self._partial += text
        *lines, self._partial = self._partial.split("\n")
        for line in lines:
            if line.strip():
                logger.info("[%s] %s", self.task_id, line.rstrip())


class MaskedRequest(CeleryRequest):  # type: ignore[misc]
    """A received task whose arguments show masked in the worker's logs and events, whatever the sender wrote."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kwargsrepr = masked_repr(self.kwargs if isinstance(self.kwargs, Mapping) else {})
        self._argsrepr = repr([masked_repr(each) if isinstance(each, Mapping) else each for each in self.args or []])


def retry_queue(request: Any, settings: Any) -> str | None:
    """The queue a retry goes to when not the one its message came from: the team's shared queue, if
    that was another host's own queue (the message was moved off a dead host, which would never take it)."""
    routing_key = (getattr(request, "delivery_info", None) or {}).get("routing_key")
    team = request_team(request)
    if not isinstance(routing_key, str) or team is None:
        return None
    queue = farm_queue(routing_key)
    if queue.startswith(defaults.HOST_QUEUE_PREFIX) and queue != settings.host_queue:
        return team_queue(settings.build_queue, team)
    return None


class DockyardTask(Task):  # type: ignore[misc]
    """Counts each delivery, fails a message redelivered past the cap, masks its arguments, never
    sends a retry to a dead host's queue, and answers ``Cancelled`` without running a task its team
    cancelled (``dockyard.tasks.teams.cancel``, read in the team of the queue it came from)."""

    Request = MaskedRequest

    def retry(self, *args: Any, **options: Any) -> Any:
        if "queue" not in options and (queue := retry_queue(self.request, get_settings())) is not None:
            options["queue"] = queue
        return super().retry(*args, **options)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        settings = get_settings()
        team = verified_team(self.request, settings)  # a message from no declared team's queue runs nothing
        connection = redis_for(settings)
        task_id = self.request.id
        if task_id:
            count_delivery(connection, settings, task_id, self.request.retries)
        handed_over = False
        try:
            cancel.check(connection, for_team(settings, team.name), task_id, doing="it did not start")
            with capped(self, connection, settings, team):  # a build over its team's cap is parked
                return super().__call__(*args, **kwargs)
        except Retry as exc:
            handed_over = bool(getattr(exc, "takeover", False))
            raise
        finally:
            with contextlib.suppress(redis.exceptions.RedisError):
                if task_id and handed_over:
                    hand_over_deliveries(connection, settings, task_id, self.request.retries)
                elif task_id:
                    forget_deliveries(connection, settings, task_id, self.request.retries)
                if task_id:
                    recovery.finished(connection, settings, recovery.delivery(task_id, self.request.retries))


def capped(task: Task, connection: Any, settings: Settings, team: Team) -> contextlib.AbstractContextManager[Any]:
    """A build's slot of its team's cap (``dockyard.tasks.teams.caps.team_cap``: ``max_running``, and with
    several teams the pool's slots minus the others' reserve), for the build's run; nothing for other
    tasks, the fast lane and uncapped teams. At the cap the build is parked: it
    is acknowledged (``Ignore``) without holding this worker slot, and sent again when a slot frees."""
    task_id = task.request.id
    if task.name != BUILD_TASK or in_fast_lane() or not task_id:
        return contextlib.nullcontext()
    cap = caps.team_cap(settings, team, slots=lambda: hosts.pool_slots(connection, settings))
    if cap is None:
        return contextlib.nullcontext()
    if not caps.acquire(connection, settings, team.name, task_id, cap):
        queue = (task.request.delivery_info or {}).get("routing_key") or team_queue(settings.build_queue, team.name)
        caps.park(connection, settings, team.name, task_id, queue, task.signature_from_request(task.request))
        logger.info("team %s runs %d builds, its cap now: %s parked", team.name, cap, task_id)
        raise Ignore()
    return caps.Slot(connection, settings, team.name, task_id, cap=cap, publish=send_parked(task.app, connection, settings))


def send_parked(app: Any, connection: Any, settings: Settings) -> caps.Publish:
    """How a worker sends a released parked build again: its signature, to the queue it came from
    (its team's shared queue if that was the queue of a host that is gone)."""
    def send(signature: Mapping[str, Any]) -> None:
        options = dict(signature.get("options") or {})
        options["queue"] = caps.queue_after(
            str(options.get("queue")), settings, alive=lambda host: hosts.is_alive(connection, settings, host),
        )
        app.signature({**signature, "options": options}).apply_async()

    return send


def wait_for_redis(connection: Any, timeout_s: float) -> bool:
    """True once Redis answers again, False if it stays away for ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.exceptions.RedisError):
            if connection.ping():
                return True
        time.sleep(0.5)
    return False


def transient_errors(function: Callable[..., Any]) -> Callable[..., Any]:
    """Ride out a Redis restart (wait, then run again: every step is idempotent), and turn an
    unreachable Redis or Docker engine into the transient errors Celery retries."""

    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        settings = get_settings()
        for _attempt in range(STORE_OUTAGE_ATTEMPTS):
            try:
                return function(*args, **kwargs)
            except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, kombu.exceptions.OperationalError) as exc:
                logger.warning("Redis does not answer, waiting for it: %s", exc)
                if not wait_for_redis(redis_for(settings), STORE_OUTAGE_WAIT_S):
                    raise StoreUnavailable(f"Redis does not answer: {exc}") from exc
            except (docker.errors.DockerException, requests.exceptions.ConnectionError) as exc:
                if isinstance(exc, docker.errors.APIError) and exc.status_code and exc.status_code < 500:
                    raise
                raise EngineUnavailable(f"Docker engine of host {settings.host_id} does not answer: {exc}") from exc
        raise StoreUnavailable("Redis kept going away while this task ran.")

    return wrapper


def _here(settings: Any, connection: Any, output: OutputSink) -> Here:
    """This host, for one task: the settings, Redis, the process's engine client and the task's output."""
    return Here(settings, connection, shared_client(settings), output)


def _build_output(task: Task, spec: BuildSpec, connection: Any, settings: Settings) -> OutputSink:
    """Build output goes to the worker's log, the key's live stream (the team's) and the task's PROGRESS state."""
    return tee(
        OutputToLog(task.request.id),
        StreamOutput(connection, settings, spec.key),
        ProgressState(task.update_state, settings.host_id),
    )


def _finish(task: Task, outcome: Mapping[str, Any] | Forward, started: float, forward: Any, settings: Settings) -> Any:
    if isinstance(outcome, Forward):
        logger.info("forwarding %s to host %s, which holds %s", task.name, outcome.host, outcome.image_id)
        forwarded = forward(outcome)
        queue = forward_queue(forwarded.task, outcome.host, forwarded.kwargs) or host_queue(outcome.host)
        queue = team_queue(queue, settings.team)
        raise task.replace(forwarded.set(queue=queue, kwargsrepr=masked_repr(forwarded.kwargs)))
    return {**outcome, "duration_s": round(time.monotonic() - started, 3)}


def hand_over(task: Task, queue: str, args: tuple[Any, ...], kwargs: Mapping[str, Any], settings: Settings) -> Any:
    """Fast work that is not cheap after all: the same task again, on the team's ``queue`` (a build lane)."""
    queue = team_queue(queue, settings.team)
    logger.info("%s is not cheap work: handed from the fast lane to %s", task.name, queue)
    signature = task.signature(args=args, kwargs=dict(kwargs))
    return task.replace(signature.set(queue=queue, kwargsrepr=masked_repr(signature.kwargs)))


def move_off_drained(task: Task, args: tuple[Any, ...], kwargs: Mapping[str, Any], settings: Settings) -> Any:
    """A build popped by a drained host (``dockyard.tasks.farm.drain``): the same task again on
    another live host's queue, as placement chooses, or the team's shared queue; never built here."""
    queue = team_queue(elsewhere_queue(args, kwargs, settings, settings.host_id), settings.team)
    logger.info("host %s is drained: %s %s goes to %s", settings.host_id, task.name, task.request.id, queue)
    signature = task.signature(args=args, kwargs=dict(kwargs))
    return task.replace(signature.set(queue=queue, kwargsrepr=masked_repr(signature.kwargs)))


@shared_task(name=PING_TASK)
def ping_task() -> str:
    """A trivial task: its round trip is the floor of any task's."""
    return "pong"


def _tag_signature(spec: BuildSpec, forward: Forward) -> Any:
    return tag_task.signature(kwargs={
        "spec": spec.model_dump(), "image_id": forward.image_id, "source": forward.source, "cache_key": forward.cache_key,
    })


def fresh_budget(task: Task) -> Callable[[], None]:
    """Before a task takes over a build it waited for, it runs again as a new delivery: the build
    then has the whole time limit, not what the wait left of it."""

    def take_over() -> None:
        logger.info("the build %s waited for lost its owner: running again to take it over", task.request.id)
        retry = task.retry(countdown=0, max_retries=task.request.retries + 1, throw=False)
        retry.takeover = True  # the delivery count goes on (dockyard.tasks.farm.deliveries.hand_over_deliveries)
        raise retry

    return take_over


@shared_task(name=BUILD_TASK, bind=True, base=DockyardTask, **_RETRY)
@transient_errors
def build_task(self: Task, spec: Mapping[str, Any] | None = None, **params: Any) -> Any:
    """Build from a prepared ``spec`` (validated again here), or from prefect-docker's arguments."""
    settings = task_settings(self.request, get_settings())
    started = time.monotonic()
    if spec is not None:
        if params:
            raise InvalidInput(f"A build with a spec takes no other arguments, got {sorted(params)}.")
        prepared = BuildSpec.parse(spec)
    else:
        prepared = prepare_sent_arguments(params, settings)
    prepared.check_allowed(settings, networks=engine_policy(shared_client(settings), settings))
    build_limits(prepared, settings, shared_client(settings))  # InvalidInput if it asks for more than this host allows
    if prepared.secrets_owner is not None and prepared.secrets_owner != settings.team:
        raise InvalidInput(f"This build's secrets are team {prepared.secrets_owner}'s; it came from team {settings.team}.")
    connection = redis_for(settings)
    if in_fast_lane():
        answer = answer_build(prepared, here=_here(settings, connection, OutputToLog(self.request.id)), started=started)
        if answer is None:
            raise hand_over(self, settings.build_queue, (), {"spec": spec} if spec is not None else params, settings)
        return {**answer, "duration_s": round(time.monotonic() - started, 3)}
    if drain.drained(connection, settings, settings.host_id) is not None:
        raise move_off_drained(self, (), {"spec": spec} if spec is not None else params, settings)
    outcome = execute_build(
        prepared, here=_here(settings, connection, _build_output(self, prepared, connection, settings)),
        owner=self.request.id, on_takeover=fresh_budget(self), started=started,
    )
    # cancelled while others waited for its build: the build went on for them, this task answers Cancelled
    cancel.check(connection, settings, self.request.id, doing="while it ran; its build went on for any other call waiting for it")
    return _finish(self, outcome, started, lambda forward: _tag_signature(prepared, forward), settings)


@shared_task(name=TAG_TASK, bind=True, base=DockyardTask, **_RETRY)
@transient_errors
def tag_task(self: Task, spec: Mapping[str, Any], image_id: str, source: str, cache_key: str | None = None) -> Any:
    """Apply a build's tags on the host holding its cached image (or rebuild it here if gone)."""
    settings = task_settings(self.request, get_settings())
    started = time.monotonic()
    prepared = BuildSpec.parse(spec)
    if not isinstance(image_id, str) or not isinstance(source, str):
        raise InvalidInput("tag_image needs image_id and source as strings.")
    if cache_key is not None and not (isinstance(cache_key, str) and re.fullmatch(r"[0-9a-f]{64}", cache_key)):
        raise InvalidInput("tag_image's cache_key must be a build key (64 hex digits).")
    connection = redis_for(settings)
    if in_fast_lane() and not image_here(shared_client(settings), image_id):
        raise hand_over(self, settings.host_queue, (), {
            "spec": spec, "image_id": image_id, "source": source, "cache_key": cache_key,
        }, settings)
    outcome = execute_tag(
        prepared, image_id, source, cache_key=cache_key,
        here=_here(settings, connection, _build_output(self, prepared, connection, settings)), owner=self.request.id,
    )
    return _finish(self, outcome, started, lambda forward: _tag_signature(prepared, forward), settings)


def opened_credentials(request: PushRequest, settings: Any) -> Credentials | None:
    """The request's credentials in clear: sealed ones opened with the farm's key, only for the team
    of the message and, if the seal names one, only for its repository."""
    if isinstance(request.credentials, Sealed):
        sealed = request.credentials
        if sealed.repository is not None and sealed.repository != request.image_name:
            raise InvalidInput(
                f"These sealed credentials were sealed for a push to {sealed.repository}, not to {request.image_name}."
            )
        return Credentials.parse(unseal(
            {"sealed": sealed.sealed}, settings.seal_private_key, bound_to=credentials_binding(settings.team, sealed.repository),
        ))
    if request.credentials is not None and not settings.accept_clear_credentials:
        raise InvalidInput(
            "Clear credentials in a message are refused: seal them with the farm's public key "
            "(dockyard.tasks.client does), or set DOCKYARD_ACCEPT_CLEAR_CREDENTIALS=true on the workers."
        )
    return request.credentials


@shared_task(name=PUSH_TASK, bind=True, base=DockyardTask, **_RETRY)
@transient_errors
def push_task(self: Task, build_result: Mapping[str, Any] | None = None, **params: Any) -> Any:
    """Push; in a chain, name, tag and additional tags come from the build's result."""
    settings = task_settings(self.request, get_settings())
    started = time.monotonic()
    arguments = push_arguments(build_result, params)
    image_name = arguments.pop("image_name")
    try:
        request = push_request(image_name, settings=settings, **arguments)
    except TypeError as exc:
        raise InvalidInput(f"Bad push arguments: {exc}") from exc
    credentials = opened_credentials(request, settings)
    if credentials is None:  # the farm's login: only to the team's own repositories
        check_repository(sending_team(settings), request.image_name)
    here = _here(settings, redis_for(settings), OutputToLog(self.request.id))
    if in_fast_lane():
        answer = answer_push(request, credentials, here=here)
        if answer is None:
            args = (build_result,) if build_result is not None else ()
            raise hand_over(self, settings.host_queue, args, params, settings)
        audit.record_push(here.connection, settings, answer, login="farm" if credentials is None else "team")
        return {**answer, "duration_s": round(time.monotonic() - started, 3)}
    outcome = execute_push(request, credentials, here=here)
    return _finish(
        self, outcome, started,
        lambda forward: push_task.signature(
            kwargs=request.model_copy(update={"image_id": forward.image_id}).model_dump(exclude_none=True)
        ),
        settings,
    )
