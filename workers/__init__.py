"""Where and how dockyard runs: the Celery app, workers, the CLI and the local farm."""
