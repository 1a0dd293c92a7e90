"""Sealing secrets so that only the farm's workers can open them, for a limited time.

Callers hold the farm's public key (``seal_public_key``), workers the private
key (``seal_private_key``). A seal is an ECIES-style box made with the
``cryptography`` package: an ephemeral X25519 key agreed with the farm's key,
HKDF-SHA256, then AES-256-GCM over ``{"exp", "data"}``, with what the seal is
bound to (its team, and the repository or use it was made for) as
authenticated data. A caller can seal but cannot open anything, its own seals
or another caller's; a worker refuses a seal past its expiry, and one opened
for another binding (a seal lifted from another team's message) fails.

    python -m dockyard.tasks.request.sealing    # prints a new key pair as DOCKYARD_SEAL_* lines
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from pydantic import SecretStr

from dockyard.tasks.errors import InvalidInput

SEALED_KEY = "sealed"
CONTEXT = b"dockyard-seal-v1"
_RAW = serialization.Encoding.Raw


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text.encode())


def generate_keypair() -> tuple[str, str]:
    """A new (public, private) key pair, each as URL-safe base64 of its 32 raw bytes."""
    private = X25519PrivateKey.generate()
    public = private.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    secret = private.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    return _b64(public), _b64(secret)


def _box_key(shared: bytes, ephemeral: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=ephemeral, info=CONTEXT).derive(shared)


def _bound(binding: Mapping[str, str | None]) -> bytes:
    """The authenticated data of a seal: the context, then its binding as canonical JSON."""
    return CONTEXT + b":" + json.dumps(dict(binding), sort_keys=True, separators=(",", ":")).encode()


def seal(data: Mapping[str, Any], public_key: str | None, *, ttl_s: float, bound_to: Mapping[str, str | None]) -> dict[str, str]:
    """``data`` as an opaque token only the farm's workers can open, for ``ttl_s`` seconds, and only
    for ``bound_to`` (for example the team and the repository it is for)."""
    if not public_key:
        raise InvalidInput(
            "Secrets need DOCKYARD_SEAL_PUBLIC_KEY (the farm's public key), so they never travel in clear."
        )
    try:
        farm = X25519PublicKey.from_public_bytes(_unb64(public_key))
    except ValueError as exc:
        raise InvalidInput("DOCKYARD_SEAL_PUBLIC_KEY is not a valid key.") from exc
    ephemeral = X25519PrivateKey.generate()
    ephemeral_public = ephemeral.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)
    nonce = os.urandom(12)
    plaintext = json.dumps({"exp": time.time() + ttl_s, "data": dict(data)}).encode()
    box = AESGCM(_box_key(ephemeral.exchange(farm), ephemeral_public)).encrypt(nonce, plaintext, _bound(bound_to))
    return {SEALED_KEY: _b64(ephemeral_public + nonce + box)}


def unseal(sealed: Mapping[str, str], private_key: SecretStr | None, *, bound_to: Mapping[str, str | None]) -> dict[str, Any]:
    """The data back from ``seal`` with the same ``bound_to``; ``InvalidInput`` without the farm's
    private key, for another binding, or once expired."""
    if private_key is None or not private_key.get_secret_value():
        raise InvalidInput("Only a worker with DOCKYARD_SEAL_PRIVATE_KEY can open sealed secrets.")
    try:
        raw = _unb64(sealed[SEALED_KEY])
        ephemeral_public, nonce, box = raw[:32], raw[32:44], raw[44:]
        farm = X25519PrivateKey.from_private_bytes(_unb64(private_key.get_secret_value()))
        shared = farm.exchange(X25519PublicKey.from_public_bytes(ephemeral_public))
        opened = json.loads(AESGCM(_box_key(shared, ephemeral_public)).decrypt(nonce, box, _bound(bound_to)))
    except (InvalidTag, KeyError, TypeError, ValueError) as exc:
        raise InvalidInput(
            f"Sealed secrets could not be opened for {_describe(bound_to)} with this farm's private key "
            "(sealed for another team or request, or not by this farm's key)."
        ) from exc
    if not isinstance(opened, dict) or float(opened.get("exp", 0)) < time.time():
        raise InvalidInput("Sealed secrets have expired: seal them again (DOCKYARD_SEAL_TTL_S).")
    data: dict[str, Any] = opened["data"]
    return data


def credentials_binding(team: str, repository: str | None) -> dict[str, str | None]:
    """What sealed push credentials are bound to: their team and, when the caller knew it, the repository."""
    return {"team": team, "use": "push-credentials", "repository": repository}


def _describe(binding: Mapping[str, str | None]) -> str:
    return ", ".join(f"{name} {value}" for name, value in sorted(binding.items()) if value is not None) or "no binding"


if __name__ == "__main__":
    public, private = generate_keypair()
    print(f"DOCKYARD_SEAL_PUBLIC_KEY={public}")
    print(f"DOCKYARD_SEAL_PRIVATE_KEY={private}")
