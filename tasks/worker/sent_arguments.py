"""A build sent by name with prefect-docker's raw arguments: prepared on the worker, with the worker's checks."""

from __future__ import annotations

from typing import Any

from dockyard.config.settings import Settings
from dockyard.tasks.context.materialize import under_shared_root
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec


def prepare_sent_arguments(params: dict[str, Any], settings: Settings) -> BuildSpec:
    """A build sent by name with prefect-docker's arguments, prepared on the worker with its checks.

    ``path`` must lie under the worker's ``shared_context_root``; nothing is
    read from the worker's environment or files for the caller: build
    secrets and ``persist_dockerfile`` are refused (send a prepared spec).
    """
    if params.get("secrets"):
        raise InvalidInput("Build secrets are read on the caller: send a spec made by dockyard.tasks.client, not raw arguments.")
    if params.get("persist_dockerfile"):
        raise InvalidInput("persist_dockerfile writes on the caller's disk: it is refused in a message.")
    if not isinstance(params.get("path"), str):
        raise InvalidInput("A build sent with raw arguments needs path, a directory under the worker's shared root.")
    under_shared_root(params["path"], settings)
    # on the worker: no digest cache of its own (digest_cache_dir "" reads every file)
    spec, packed = prepare_build(params, settings.model_copy(update={"context_transport": "path", "digest_cache_dir": ""}))
    packed.close()
    return spec
