"""dockyard.tasks.request.sealing: callers seal with the farm's public key, only the private key opens, seals expire (no services)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest
from pydantic import SecretStr

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.sealing import credentials_binding, generate_keypair, seal, unseal
from tests.probes import is_sealed

CREDENTIALS = {"username": "u", "password": "s3cret-pw", "registry_url": "127.0.0.1:5000"}
BINDING = credentials_binding("default", "127.0.0.1:5000/team/app")  # what a direct push's credentials are bound to


def test_a_seal_opens_with_the_private_key_only() -> None:
    public, private = generate_keypair()
    sealed = seal(CREDENTIALS, public, ttl_s=60, bound_to=BINDING)
    assert is_sealed(sealed) and "s3cret-pw" not in str(sealed)
    assert unseal(sealed, SecretStr(private), bound_to=BINDING) == CREDENTIALS
    _other_public, other_private = generate_keypair()
    with pytest.raises(InvalidInput, match="could not be opened"):
        unseal(sealed, SecretStr(other_private), bound_to=BINDING)
    with pytest.raises(InvalidInput, match="DOCKYARD_SEAL_PRIVATE_KEY"):
        unseal(sealed, None, bound_to=BINDING)


def test_sealing_needs_the_public_key() -> None:
    with pytest.raises(InvalidInput, match="DOCKYARD_SEAL_PUBLIC_KEY"):
        seal(CREDENTIALS, None, ttl_s=60, bound_to=BINDING)


def test_a_seal_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    public, private = generate_keypair()
    sealed = seal(CREDENTIALS, public, ttl_s=30, bound_to=BINDING)
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + 31)
    with pytest.raises(InvalidInput, match="expired"):
        unseal(sealed, SecretStr(private), bound_to=BINDING)


def test_a_caller_with_only_the_public_key_cannot_open_another_callers_seal() -> None:
    """Another process, holding just the farm's public key, tries every way it has to open a seal."""
    public, private = generate_keypair()
    sealed = seal(CREDENTIALS, public, ttl_s=60, bound_to=BINDING)
    probe = (
        "import os, sys, json\n"
        "from pydantic import SecretStr\n"
        "from dockyard.tasks.request.sealing import unseal\n"
        "from dockyard.config.settings import get_settings\n"
        "sealed = json.loads(sys.argv[1]); binding = json.loads(sys.argv[2]); public = os.environ['DOCKYARD_SEAL_PUBLIC_KEY']\n"
        "for key in (get_settings().seal_private_key, SecretStr(public)):\n"
        "    try:\n"
        "        print('OPENED', unseal(sealed, key, bound_to=binding)); sys.exit(1)\n"
        "    except ValueError as exc:\n"
        "        print('refused:', exc)\n"
    )
    import json
    import os

    env = {k: v for k, v in os.environ.items() if k != "DOCKYARD_SEAL_PRIVATE_KEY"}
    env["DOCKYARD_SEAL_PUBLIC_KEY"] = public
    completed = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(sealed), json.dumps(BINDING)], env=env, capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert completed.stdout.count("refused:") == 2 and "s3cret-pw" not in completed.stdout
    assert unseal(sealed, SecretStr(private), bound_to=BINDING) == CREDENTIALS  # the worker's key does open it
