"""The ``dockyard`` command: bring up a local farm, run a worker, build and push.

Every failure ends in one line on stderr, ``dockyard: Type: message``, and
exit code 1 (the operation failed) or 2 (the command line is wrong), never a
traceback. Commands that print records take ``--json``.

The help texts are plain text (no reStructuredText): they are what
``dockyard --help`` shows.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import celery.exceptions
import kombu.exceptions
import pydantic
import redis.exceptions

from dockyard.config import defaults
from dockyard.config.settings import InvalidSettings, get_settings
from dockyard.config.teams import InvalidTeams
from dockyard.tasks.errors import DockyardError
from dockyard.workers import doctor_commands, drain_commands, team_commands

DESCRIPTION = (
    "Build container images on the dockyard farm (Celery workers next to Docker engines, Redis in between), "
    "push them, and run and inspect the farm. Every failure is one line on stderr, 'dockyard: Type: message', "
    "with exit code 1 (the operation failed) or 2 (the command line is wrong)."
)
EXAMPLE_DIR = Path(__file__).with_name("example")
# the default of push's --password-env: an option's default read by this command only, not a dockyard setting
PUSH_PASSWORD_ENV = "DOCKYARD_PUSH_PASSWORD"
NOPERM_HINT = "(operator commands need the farm's worker Redis user, not a caller's)"

# failures of the farm's services, reported in one line (exit 1) rather than a traceback
SERVICE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    celery.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)


class UsageError(Exception):
    """The command line is wrong (exit 2); nothing was done."""


class StartRefused(Exception):
    """``dockyard worker`` stopped at start: its build network reaches the farm (exit 1)."""


class CacheKeysNotFound(Exception):
    """Some cache keys given to ``dockyard cache clear`` are not in the cache (exit 1)."""


class UnknownTask(Exception):
    """``dockyard status`` was given a task id the result backend holds nothing for (exit 1)."""


class MissingHostId(UsageError):
    """``dockyard worker`` was started without an explicit host id (exit 2)."""


class TaskFailed(Exception):
    """``dockyard status`` of a task that failed: reported under the task's own error type (exit 1)."""

    def __init__(self, type_name: str, message: str) -> None:
        super().__init__(message)
        self.type_name = type_name


def print_json(document: Any) -> None:
    """``document`` as JSON on stdout (``--json``)."""
    print(json.dumps(document, indent=2, default=str))


def cmd_up(args: argparse.Namespace) -> int:
    """Provision the farm, start a worker, build and push the example project."""
    from dockyard.workers import farm

    started = time.monotonic()
    env_file = farm.provision(hosts=args.hosts)
    settings = farm.load_farm_env(env_file)
    provisioned = time.monotonic()
    from dockyard.workers.app import app

    farm.start_worker(settings, host_id=settings.host_id, docker_host=settings.docker_host)
    farm.wait_for_workers(app, [settings.host_id])
    ready = time.monotonic()

    from dockyard.tasks.client import build_and_push

    caller = farm.become_team(args.team_env or env_file.with_name(f"{farm.EXAMPLE_TEAM}.env"))  # sent as a team's caller
    registry = caller.registry_url or "127.0.0.1:5000"
    job = build_and_push(  # with the farm's login, to the team's own repository
        f"{registry}/{caller.team}/example", path=str(EXAMPLE_DIR), buildargs={"BASE": caller.auto_base_image},
    ).apply_async()
    pushed = job.get(timeout=settings.task_time_limit_s)
    built = job.parent.get(timeout=5)
    done = time.monotonic()
    log = farm.log_path(settings, settings.host_id)
    timings = {
        "provision_s": provisioned - started, "worker_start_s": ready - provisioned,
        "build_s": built["duration_s"], "push_s": pushed["duration_s"], "round_trip_s": done - ready,
    }
    if args.json:
        print_json({
            "pushed": pushed["image"], "digest": pushed["digest"], "image_id": built["image_id"],
            "host": built["host"], "timings": timings, "worker_log": str(log),
        })
        return 0
    print(f"pushed  {pushed['image']}")
    print(f"digest  {pushed['digest']}")
    print(f"image   {built['image_id']} built on host {built['host']}")
    print(
        f"timings provision {timings['provision_s']:.1f} s, worker start {timings['worker_start_s']:.1f} s, "
        f"build {timings['build_s']:.2f} s, push {timings['push_s']:.2f} s, "
        f"build+push round trip {timings['round_trip_s']:.2f} s"
    )
    print(f"stop the worker with `dockyard down`; its log is {log}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the workers `dockyard up` started."""
    from dockyard.workers import farm

    if args.all and args.host:
        raise UsageError("give --host or --all, not both")
    settings = get_settings()
    stopped = farm.stop_workers(settings, hosts=args.host or None, every=args.all)
    left = farm.others_workers(settings)
    if args.json:
        print_json({"stopped": stopped, "left_running": left})
        return 0
    print("stopped " + (", ".join(stopped) if stopped else "nothing"))
    if left:
        print(f"left running (started by another checkout or key prefix; --host ID or --all stops them): {', '.join(left)}")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker in the foreground for this host (its shared and host queues), and its fast lane beside it."""
    # before the settings are first read: the host record shows what the worker really runs with
    if args.host_id:
        os.environ["DOCKYARD_HOST_ID"] = args.host_id
    if args.concurrency:
        os.environ["DOCKYARD_WORKER_CONCURRENCY"] = str(args.concurrency)
    get_settings.cache_clear()
    if "host_id" not in get_settings().model_fields_set:
        # never the hostname by default: on a second machine (or a container) it may be another host's id
        raise MissingHostId(
            "a worker needs this host's own id: set DOCKYARD_HOST_ID (or pass --host-id), unique in the farm "
            "(`dockyard up` sets it for the local farm's worker)"
        )
    from dockyard.workers import fast_worker
    from dockyard.workers.worker import run_fast_worker, run_worker

    if args.lane == "fast":
        run_fast_worker(get_settings(), loglevel=args.loglevel)
        return 0
    fast_worker.configure(args.loglevel)  # started once the build worker is reconciled (dockyard.workers.heartbeat)
    from dockyard.workers import heartbeat

    try:
        run_worker(get_settings(), concurrency=args.concurrency, loglevel=args.loglevel, extra_queues=args.queue)
    except SystemExit:
        if heartbeat.start_refused() is None:
            raise
    finally:
        fast_worker.stop()
    if (reason := heartbeat.start_refused()) is not None:
        raise StartRefused(reason)
    return 0


def split_tags(args: argparse.Namespace) -> tuple[str | None, list[str]]:
    """The tag and additional tags of repeated ``-t/--tag`` (the first is the tag) and ``--additional-tag``."""
    tags: list[str] = [*args.tag, *args.additional_tag]
    if not args.tag:
        return None, tags
    return tags[0], tags[1:]


def build_request(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The image name and ``dockyard.tasks.client.build`` parameters of ``dockyard build``'s arguments.

    docker build's options map to prefect-docker's ``build_kwargs``: docker-py's
    ``buildargs``, ``target``, ``platform``, ``nocache``, ``labels``; buildx's
    ``build_args``, ``target``, ``platforms``, ``cache=False``, ``labels``.
    """
    if args.context is not None and args.path is not None:
        raise UsageError(f"the build context is given twice: {args.context!r} and --path {args.path!r}")
    if args.image_name.startswith((".", "/", "~")):  # no image name starts so: a context given in its place
        raise UsageError(
            f"{args.image_name!r} is a path, not an image name: the image name comes first "
            "(dockyard build IMAGE [CONTEXT])"
        )
    context = args.context if args.context is not None else (args.path if args.path is not None else ".")
    params: dict[str, Any] = {"dockerfile": args.dockerfile, "path": str(Path(context).resolve())}
    tag, additional = split_tags(args)
    if tag is not None:
        params["tag"] = tag
    if additional:
        params["additional_tags"] = additional
    buildx = args.backend == "buildx"
    if args.backend:
        params["build_backend"] = args.backend
    if args.build_arg:
        params["build_args" if buildx else "buildargs"] = dict(args.build_arg)
    if args.target is not None:
        params["target"] = args.target
    if args.platform is not None:
        if buildx:
            params["platforms"] = [each for each in args.platform.split(",") if each]
        else:
            params["platform"] = args.platform
    if args.no_cache:
        if buildx:
            params["cache"] = False
        else:
            params["nocache"] = True
    if args.label:
        params["labels"] = dict(args.label)
    if args.ignore_cache:
        params["ignore_cache"] = True
    return args.image_name, params


def cmd_build(args: argparse.Namespace) -> int:
    """Build on the farm (from the cache when possible) and print the result as JSON."""
    from dockyard.tasks.client import build

    image_name, params = build_request(args)
    sent: list[str] = []

    def on_sent(task_id: str) -> None:
        sent.append(task_id)
        if args.print_task_id:
            _to_stderr(f"dockyard: build sent as task {task_id} (stop it with 'dockyard cancel {task_id}')\n")

    try:
        result = build(image_name, on_output=_to_stderr, on_sent=on_sent, timeout_s=args.timeout, **params)
    except KeyboardInterrupt:  # Ctrl-C cancels the build this command sent
        from dockyard.tasks.client import cancel

        for task_id in sent:
            cancel(task_id)
        raise
    print_json(result)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    """Ask the farm to cancel a task of the caller's own team (a queued or running build)."""
    from dockyard.tasks.client import cancel

    task_id = cancel(args.task_id)
    if args.json:
        print_json({"cancelled": task_id, "team": get_settings().team})
        return 0
    print(f"cancel requested for task {task_id} (team {get_settings().team})")
    return 0


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def cmd_push(args: argparse.Namespace) -> int:
    """Push from the host holding the image and print the result as JSON."""
    from dockyard.tasks.client import push

    credentials = push_credentials(args)
    tag, additional = split_tags(args)
    try:
        result = push(
            args.image_name, tag=tag, additional_tags=additional or None,
            credentials=credentials, timeout_s=args.timeout,
        )
    except celery.exceptions.TimeoutError as exc:
        waited = args.timeout or 2 * get_settings().task_time_limit_s
        raise celery.exceptions.TimeoutError(
            f"No result for the push of {args.image_name}:{tag or 'latest'} within {waited:g} s "
            "(is a worker up and consuming?)"
        ) from exc
    print_json(result)
    return 0


def push_credentials(args: argparse.Namespace) -> dict[str, str] | None:
    """Registry credentials from --username, --registry-url and a password never on the command line.

    The password comes from --password-stdin, --password-file (trailing newline
    stripped) or an environment variable (--password-env, default
    DOCKYARD_PUSH_PASSWORD). Without --username there are none: the workers'
    own registry login is used.
    """
    if args.username is None:
        given = [flag for flag, value in (
            ("--registry-url", args.registry_url), ("--password-env", args.password_env),
            ("--password-file", args.password_file), ("--password-stdin", args.password_stdin or None),
        ) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} given without --username")
        return None
    if not args.username:
        raise UsageError("--username is empty")
    if args.password_stdin:
        password = sys.stdin.read().rstrip("\r\n")
        if not password:
            raise UsageError("--password-stdin: no password on stdin")
    elif args.password_file is not None:
        try:
            password = Path(args.password_file).read_text().rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--password-file: cannot read {args.password_file}: {exc}") from exc
        if not password:
            raise UsageError(f"--password-file: {args.password_file} is empty")
    else:
        variable = args.password_env or PUSH_PASSWORD_ENV
        password = os.environ.get(variable, "")
        if not password:
            raise UsageError(
                f"--username needs a password: set {variable}, or give --password-stdin, "
                "--password-env VAR or --password-file PATH"
            )
    credentials = {"username": args.username, "password": password}
    if args.registry_url:
        credentials["registry_url"] = args.registry_url
    else:
        from dockyard.tasks.request.naming import registry_of

        if (registry := registry_of(args.image_name)) is not None:
            credentials["registry_url"] = registry
    return credentials


def fast_node(host_id: str) -> str:
    """The Celery node name (before the ``@``) of ``host_id``'s fast lane worker (``dockyard.workers.worker``)."""
    return host_id + defaults.FAST_QUEUE_SUFFIX


def host_state(drain: dict[str, Any] | None, record: dict[str, Any], queued: int) -> str:
    """``active`` (in service), ``draining`` (drained, still holding, consuming or queued work, or its
    worker has not seen the drain yet) or ``drained`` (drained and empty)."""
    if drain is None:
        return "active"
    seen = isinstance(record.get("drain"), dict) and record["drain"].get("id") == drain.get("id")
    empty = seen and record.get("consuming_shared") is False and not record.get("held") and not queued
    return "drained" if empty else "draining"


def host_rows(
    records: list[dict[str, Any]], active: dict[str, list[Any]], lineages: dict[str, list[str]], *,
    drains: dict[str, dict[str, Any] | None] | None = None, queued: dict[str, int] | None = None, now: float | None = None,
) -> list[dict[str, Any]]:
    """What ``dockyard hosts`` shows of each host record: its build lane's and fast lane's running tasks
    (from the workers' ``active`` replies, by node), the lineages it holds, its heartbeat's age and
    its drain (``drains``: the drain keys read, ``queued``: what waits in its own queues).

    ``running_fast`` is None when the record advertises no fast lane (``fast_queue``).
    """
    running: dict[str, int] = {}
    for node, tasks in active.items():
        name = node.split("@", 1)[0]
        running[name] = running.get(name, 0) + len(tasks or [])
    rows = []
    for record in records:
        host = record["host"]
        rows.append({
            "host": host,
            "running": running.get(host, 0),
            "running_fast": running.get(fast_node(host), 0) if record.get("fast_queue") else None,
            "concurrency": record.get("concurrency"),
            "queue": record.get("queue"),
            "fast_queue": record.get("fast_queue"),
            "build_queue": record.get("build_queue"),
            "docker_host": record.get("docker_host"),
            "metrics": record.get("metrics"),
            "lineages": lineages.get(host, []),
            "seen_at": record.get("seen_at"),
            "heartbeat_age_s": round(max(0.0, (now or time.time()) - float(record.get("seen_at") or 0)), 1),
            "state": host_state((drains or {}).get(host), record, (queued or {}).get(host, 0)),
            "drained": (drains or {}).get(host) is not None,
            "drain": (drains or {}).get(host),
            "consuming_shared": record.get("consuming_shared"),
            "held": record.get("held"),
            "queued": (queued or {}).get(host, 0),
        })
    return rows


def cmd_hosts(args: argparse.Namespace) -> int:
    """List the build hosts that heartbeat, with their load (tasks running now in each lane) and the lineages they hold."""
    from dockyard.tasks.farm import drain
    from dockyard.tasks.farm.hosts import live_hosts
    from dockyard.tasks.keyspace import redis_for
    from dockyard.tasks.routing.placement import broker_redis, held_lineages
    from dockyard.workers.app import app

    settings = get_settings()
    active = app.control.inspect(timeout=1.0).active() or {}
    connection = redis_for(settings)
    records = live_hosts(connection, settings)
    lineages = {record["host"]: held_lineages(connection, settings, record["host"]) for record in records}
    drains = drain.drains(connection, settings, [record["host"] for record in records])
    broker = broker_redis(settings)
    queued = {
        host: drain.progress(connection, broker, settings, host, None).queued for host, found in drains.items() if found
    }
    rows = host_rows(records, active, lineages, drains=drains, queued=queued)
    if args.json:
        print_json(rows)
        return 0
    # new columns go last: scripts read the columns before them by position
    print("HOST\tRUNNING\tCONCURRENCY\tQUEUE\tDOCKER\tMETRICS\tLINEAGES\tFAST\tAGE\tSTATE")
    for row in rows:
        print(
            f"{row['host']}\t{row['running']}\t{row['concurrency']}\t{row['queue']}\t{row['docker_host']}\t"
            f"{row['metrics'] or '-'}\t{'; '.join(row['lineages']) or '-'}\t"
            f"{'-' if row['running_fast'] is None else row['running_fast']}\t"
            f"{row['heartbeat_age_s']:.1f}s\t{row['state']}"
        )
    return 0


def cmd_cache_list(args: argparse.Namespace) -> int:
    """List the build cache: key, image id, host, age."""
    from dockyard.tasks.cache.single_flight import build_cache
    from dockyard.tasks.keyspace import redis_for

    settings = get_settings()
    entries = sorted(build_cache(redis_for(settings), settings).entries())
    now = time.time()
    rows = [
        {"key": cache_key, "image_id": entry.value["image_id"], "image": entry.value.get("image"), "host": entry.host,
         "created_at": entry.created_at, "age_s": round(now - entry.created_at, 3)}
        for cache_key, entry in entries
    ]
    if args.json:
        print_json(rows)
        return 0
    print("KEY\tIMAGE ID\tHOST\tAGE (s)")
    for row in rows:
        print(f"{row['key']}\t{row['image_id']}\t{row['host']}\t{row['age_s']:.0f}")
    return 0


def cmd_cache_clear(args: argparse.Namespace) -> int:
    """Remove build cache entries (the given keys, or all with --all)."""
    from dockyard.tasks.cache.single_flight import build_cache
    from dockyard.tasks.keyspace import redis_for

    if not args.all and not args.keys:
        raise UsageError("give cache keys to clear, or --all")
    if args.all and args.keys:
        raise UsageError("give cache keys or --all, not both")
    settings = get_settings()
    cache = build_cache(redis_for(settings), settings)
    missing: list[str] = []
    if args.all:
        removed = cache.clear()
    else:
        wanted = list(dict.fromkeys(args.keys))
        missing = cache.remove(wanted)
        removed = len(wanted) - len(missing)
    if args.json:
        print_json({"cleared": removed, "missing": missing})
    else:
        print(f"cleared {removed} cache entr{'y' if removed == 1 else 'ies'}")
    if missing:
        raise CacheKeysNotFound(f"not in the build cache: {', '.join(missing)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show a task's state, and its result or error; a task id the result backend does not know is an error."""
    from celery.result import AsyncResult

    from dockyard.tasks.keyspace import connect_for
    from dockyard.workers.app import app

    settings = get_settings()
    backend = settings.effective_result_backend
    connection = None
    if backend.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        # the result backend retries a Redis outage for minutes; say so at once instead
        connection = connect_for(settings, backend, socket_connect_timeout=5, socket_timeout=5)
        connection.ping()
    result = AsyncResult(args.task_id, app=app)
    state = result.state
    # Celery says PENDING of any id it has no record of. With task_track_started a task has a record from
    # the moment a worker starts it until result_expires; a message still waiting in a queue has none yet.
    if state == "PENDING" and connection is not None and not connection.exists(app.backend.get_key_for_task(args.task_id)):
        raise UnknownTask(
            f"no task with id {args.task_id} is known to the result backend: it was never started "
            f"(a task still waiting in a queue has no record yet) or its record expired "
            f"(results are kept {settings.result_expires_s} s)"
        )
    record: dict[str, Any] = {"task_id": args.task_id, "state": state}
    failed = state == "FAILURE"
    if failed:
        record["error"] = {"type": type(result.result).__name__, "message": str(result.result)}
    elif result.info is not None:
        record["result"] = result.info
    if args.json:
        print_json(record)
    else:
        print(f"state\t{state}")
        if failed:
            print(f"error\t{record['error']['type']}: {record['error']['message']}")
        elif "result" in record:
            print("result\t" + json.dumps(record["result"], default=str))
    if failed:
        raise TaskFailed(record["error"]["type"], f"task {args.task_id} failed: {record['error']['message']}")
    return 0


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a ``UsageError`` (one line, exit 2) rather than an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see '{self.prog} --help')")


def key_value(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` (of ``--build-arg`` and ``--label``), as a pair."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


build_arg = key_value  # the name earlier versions had


def positive_int(text: str) -> int:
    """A whole number above zero."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a number above zero, got {text!r}")
    return value


def seconds(text: str) -> float:
    """A positive number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def package_version() -> str:
    """The installed version of the dockyard distribution."""
    try:
        return importlib.metadata.version("dockyard")
    except importlib.metadata.PackageNotFoundError:
        return "unknown (not installed)"


JSON_HELP = "print the records as JSON on stdout instead of a table"
TIMEOUT_HELP = "seconds to wait for the result (default: twice DOCKYARD_TASK_TIME_LIMIT_S)"


def command(sub: Any, name: str, summary: str, description: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with its one-line summary (in ``dockyard --help``) and its description (in its own help)."""
    found: argparse.ArgumentParser = sub.add_parser(name, help=summary, description=description or summary)
    return found


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="dockyard", description=DESCRIPTION)
    root.add_argument("--version", action="version", version=f"dockyard {package_version()}",
                      help="print the installed dockyard version and exit")
    sub = root.add_subparsers(dest="command", required=True, metavar="COMMAND", title="commands")

    up = command(sub, "up", "Provision the local farm, start a worker, build and push the example project.",
                 "Provision the local farm (Redis, Docker engines, registry), start a worker in the background, "
                 "build and push the example project, and print the pushed reference, its digest and timings.")
    up.add_argument("--hosts", type=positive_int, default=2, help="Docker engines to provision (default 2)")
    up.add_argument("--json", action="store_true", help="print the pushed image, digest and timings as JSON")
    up.add_argument("--team-env", type=Path, metavar="FILE",
                    help="the env file of the team the job is sent as (default: the farm's team-a.env)")
    up.set_defaults(run=cmd_up)

    down = command(sub, "down", "Stop the workers this farm's 'dockyard up' started.",
                   "Stop the workers 'dockyard up' started from this checkout with this key prefix "
                   "(DOCKYARD_KEY_PREFIX), whose pid files are in the state directory; workers another "
                   "checkout started there are left running and listed, unless --host or --all names them.")
    down.add_argument("--host", action="append", default=[], metavar="ID",
                      help="stop this host's worker, whoever started it (repeatable)")
    down.add_argument("--all", action="store_true", help="stop every worker whose pid file is in the state directory")
    down.add_argument("--json", action="store_true", help="print the stopped workers' host ids (and those left running) as JSON")
    down.set_defaults(run=cmd_down)

    hosts = command(sub, "hosts", "List the live build hosts, their load, the lineages they hold and their drain state.",
                    "List the build hosts that heartbeat: the tasks running now on the build lane (RUNNING) "
                    "and on the fast lane (FAST; '-' without a fast lane), concurrency, queue, Docker engine, "
                    "metrics URL, the lineages each built (most recent first), the age of its last heartbeat "
                    "(AGE) and its STATE: active, draining (drained, still holding work) or drained (drained "
                    "and empty; see 'dockyard drain'). An operator command: it needs the worker Redis user.")
    hosts.add_argument("--json", action="store_true", help=JSON_HELP)
    hosts.set_defaults(run=cmd_hosts)

    cache_parser = command(sub, "cache", "List or clear the build cache.")
    cache = cache_parser.add_subparsers(dest="cache_command", required=True, metavar="ACTION", title="actions")
    listing = command(cache, "list", "List the build cache: key, image id, host, age.")
    listing.add_argument("--json", action="store_true", help=JSON_HELP)
    listing.set_defaults(run=cmd_cache_list)
    clear = command(cache, "clear", "Remove build cache entries: the given keys, or all with --all.",
                    "Remove build cache entries: the given keys, or all with --all. Keys not in the cache "
                    "are named in the error (exit 1). An operator command: it needs the worker Redis user.")
    clear.add_argument("keys", nargs="*", metavar="KEY", help="cache keys, as 'dockyard cache list' shows them")
    clear.add_argument("--all", action="store_true", help="clear every build cache entry")
    clear.add_argument("--json", action="store_true", help="print how many entries were cleared, and the keys not found, as JSON")
    clear.set_defaults(run=cmd_cache_clear)

    team_commands.add_commands(sub, command, seconds, positive_int)
    drain_commands.add_commands(sub, command, seconds)
    doctor_commands.add_commands(sub, command)

    status = command(sub, "status", "Show a task's state, and its result or error.",
                     "Show a task's state, and its result or error. Exit 1 if the task failed, or if the "
                     "result backend holds nothing for the id (never started, or its record expired).")
    status.add_argument("task_id", metavar="TASK_ID", help="the Celery task id (of a build or push)")
    status.add_argument("--json", action="store_true", help="print the state and the result or error as JSON")
    status.set_defaults(run=cmd_status)

    cancel = command(sub, "cancel", "Cancel a queued or running build of your team.",
                     "Cancel a build (or any task) of the caller's team, by its task id ('dockyard build "
                     "--print-task-id' prints it on stderr): a queued build answers Cancelled without building; a running one is stopped "
                     "on its engine within seconds, unless other callers wait for the same build, which then goes "
                     "on for them. Only the task's own team can cancel it.")
    cancel.add_argument("task_id", metavar="TASK_ID", help="the Celery task id of the build")
    cancel.add_argument("--json", action="store_true", help="print the cancelled task id and the team as JSON")
    cancel.set_defaults(run=cmd_cancel)

    worker = command(sub, "worker", "Run a worker for this host in the foreground, with its fast lane beside it.",
                     "Run a worker in the foreground for this host: it consumes the shared build queue and the "
                     "host's own queue, and starts the host's fast lane beside it.")
    worker.add_argument("--concurrency", type=positive_int, default=None, help="builds at once (default DOCKYARD_WORKER_CONCURRENCY)")
    worker.add_argument("--host-id", default=None, help="this host's id, unique in the farm (default DOCKYARD_HOST_ID; one of the two is required)")
    worker.add_argument("--queue", action="append", default=[], metavar="QUEUE", help="an extra queue to consume (repeatable)")
    worker.add_argument("--loglevel", default="INFO", help="Celery's log level: DEBUG, INFO, WARNING, ERROR (default INFO)")
    worker.add_argument(
        "--lane", choices=["build", "fast"], default="build",
        help="build: the build worker, which starts the fast lane beside it (default); fast: the fast lane alone",
    )
    worker.set_defaults(run=cmd_worker)

    build = command(sub, "build", "Build an image on the farm (from the cache when possible); print the result as JSON.",
                    "Build IMAGE from the build context CONTEXT on the farm, from the cache when possible, as "
                    "'docker build' does. The build output is shown live on stderr; the result (image, tags, "
                    "image id, host, cache) is printed as JSON on stdout.")
    build.add_argument("image_name", metavar="IMAGE", help="image name without its tag, e.g. registry:5000/team/app")
    build.add_argument("context", nargs="?", default=None, metavar="CONTEXT", help="build context directory (default .)")
    build.add_argument("--path", default=None, metavar="CONTEXT", help="the build context, as the CONTEXT argument (older spelling)")
    build.add_argument("-f", "--file", "--dockerfile", dest="dockerfile", default="Dockerfile", metavar="FILE",
                       help="the Dockerfile, relative to the context, or 'auto' to generate one (default Dockerfile)")
    build.add_argument("-t", "--tag", action="append", default=[], metavar="TAG",
                       help="a tag (repeatable): the first is the image's tag, the others additional tags "
                            "(default: a UTC timestamp)")
    build.add_argument("--additional-tag", action="append", default=[], metavar="TAG",
                       help="an additional tag (repeatable; the same as a second --tag)")
    build.add_argument("--build-arg", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="a build-time variable (repeatable)")
    build.add_argument("--target", default=None, metavar="STAGE", help="the build stage to build")
    build.add_argument("--platform", default=None, metavar="PLATFORM",
                       help="the target platform, e.g. linux/amd64 (buildx: a comma-separated list)")
    build.add_argument("--no-cache", action="store_true", help="do not use the engine's layer cache when building")
    build.add_argument("--label", action="append", default=[], type=key_value, metavar="KEY=VALUE",
                       help="a label of the image (repeatable)")
    build.add_argument("--ignore-cache", action="store_true",
                       help="skip dockyard's build cache lookup (the fresh result is still stored)")
    build.add_argument("--backend", choices=["docker-py", "buildx"], default=None, help="the build backend (default docker-py)")
    build.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS", help=TIMEOUT_HELP)
    build.add_argument("--print-task-id", action="store_true",
                       help="print the build's task id on stderr once it is sent (for 'dockyard cancel'); "
                            "Ctrl-C cancels the build either way")
    build.add_argument("--json", action="store_true", help="print the result as JSON (the default output of build)")
    build.set_defaults(run=cmd_build)

    push = command(sub, "push", "Push an image from the host holding it; print the result as JSON.",
                   "Push IMAGE's tags from the farm host that holds the image and print the result (image, "
                   "tags, digest) as JSON. Without --username the workers' own registry login is used; the "
                   "password is never taken from the command line.")
    push.add_argument("image_name", metavar="IMAGE", help="image name without its tag, e.g. registry:5000/team/app")
    push.add_argument("-t", "--tag", action="append", default=[], metavar="TAG",
                      help="a tag to push (repeatable): the first is the main tag, the others additional tags "
                           "(default latest)")
    push.add_argument("--additional-tag", action="append", default=[], metavar="TAG",
                      help="an additional tag to push (repeatable; the same as a second --tag)")
    push.add_argument("--username", default=None, help="registry user (default: the workers' own registry login)")
    push.add_argument("--registry-url", default=None, metavar="HOST[:PORT]",
                      help="registry to log in to (default: the image name's registry)")
    password = push.add_mutually_exclusive_group()
    password.add_argument("--password-stdin", action="store_true",
                          help="read the registry password from stdin (a trailing newline is stripped)")
    password.add_argument(
        "--password-env", default=None, metavar="VAR",
        help=f"environment variable holding the password (default {PUSH_PASSWORD_ENV}, a variable this "
             "command reads for its own option, not a dockyard setting)",
    )
    password.add_argument("--password-file", default=None, metavar="PATH",
                          help="file holding the password (a trailing newline is stripped)")
    push.add_argument("--timeout", type=seconds, default=None, metavar="SECONDS", help=TIMEOUT_HELP)
    push.add_argument("--json", action="store_true", help="print the result as JSON (the default output of push)")
    push.set_defaults(run=cmd_push)
    return root


def fail(exc: BaseException, code: int, *, type_name: str | None = None, hint: str = "") -> int:
    """Report ``exc`` as the one line ``dockyard: Type: message`` on stderr; return ``code``."""
    message = " ".join(f"{exc} {hint}".split()) or "(no message)"
    print(f"dockyard: {type_name or type(exc).__name__}: {message}", file=sys.stderr)
    return code


def is_noperm(exc: redis.exceptions.RedisError) -> bool:
    """Redis refused a command or key to this ACL user (NOPERM), however redis-py or a script reports it."""
    return isinstance(exc, redis.exceptions.NoPermissionError) or "NOPERM" in str(exc)


def main(argv: list[str] | None = None) -> int:
    """Run one command; failures are one line on stderr and exit 1, or 2 for a wrong command line.

    Run as the program (no ``argv``), a failed command ends the process at once, without the
    interpreter's finalization: a task result still pending there (a push that timed out, say) would
    make Celery's ``AsyncResult.__del__`` print a traceback under the failure's one line.
    """
    code = run(argv)
    if argv is None and code != 0:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def run(argv: list[str] | None) -> int:
    """``main`` without the clean-up after a failure."""
    try:
        args = parser().parse_args(argv)
        code: int = args.run(args)
    except UsageError as exc:
        return fail(exc, 2)
    except pydantic.ValidationError as exc:
        if exc.title == "Settings":
            return fail(InvalidSettings.from_validation_error(exc), 1)
        return fail(exc, 1)
    except TaskFailed as exc:
        return fail(exc, 1, type_name=exc.type_name)
    except (DockyardError, InvalidSettings, InvalidTeams, CacheKeysNotFound, UnknownTask, StartRefused) as exc:
        return fail(exc, 1)
    except redis.exceptions.RedisError as exc:
        if is_noperm(exc):
            return fail(exc, 1, type_name="NoPermissionError", hint=NOPERM_HINT)
        return fail(exc, 1)
    except SERVICE_ERRORS as exc:
        cause = exc.__cause__ or exc.__context__
        if isinstance(cause, redis.exceptions.RedisError) and is_noperm(cause):
            return fail(cause, 1, type_name="NoPermissionError", hint=NOPERM_HINT)
        return fail(exc, 1)
    except KeyboardInterrupt:
        return fail(KeyboardInterrupt("interrupted"), 130, type_name="Interrupted")
    except Exception as exc:  # noqa: BLE001 - anything else is still one line, never a traceback
        return fail(exc, 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
