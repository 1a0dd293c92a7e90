"""What dockyard does: build and push on a farm, with prefect-docker's interface.

The caller's API is ``dockyard.tasks.client``; the Celery tasks are
``dockyard.tasks.celery_tasks``; prefect-docker's steps on one engine are
``dockyard.tasks.local_steps``. Subpackages, lowest first: ``request``
(what a request is), ``context``, ``cache``, ``registry``, ``engine``,
``farm`` (hosts and their images), ``routing`` and ``worker``. Importing
this package loads nothing else.
"""
