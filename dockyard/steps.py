"""prefect-docker's deployment steps, run on the farm (see ``tasks.prefect_steps``)."""

from __future__ import annotations

from tasks.prefect_steps import build_docker_image, push_docker_image

__all__ = ["build_docker_image", "push_docker_image"]
