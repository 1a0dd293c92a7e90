"""dockyard: a build farm for container images on Celery and Redis.

The distribution's one importable name: ``dockyard.steps`` (prefect-docker's
steps on the farm), ``dockyard.flows`` (Prefect flows), and under it
``dockyard.tasks``, ``dockyard.config`` and ``dockyard.workers``, installed
from the checkout's top-level ``tasks/``, ``config/`` and ``workers/``.
"""

from __future__ import annotations

__version__ = "0.1.0"
