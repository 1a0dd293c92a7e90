"""A running build's watch on its task's cancel key: stop the build on the engine, unless others wait for it.

While the owner of a build key builds, a thread looks every ``CANCEL_POLL_S``
(one EXISTS) at the cancel key of the owner's task, in the team of the queue
the task came from (``dockyard.tasks.teams.cancel``). Once it is there: with no
other call waiting for the key (``dockyard.tasks.cache.waiters``), the build is
stopped on the engine (``dockyard.tasks.engine.build_stop``) and raises
``Cancelled``; with some, the build goes on for them (the canceller's own task
answers ``Cancelled`` when it ends), and is stopped when the last of them leaves.
"""

from __future__ import annotations

import logging
import threading
from types import TracebackType

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.cache.waiters import others_waiting
from dockyard.tasks.engine.build_stop import BuildStop
from dockyard.tasks.teams.cancel import CANCEL_POLL_S, is_cancelled

logger = logging.getLogger("dockyard.cancel")


class CancelWatch:
    """For the life of a ``with`` block: ``stop`` the build of ``cache_key`` once ``task_id`` is cancelled
    and no one else waits for it. ``cancelled``: the cancel was seen; ``stopped``: the build was stopped."""

    def __init__(
        self, connection: redis.Redis, settings: Settings, *, task_id: str, cache_key: str,
        poll_s: float = CANCEL_POLL_S,
    ) -> None:
        self.connection, self.settings = connection, settings
        self.task_id, self.cache_key, self.poll_s = task_id, cache_key, poll_s
        self.stop = BuildStop()
        self.cancelled = threading.Event()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"cancel-{task_id}", daemon=True)

    @property
    def stopped(self) -> bool:
        return self.stop.requested.is_set()

    def look(self) -> bool:
        """One look: stop the build if its task is cancelled and no one else waits; whether it stopped it."""
        if not self.cancelled.is_set():
            if not is_cancelled(self.connection, self.settings, self.task_id):
                return False
            self.cancelled.set()
        waiting = others_waiting(self.connection, self.settings, self.cache_key)
        if waiting:
            logger.info("task %s is cancelled; its build goes on for the %d other calls waiting for it", self.task_id, waiting)
            return False
        logger.info("task %s is cancelled and no one else waits: stopping its build on the engine", self.task_id)
        self.stop.stop()
        return True

    def _run(self) -> None:
        while not self._done.wait(self.poll_s):
            try:
                if self.look():
                    return
            except redis.RedisError as exc:  # a blip: the next look may answer
                logger.debug("cancel watch of %s: %s", self.task_id, exc)

    def __enter__(self) -> CancelWatch:
        self._thread.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._done.set()
        self._thread.join()
