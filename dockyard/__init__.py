"""dockyard: a build farm for container images on Celery and Redis.

The distribution's importable name, so a ``prefect.yaml`` step can say
``requires: dockyard``; the steps are in ``dockyard.steps``. The code lives
in ``config``, ``tasks`` and ``workers``.
"""

from __future__ import annotations

__version__ = "0.1.0"
