"""What dockyard does: build and push, with prefect-docker's interface."""

from tasks.build import build_docker_image
from tasks.push import push_docker_image

__all__ = ["build_docker_image", "push_docker_image"]
