"""Starting a worker: the shared build queue plus this host's own queue, named with -Q; or the
host's fast lane, its fast queue alone on a small threads pool (see ``dockyard.workers.fast_worker``)."""

from __future__ import annotations

from dockyard.config.settings import Settings, team_queues


def worker_argv(
    settings: Settings, *, concurrency: int | None = None, loglevel: str = "INFO", extra_queues: list[str] | None = None
) -> list[str]:
    """The ``celery worker`` arguments for this host: each declared team's shared queue and host
    queue (``<queue>@<team>``), and any extra (taken as given)."""
    queues = [*team_queues(settings, settings.build_queue), *team_queues(settings, settings.host_queue), *(extra_queues or [])]
    return [
        "worker",
        "--queues", ",".join(queues),
        "--hostname", f"{settings.host_id}@%h",
        "--concurrency", str(concurrency or settings.worker_concurrency),
        "--pool", "prefork",
        "--task-events",
        "--loglevel", loglevel,
    ]


def fast_worker_argv(settings: Settings, *, loglevel: str = "INFO") -> list[str]:
    """The ``celery worker`` arguments of this host's fast lane: its fast queue, threads, its own node name."""
    return [
        "worker",
        "--queues", ",".join(team_queues(settings, settings.fast_queue)),
        "--hostname", f"{settings.host_id}.fast@%h",
        "--concurrency", str(settings.fast_concurrency),
        "--pool", "threads",
        "--task-events",
        "--without-gossip", "--without-mingle",
        "--loglevel", loglevel,
    ]


def run_fast_worker(settings: Settings, *, loglevel: str = "INFO") -> None:
    """Run this host's fast lane worker in this process until it is stopped."""
    from dockyard.tasks.farm.lane import enter_fast_lane
    from dockyard.workers.app import app

    enter_fast_lane()
    app.worker_main(fast_worker_argv(settings, loglevel=loglevel))


def run_worker(
    settings: Settings, *, concurrency: int | None = None, loglevel: str = "INFO", extra_queues: list[str] | None = None
) -> None:
    """Run a worker in this process until it is stopped."""
    from dockyard.workers.app import app

    app.worker_main(worker_argv(settings, concurrency=concurrency, loglevel=loglevel, extra_queues=extra_queues))
