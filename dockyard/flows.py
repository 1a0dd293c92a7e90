"""Using the farm from inside a Prefect flow: build then push as one Prefect task.

    from prefect import flow
    from dockyard.flows import build_and_push_on_farm

    @flow
    def release() -> dict:
        return build_and_push_on_farm("127.0.0.1:5000/team/app", path=".", tag="v1")

The build output lines go to the flow's logs as the build runs.
Needs Prefect: install dockyard with its ``prefect`` extra, from your dockyard
checkout or wheel (dockyard is not published on PyPI), e.g.
``pip install '<dockyard checkout or wheel>[prefect]'`` (``pip install -e '.[prefect]'``
in a checkout).
"""

from __future__ import annotations

from typing import Any

try:
    from prefect import get_run_logger, task
except ImportError as exc:  # pragma: no cover - depends on what is installed
    raise ImportError(
        "dockyard.flows needs Prefect: install dockyard with its prefect extra from your dockyard checkout "
        "or wheel, e.g. pip install '<dockyard checkout or wheel>[prefect]' (pip install -e '.[prefect]' "
        "in a checkout); dockyard is not published on PyPI"
    ) from exc

from dockyard.tasks import client


@task(name="dockyard build and push")
def build_and_push_on_farm(
    image_name: str,
    *,
    credentials: dict[str, Any] | None = None,
    **build_params: Any,
) -> dict[str, Any]:
    """Enqueue the build, stream its output to the run's logs, then push from the image's host."""
    logger = get_run_logger()

    def log_line(text: str) -> None:
        if text.strip():
            logger.info(text.rstrip())

    built = client.build(image_name, on_output=log_line, **build_params)
    logger.info("built %s (%s) on %s, cache %s", built["image"], built["image_id"], built["host"], built["cache"])
    pushed = client.push(
        built["image_name"], tag=built["tag"], additional_tags=built["additional_tags"], credentials=credentials,
    )
    logger.info("pushed %s, digest %s", pushed["image"], pushed.get("digest"))
    return {"build": built, "push": pushed}
