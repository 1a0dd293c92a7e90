"""A team's own keys in dockyard's keyspace: ``<prefix>team:<name>:...``, readable by that team only."""

from __future__ import annotations

from dockyard.config.settings import Settings
from dockyard.tasks.keyspace import key

TEAM_KEYS = "team"  # <prefix>team:<name>: a team's own namespace
TEAM_CACHES = ("call", "push")  # single-flight namespaces kept per team: cacheable calls and pushes (a build is shared)


def team_key(settings: Settings, *parts: str) -> str:
    """A key of ``settings.team``'s own namespace."""
    return key(settings, TEAM_KEYS, settings.team, *parts)


def team_namespace(prefix: str, team: str) -> str:
    """The prefix of every key of ``team`` under the key prefix ``prefix``."""
    return f"{prefix}{TEAM_KEYS}:{team}:"
