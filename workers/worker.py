"""Starting a worker: the shared build queue plus this host's own queue, named with -Q."""

from __future__ import annotations

from config.settings import Settings


def worker_argv(settings: Settings, *, concurrency: int | None = None, loglevel: str = "INFO") -> list[str]:
    """The ``celery worker`` arguments for this host."""
    return [
        "worker",
        "--queues", f"{settings.build_queue},{settings.host_queue}",
        "--hostname", f"{settings.host_id}@%h",
        "--concurrency", str(concurrency or settings.worker_concurrency),
        "--pool", "prefork",
        "--task-events",
        "--loglevel", loglevel,
    ]


def run_worker(settings: Settings, *, concurrency: int | None = None, loglevel: str = "INFO") -> None:
    """Run a worker in this process until it is stopped."""
    from workers.app import app

    app.worker_main(worker_argv(settings, concurrency=concurrency, loglevel=loglevel))
