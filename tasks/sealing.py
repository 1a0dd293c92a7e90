"""Sealing registry credentials so they never travel or rest in clear in Redis.

The caller seals the credentials dict with the farm's shared ``secret_key``
(Fernet: AES-128-CBC with an HMAC); the worker unseals it in memory.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from cryptography.fernet import Fernet, InvalidToken
from pydantic import SecretStr

from tasks.errors import InvalidInput

SEALED_KEY = "sealed"


def _fernet(secret_key: SecretStr | None) -> Fernet:
    if secret_key is None or not secret_key.get_secret_value():
        raise InvalidInput(
            "Credentials need DOCKYARD_SECRET_KEY, shared by callers and workers, "
            "so they are never sent in clear."
        )
    digest = hashlib.sha256(secret_key.get_secret_value().encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def seal(credentials: Mapping[str, Any], secret_key: SecretStr | None) -> dict[str, str]:
    """The credentials as an opaque token to put in a task message."""
    token = _fernet(secret_key).encrypt(json.dumps(dict(credentials)).encode())
    return {SEALED_KEY: token.decode()}


def is_sealed(value: object) -> bool:
    return isinstance(value, Mapping) and set(value) == {SEALED_KEY}


def unseal(sealed: Mapping[str, str], secret_key: SecretStr | None) -> dict[str, Any]:
    """The credentials back from ``seal``; ``InvalidInput`` if the key does not match."""
    try:
        data = _fernet(secret_key).decrypt(sealed[SEALED_KEY].encode())
    except (InvalidToken, KeyError, TypeError, ValueError) as exc:
        raise InvalidInput("Sealed credentials could not be opened with this farm's secret key.") from exc
    credentials: dict[str, Any] = json.loads(data)
    return credentials
