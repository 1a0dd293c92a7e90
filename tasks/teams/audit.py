"""The push audit trail: an append-only Redis stream of every push a worker answered.

Each entry holds the team, repository, tags, digest, host, time, which login
pushed (``farm`` or the team's own) and how the push cache answered. The
stream (``<prefix>audit:pushes``) is written by workers only and read by
operators (``dockyard audit``); it keeps at most ``audit_max_entries`` and
drops entries older than ``audit_max_age_s`` as new ones arrive.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import redis

from dockyard.config.settings import Settings
from dockyard.tasks.keyspace import key, text


def audit_key(settings: Settings) -> str:
    return key(settings, "audit", "pushes")


@dataclass(frozen=True)
class AuditEntry:
    """One audited push."""

    id: str
    at: float
    team: str
    repository: str
    tags: list[str]
    digest: str | None
    host: str
    login: str
    cache: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id, "at": self.at, "team": self.team, "repository": self.repository, "tags": self.tags,
            "digest": self.digest, "host": self.host, "login": self.login, "cache": self.cache,
        }


def record_push(connection: redis.Redis, settings: Settings, result: Mapping[str, Any], *, login: str) -> None:
    """Append one answered push of ``settings.team`` (bounded by count and age)."""
    now = time.time()
    fields = {
        "team": settings.team, "repository": str(result.get("image_name", "")),
        "tags": json.dumps([result.get("tag") or "latest", *(result.get("additional_tags") or [])]),
        "digest": str(result.get("digest") or ""), "host": str(result.get("host", settings.host_id)),
        "login": login, "cache": str(result.get("cache", "")), "at": repr(now),
    }
    oldest_ms = int((now - settings.audit_max_age_s) * 1000)
    pipe = connection.pipeline(transaction=False)
    pipe.xadd(audit_key(settings), fields, maxlen=settings.audit_max_entries, approximate=True)  # type: ignore[arg-type]
    pipe.xtrim(audit_key(settings), minid=f"{oldest_ms}-0", approximate=True)
    pipe.execute()


def read_audit(
    connection: redis.Redis, settings: Settings, *, team: str | None = None, since: float | None = None, limit: int = 1000
) -> list[AuditEntry]:
    """The audited pushes, oldest first: of ``team`` only if given, from ``since`` (epoch seconds) on."""
    start = f"{int(since * 1000)}-0" if since is not None else "-"
    entries = []
    for entry_id, raw in connection.xrange(audit_key(settings), min=start, max="+") or []:
        if entry_id is None or not raw:
            continue
        fields = {text(name): text(value) for name, value in raw.items()}
        if team is not None and fields.get("team") != team:
            continue
        entries.append(AuditEntry(
            id=text(entry_id), at=float(fields.get("at", "0")), team=fields.get("team", ""),
            repository=fields.get("repository", ""), tags=json.loads(fields.get("tags", "[]")),
            digest=fields.get("digest") or None, host=fields.get("host", ""), login=fields.get("login", ""),
            cache=fields.get("cache", ""),
        ))
    return entries[-limit:]
