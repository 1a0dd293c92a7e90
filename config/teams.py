"""The farm's teams, as the operator declares them: a TOML file named by ``DOCKYARD_TEAMS_FILE``.

    [teams.team-a]
    redis_password_sha256 = ["9f86d0..."]   # sha256 of the team's Redis password (farm Redis and context store)
    push = ["registry.internal/team-a/*"]   # repositories it may push to with the farm's registry login
    share = 1.0                             # its share of the farm (the weight of its turn at each worker)
    max_running = 4                         # optional: at most this many of its builds run at once on the farm

Workers and operator commands read it; callers never need it. A team is
told apart by its Redis user (``dockyard-team-<name>``, whose ACL admits
only its own queues and keys) and the queue a message arrives on, never by
what a message says (``docs/security.md``). A farm with no file has one team,
``default``, which may push anywhere with the farm's login.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import tomllib
from typing import Annotated

from dockyard.config import defaults
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

TEAM_NAME = r"^[a-z0-9][a-z0-9-]{0,39}$"  # no '.', '@' or ':': a team's queues, keys and results are named with it
DEFAULT_TEAM = defaults.TEAM
REDIS_USER_PREFIX = "dockyard-team-"  # + team name: the team's Redis user on the farm's Redis and the context store


class Team(BaseModel):
    """One team: how it authenticates, where the farm's login pushes for it, its share of the farm and its cap."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=TEAM_NAME)]
    redis_password_sha256: list[Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")]] = Field(default_factory=list)
    push: list[str] = Field(default_factory=list)
    share: float = Field(1.0, gt=0)
    max_running: int | None = Field(None, ge=1)  # None: no cap (dockyard.tasks.teams.caps)

    @property
    def redis_user(self) -> str:
        return REDIS_USER_PREFIX + self.name

    def may_push_with_farm_login(self, repository: str) -> bool:
        """Whether ``repository`` (``registry/path``, no tag) matches one of the team's ``push`` patterns."""
        return any(fnmatch.fnmatchcase(repository, pattern) for pattern in self.push)


class Teams(BaseModel):
    """The declared teams by name."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    teams: dict[str, Team]

    @field_validator("teams", mode="before")
    @classmethod
    def _named(cls, value: object) -> object:
        if isinstance(value, dict):
            return {name: {"name": name, **body} if isinstance(body, dict) else body for name, body in value.items()}
        return value

    @property
    def names(self) -> list[str]:
        return sorted(self.teams)

    def get(self, name: str | None) -> Team | None:
        return self.teams.get(name) if name is not None else None


class InvalidTeams(ValueError):
    """The teams file cannot be read or does not validate; the message names the file and the fault."""


def default_teams() -> Teams:
    """A farm without a teams file: one team, ``default``, pushing anywhere with the farm's login."""
    return Teams(teams={DEFAULT_TEAM: Team(name=DEFAULT_TEAM, push=["*"])})


def parse_teams(text: str, *, source: str = "<teams>") -> Teams:
    """The teams of a TOML document; ``InvalidTeams`` naming ``source`` and the fault."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise InvalidTeams(f"{source}: not TOML: {exc}") from exc
    try:
        teams = Teams.model_validate({"teams": document.get("teams", {})})
    except ValidationError as exc:
        faults = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_url=False))
        raise InvalidTeams(f"{source}: {faults}") from exc
    for name in document:
        if name != "teams":
            raise InvalidTeams(f"{source}: unknown table {name!r} (only [teams.<name>])")
    if not teams.teams:
        raise InvalidTeams(f"{source}: declares no team")
    bad = [name for name in teams.teams if not re.fullmatch(TEAM_NAME, name)]
    if bad:
        raise InvalidTeams(f"{source}: team names {bad} do not match {TEAM_NAME}")
    return teams


@functools.lru_cache(maxsize=4)
def load_teams(path: str | None) -> Teams:
    """The teams declared in ``path``, or ``default_teams()`` when no file is named."""
    if not path:
        return default_teams()
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise InvalidTeams(f"DOCKYARD_TEAMS_FILE {path}: {exc.strerror}") from exc
    return parse_teams(text, source=path)
