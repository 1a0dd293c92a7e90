"""Build secrets for buildx on the farm: read on the caller, sealed in the message, files on the worker.

A worker cannot read the caller's files or environment, so each
``secrets`` entry (``id=NAME,src=PATH`` or ``id=NAME,env=VAR``) is read by
the caller and sealed with the farm's key; the worker writes it into a
private directory for the build and removes it afterwards. Only the ids
are part of the cache key.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pydantic import SecretStr

from dockyard.config.settings import Settings
from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.sealing import seal, unseal


def _parse(entry: str) -> dict[str, str]:
    fields = dict(part.split("=", 1) for part in entry.split(",") if "=" in part)
    if "id" not in fields:
        raise InvalidInput(f"Build secret {entry!r} has no id=.")
    return fields


def read_secrets(secrets: Any) -> dict[str, str]:
    """``{id: base64 content}`` from buildx-style secret entries, read here."""
    entries = [secrets] if isinstance(secrets, str) else secrets
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise InvalidInput("secrets must be a string or a list of strings like 'id=NAME,src=PATH'.")
    found: dict[str, str] = {}
    for entry in entries:
        fields = _parse(entry)
        source = fields.get("src") or fields.get("source")
        if source:
            try:
                content = Path(source).expanduser().read_bytes()
            except OSError as exc:
                raise InvalidInput(f"Build secret {fields['id']!r}: cannot read {source!r}: {exc}") from exc
        elif "env" in fields:
            value = os.environ.get(fields["env"])
            if value is None:
                raise InvalidInput(f"Build secret {fields['id']!r}: environment variable {fields['env']!r} is not set.")
            content = value.encode()
        else:
            raise InvalidInput(f"Build secret {entry!r} needs src=PATH or env=VAR.")
        found[fields["id"]] = base64.b64encode(content).decode()
    return found


def secrets_binding(team: str) -> dict[str, str | None]:
    """What sealed build secrets are bound to: their team, and this use (never a push's credentials)."""
    return {"team": team, "use": "build-secrets"}


def seal_secrets(secrets: Any, settings: Settings) -> tuple[dict[str, str], list[str]]:
    """The sealed secrets for a message (the farm's public key, bound to the caller's team), and their
    ids for the cache key."""
    contents = read_secrets(secrets)
    sealed = seal(contents, settings.seal_public_key, ttl_s=settings.seal_ttl_s, bound_to=secrets_binding(settings.team))
    return sealed, sorted(contents)


@contextlib.contextmanager
def materialized_secrets(sealed: Mapping[str, str], private_key: SecretStr | None, *, team: str) -> Iterator[list[str]]:
    """Write ``team``'s secrets to a private directory; yield buildx ``secrets`` entries; remove them."""
    directory = Path(tempfile.mkdtemp(prefix=f"dockyard-secrets-{os.getpid()}-"))
    try:
        entries: list[str] = []
        for secret_id, encoded in unseal(sealed, private_key, bound_to=secrets_binding(team)).items():
            path = directory / f"secret-{len(entries)}"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(base64.b64decode(encoded))
            entries.append(f"id={secret_id},src={path}")
        yield entries
    finally:
        shutil.rmtree(directory, ignore_errors=True)
