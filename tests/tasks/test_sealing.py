"""Sealed credentials (no services)."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from tasks.errors import InvalidInput
from tasks.sealing import is_sealed, seal, unseal


def test_seal_round_trip_hides_the_password() -> None:
    credentials = {"username": "u", "password": "hunter2", "registry_url": "r"}
    sealed = seal(credentials, SecretStr("k"))
    assert is_sealed(sealed) and "hunter2" not in json.dumps(sealed)
    assert unseal(sealed, SecretStr("k")) == credentials


def test_wrong_key_or_no_key_is_refused() -> None:
    sealed = seal({"username": "u", "password": "p"}, SecretStr("k"))
    with pytest.raises(InvalidInput, match="could not be opened"):
        unseal(sealed, SecretStr("other"))
    with pytest.raises(InvalidInput, match="DOCKYARD_SECRET_KEY"):
        seal({"username": "u", "password": "p"}, None)
