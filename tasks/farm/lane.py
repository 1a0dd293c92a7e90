"""Which lane this worker process serves: the build lane (default) or its host's fast lane.

A host runs two Celery workers (``dockyard.workers.fast_worker``): the build worker
(prefork, the shared build queue and the host queue) and the fast worker
(threads, the host's fast queue). Code that behaves differently in the fast
lane (what a task may do there, where in-flight messages are recorded) asks
``in_fast_lane()``; ``dockyard worker --lane fast`` calls ``enter_fast_lane()``
before the worker starts.
"""

from __future__ import annotations

_state = {"fast": False}


def enter_fast_lane() -> None:
    """This process serves its host's fast lane from now on."""
    _state["fast"] = True


def in_fast_lane() -> bool:
    return _state["fast"]
