"""prefect-docker's signatures: written once as the binding's reference, kept by every step that offers them."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import pytest

from dockyard import steps
from dockyard.tasks import local_steps
from dockyard.tasks.request.arguments import BUILD_SIGNATURE, bind_build_arguments

# prefect_docker.deployments.steps as the reference has them (name, default; ... for none)
REFERENCE_BUILD = [
    ("image_name", ...), ("dockerfile", "Dockerfile"), ("tag", None), ("additional_tags", None),
    ("ignore_cache", False), ("persist_dockerfile", False), ("dockerfile_output_path", "Dockerfile.generated"),
    ("build_backend", "docker-py"), ("build_kwargs", ...),
]
REFERENCE_PUSH = [
    ("image_name", ...), ("tag", None), ("credentials", None), ("additional_tags", None),
    ("ignore_cache", False), ("build_backend", "docker-py"),
]


def shape(signature: inspect.Signature) -> list[tuple[str, Any]]:
    return [
        (name, ... if parameter.default is inspect.Parameter.empty else parameter.default)
        for name, parameter in signature.parameters.items()
    ]


def test_the_binding_reference_is_prefect_dockers_build_signature() -> None:
    assert shape(BUILD_SIGNATURE) == REFERENCE_BUILD
    assert list(BUILD_SIGNATURE.parameters.values())[-1].kind is inspect.Parameter.VAR_KEYWORD


@pytest.mark.parametrize("step", [steps.build_docker_image, local_steps.build_docker_image])
def test_each_build_step_keeps_the_reference_signature(step: Callable[..., Any]) -> None:
    assert shape(inspect.signature(step)) == REFERENCE_BUILD


@pytest.mark.parametrize("step", [steps.push_docker_image, local_steps.push_docker_image])
def test_each_push_step_keeps_the_reference_signature(step: Callable[..., Any]) -> None:
    assert shape(inspect.signature(step)) == REFERENCE_PUSH


def test_unknown_build_arguments_are_gathered_as_build_kwargs() -> None:
    bound = bind_build_arguments({"image_name": "app", "target": "t", "buildargs": {"X": "1"}})
    assert bound["build_kwargs"] == {"target": "t", "buildargs": {"X": "1"}}
    assert bound["dockerfile"] == "Dockerfile" and bound["tag"] is None
