"""What dockyard does: build and push, with prefect-docker's interface."""

from dockyard.tasks.engine.build import build_docker_image
from dockyard.tasks.engine.push import push_docker_image

__all__ = ["build_docker_image", "push_docker_image"]
