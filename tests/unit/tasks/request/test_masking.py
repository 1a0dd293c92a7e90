"""dockyard.tasks.request.masking: what logs and events show of task arguments."""

from __future__ import annotations

from dockyard.tasks.request.masking import masked_repr
from dockyard.tasks.request.sealing import credentials_binding, generate_keypair, seal

KEY, _PRIVATE = generate_keypair()  # the farm's public key seals
BINDING = credentials_binding("default", "team/app")
PASSWORD = "hunter2-password"


def test_sealed_credentials_are_masked() -> None:
    sealed = seal({"username": "u", "password": PASSWORD, "registry_url": "r"}, KEY, ttl_s=60, bound_to=BINDING)
    shown = masked_repr({"image_name": "team/app", "credentials": sealed})
    assert sealed["sealed"] not in shown
    assert "'credentials': '***'" in shown


def test_plain_credentials_are_masked() -> None:
    shown = masked_repr({"credentials": {"username": "u", "password": PASSWORD}})
    assert PASSWORD not in shown and "'credentials': '***'" in shown


def test_absent_credentials_show_as_none() -> None:
    assert masked_repr({"credentials": None}) == "{'credentials': None}"


def test_sealed_build_secrets_are_masked() -> None:
    sealed = seal({"token": "c2VjcmV0"}, KEY, ttl_s=60, bound_to=BINDING)
    shown = masked_repr({"sealed_secrets": sealed})
    assert sealed["sealed"] not in shown and "'sealed_secrets': '***'" in shown


def test_a_spec_is_summarised_to_image_and_key_with_its_secrets_masked() -> None:
    sealed = seal({"token": "c2VjcmV0"}, KEY, ttl_s=60, bound_to=BINDING)
    spec = {
        "image_name": "team/app", "tag": "v1", "key": "abc123",
        "sealed_secrets": sealed, "build_kwargs": {"buildargs": {"TOKEN": PASSWORD}},
    }
    shown = masked_repr({"spec": spec})
    assert shown == "{'spec': {'image': 'team/app:v1', 'key': 'abc123', 'sealed_secrets': '***'}}"


def test_a_spec_without_secrets_says_none() -> None:
    shown = masked_repr({"spec": {"image_name": "team/app", "tag": "v1", "key": "k"}})
    assert "'sealed_secrets': None" in shown


def test_other_arguments_are_shown_as_they_are() -> None:
    assert masked_repr({"image_name": "team/app", "tag": "v1", "push": False}) == (
        "{'image_name': 'team/app', 'tag': 'v1', 'push': False}"
    )
