"""The ``dockyard`` command: bring up a local farm, run a worker, build and push.

Every failure ends in one line on stderr, ``dockyard: Type: message``, and
exit code 1 (the operation failed) or 2 (the command line is wrong).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import celery.exceptions
import kombu.exceptions
import redis.exceptions

from dockyard.config.settings import get_settings
from dockyard.tasks.errors import DockyardError

EXAMPLE_DIR = Path(__file__).with_name("example")
PUSH_PASSWORD_ENV = "DOCKYARD_PUSH_PASSWORD"

# failures of the farm's services, reported in one line (exit 1) rather than a traceback
SERVICE_ERRORS: tuple[type[Exception], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    celery.exceptions.TimeoutError,
    kombu.exceptions.OperationalError,
)


class UsageError(Exception):
    """The command line is wrong (exit 2); nothing was done."""


class CacheKeysNotFound(Exception):
    """Some cache keys given to ``dockyard cache clear`` are not in the cache (exit 1)."""


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

    registry = settings.registry_url or "127.0.0.1:5000"
    credentials = {
        "username": settings.registry_username or "",
        "password": settings.registry_password.get_secret_value() if settings.registry_password else "",
        "registry_url": registry,
    }
    job = build_and_push(
        f"{registry}/dockyard/example", credentials=credentials,
        path=str(EXAMPLE_DIR), buildargs={"BASE": settings.auto_base_image},
    ).apply_async()
    pushed = job.get(timeout=settings.task_time_limit_s)
    built = job.parent.get(timeout=5)
    done = time.monotonic()
    print(f"pushed  {pushed['image']}")
    print(f"digest  {pushed['digest']}")
    print(f"image   {built['image_id']} built on host {built['host']}")
    print(
        f"timings provision {provisioned - started:.1f} s, worker start {ready - provisioned:.1f} s, "
        f"build {built['duration_s']:.2f} s, push {pushed['duration_s']:.2f} s, "
        f"build+push round trip {done - ready:.2f} s"
    )
    print(f"stop the worker with `dockyard down`; its log is in {Path(settings.farm_dir) / 'workers'}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    """Stop the workers `dockyard up` started."""
    from dockyard.workers import farm

    stopped = farm.stop_workers(get_settings())
    print("stopped " + (", ".join(stopped) if stopped else "nothing"))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run a worker in the foreground for this host (its shared and host queues), and its fast lane beside it."""
    # before the settings are first read: the host record shows what the worker really runs with
    if args.host_id:
        os.environ["DOCKYARD_HOST_ID"] = args.host_id
    if args.concurrency:
        os.environ["DOCKYARD_WORKER_CONCURRENCY"] = str(args.concurrency)
    get_settings.cache_clear()
    from dockyard.workers import fast_worker
    from dockyard.workers.worker import run_fast_worker, run_worker

    if args.lane == "fast":
        run_fast_worker(get_settings(), loglevel=args.loglevel)
        return 0
    fast_worker.configure(args.loglevel)  # started once the build worker is reconciled (dockyard.workers.heartbeat)
    try:
        run_worker(get_settings(), concurrency=args.concurrency, loglevel=args.loglevel, extra_queues=args.queue)
    finally:
        fast_worker.stop()
    return 0


def cmd_build(args: argparse.Namespace) -> int:
    """Build on the farm (from the cache when possible) and print the result as JSON."""
    from dockyard.tasks.client import build

    params: dict[str, Any] = {"dockerfile": args.dockerfile, "path": str(Path(args.path).resolve())}
    if args.tag:
        params["tag"] = args.tag
    if args.additional_tag:
        params["additional_tags"] = args.additional_tag
    if args.build_arg:
        params["buildargs"] = dict(args.build_arg)
    if args.backend:
        params["build_backend"] = args.backend
    result = build(args.image_name, on_output=_to_stderr, timeout_s=args.timeout, **params)
    print(json.dumps(result, indent=2))
    return 0


def _to_stderr(text: str) -> None:
    sys.stderr.write(text)
    sys.stderr.flush()


def cmd_push(args: argparse.Namespace) -> int:
    """Push from the host holding the image and print the result as JSON."""
    from dockyard.tasks.client import push

    credentials = push_credentials(args)
    try:
        result = push(
            args.image_name, tag=args.tag, additional_tags=args.additional_tag or None,
            credentials=credentials, timeout_s=args.timeout,
        )
    except celery.exceptions.TimeoutError as exc:
        waited = args.timeout or 2 * get_settings().task_time_limit_s
        raise celery.exceptions.TimeoutError(
            f"No result for the push of {args.image_name}:{args.tag or 'latest'} within {waited:g} s "
            "(is a worker up and consuming?)"
        ) from exc
    print(json.dumps(result, indent=2))
    return 0


def push_credentials(args: argparse.Namespace) -> dict[str, str] | None:
    """Registry credentials from --username, --registry-url and a password never on the command line.

    The password comes from --password-file (trailing newline stripped) or an
    environment variable (--password-env, default DOCKYARD_PUSH_PASSWORD).
    Without --username there are none: the workers' own registry login is used.
    """
    if args.username is None:
        given = [flag for flag, value in (
            ("--registry-url", args.registry_url), ("--password-env", args.password_env),
            ("--password-file", args.password_file),
        ) if value is not None]
        if given:
            raise UsageError(f"{', '.join(given)} given without --username")
        return None
    if not args.username:
        raise UsageError("--username is empty")
    if args.password_file is not None:
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
                f"--username needs a password: set {variable}, or give --password-env VAR or --password-file PATH"
            )
    credentials = {"username": args.username, "password": password}
    if args.registry_url:
        credentials["registry_url"] = args.registry_url
    else:
        from dockyard.tasks.request.naming import registry_of

        if (registry := registry_of(args.image_name)) is not None:
            credentials["registry_url"] = registry
    return credentials


def cmd_hosts(args: argparse.Namespace) -> int:
    """List the build hosts that heartbeat, with their load (tasks running now) and the lineages they hold."""
    from dockyard.tasks.farm.hosts import live_hosts
    from dockyard.tasks.keyspace import redis_for
    from dockyard.tasks.routing.placement import held_lineages
    from dockyard.workers.app import app

    settings = get_settings()
    active = app.control.inspect(timeout=1.0).active() or {}
    running = {node.split("@", 1)[0]: len(tasks) for node, tasks in active.items()}
    connection = redis_for(settings)
    records = live_hosts(connection, settings)
    print("HOST\tRUNNING\tCONCURRENCY\tQUEUE\tDOCKER\tMETRICS\tLINEAGES")
    for record in records:
        lineages = held_lineages(connection, settings, record["host"])
        print(
            f"{record['host']}\t{running.get(record['host'], 0)}\t{record['concurrency']}\t"
            f"{record['queue']}\t{record['docker_host']}\t{record.get('metrics') or '-'}\t"
            f"{'; '.join(lineages) or '-'}"
        )
    return 0


def cmd_cache_list(args: argparse.Namespace) -> int:
    """List the build cache: key, image id, host, age."""
    import time

    from dockyard.tasks.cache.single_flight import build_cache
    from dockyard.tasks.keyspace import redis_for

    settings = get_settings()
    entries = sorted(build_cache(redis_for(settings), settings).entries())
    print("KEY\tIMAGE ID\tHOST\tAGE (s)")
    for cache_key, entry in entries:
        print(f"{cache_key}\t{entry.value['image_id']}\t{entry.host}\t{time.time() - entry.created_at:.0f}")
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
    print(f"cleared {removed} cache entr{'y' if removed == 1 else 'ies'}")
    if missing:
        raise CacheKeysNotFound(f"not in the build cache: {', '.join(missing)}")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    """Show a task's state, and its result or error."""
    from celery.result import AsyncResult

    from dockyard.tasks.keyspace import connect_for
    from dockyard.workers.app import app

    settings = get_settings()
    backend = settings.effective_result_backend
    if backend.startswith(("redis://", "rediss://", "sentinel://")):
        # the result backend retries a Redis outage for minutes; say so at once instead
        connect_for(settings, backend, socket_connect_timeout=5, socket_timeout=5).ping()
    result = AsyncResult(args.task_id, app=app)
    print(f"state\t{result.state}")
    if result.state == "FAILURE":
        print(f"error\t{type(result.result).__name__}: {result.result}")
        return 1
    if result.info is not None:
        print("result\t" + json.dumps(result.info, default=str))
    return 0


class Parser(argparse.ArgumentParser):
    """An argument parser whose errors are a ``UsageError`` (one line, exit 2) rather than an exit."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{message} (see `{self.prog} --help`)")


def build_arg(text: str) -> tuple[str, str]:
    """``KEY=VALUE`` of ``--build-arg``, as a pair."""
    name, sep, value = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return name, value


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


def parser() -> argparse.ArgumentParser:
    root = Parser(prog="dockyard", description=__doc__)
    sub = root.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help=cmd_up.__doc__)
    up.add_argument("--hosts", type=int, default=2, help="Docker engines to provision (default 2)")
    up.set_defaults(run=cmd_up)

    sub.add_parser("down", help=cmd_down.__doc__).set_defaults(run=cmd_down)
    sub.add_parser("hosts", help=cmd_hosts.__doc__).set_defaults(run=cmd_hosts)

    cache = sub.add_parser("cache", help="List or clear the build cache").add_subparsers(dest="cache_command", required=True)
    cache.add_parser("list", help=cmd_cache_list.__doc__).set_defaults(run=cmd_cache_list)
    clear = cache.add_parser("clear", help=cmd_cache_clear.__doc__)
    clear.add_argument("keys", nargs="*", help="cache keys, as `dockyard cache list` shows them")
    clear.add_argument("--all", action="store_true", help="clear every build cache entry")
    clear.set_defaults(run=cmd_cache_clear)

    status = sub.add_parser("status", help=cmd_status.__doc__)
    status.add_argument("task_id")
    status.set_defaults(run=cmd_status)

    worker = sub.add_parser("worker", help=cmd_worker.__doc__)
    worker.add_argument("--concurrency", type=positive_int, default=None, help="builds at once (default DOCKYARD_WORKER_CONCURRENCY)")
    worker.add_argument("--host-id", default=None, help="this host's id (default DOCKYARD_HOST_ID or the hostname)")
    worker.add_argument("--queue", action="append", default=[], help="an extra queue to consume (repeatable)")
    worker.add_argument("--loglevel", default="INFO")
    worker.add_argument(
        "--lane", choices=["build", "fast"], default="build",
        help="build: the build worker, which starts the fast lane beside it (default); fast: the fast lane alone",
    )
    worker.set_defaults(run=cmd_worker)

    build = sub.add_parser("build", help=cmd_build.__doc__)
    build.add_argument("image_name")
    build.add_argument("--path", default=".", help="build context (default .)")
    build.add_argument("--dockerfile", default="Dockerfile", help='Dockerfile, or "auto"')
    build.add_argument("--tag", default=None, help="default: a UTC timestamp")
    build.add_argument("--additional-tag", action="append", default=[])
    build.add_argument("--build-arg", action="append", default=[], type=build_arg, metavar="KEY=VALUE")
    build.add_argument("--backend", choices=["docker-py", "buildx"], default=None, help="default docker-py")
    build.add_argument("--timeout", type=seconds, default=None, help="seconds to wait (default twice DOCKYARD_TASK_TIME_LIMIT_S)")
    build.set_defaults(run=cmd_build)

    push = sub.add_parser("push", help=cmd_push.__doc__)
    push.add_argument("image_name")
    push.add_argument("--tag", default=None)
    push.add_argument("--additional-tag", action="append", default=[])
    push.add_argument("--username", default=None, help="registry user (default: the workers' own registry login)")
    push.add_argument("--registry-url", default=None, help="registry to log in to (default: the image name's registry)")
    password = push.add_mutually_exclusive_group()
    password.add_argument(
        "--password-env", default=None, metavar="VAR",
        help=f"environment variable holding the password (default {PUSH_PASSWORD_ENV})",
    )
    password.add_argument("--password-file", default=None, metavar="PATH", help="file holding the password")
    push.add_argument("--timeout", type=seconds, default=None, help="seconds to wait (default twice DOCKYARD_TASK_TIME_LIMIT_S)")
    push.set_defaults(run=cmd_push)
    return root


def fail(exc: BaseException, code: int) -> int:
    """Report ``exc`` as the one line ``dockyard: Type: message`` on stderr; return ``code``."""
    message = " ".join(str(exc).split()) or "(no message)"
    print(f"dockyard: {type(exc).__name__}: {message}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run one command; failures are one line on stderr and exit 1, or 2 for a wrong command line."""
    try:
        args = parser().parse_args(argv)
        code: int = args.run(args)
    except UsageError as exc:
        return fail(exc, 2)
    except (DockyardError, CacheKeysNotFound) as exc:
        return fail(exc, 1)
    except SERVICE_ERRORS as exc:
        return fail(exc, 1)
    return code


if __name__ == "__main__":
    sys.exit(main())
