"""What a team may push: with the farm's login, only its own repositories; and only images it had.

A team *has* an image when a request of its own built it, joined its build,
hit its cache entry or tagged it: the worker that answered records that in the
team's namespace (``owns:<image id>``, which no team may write). An image id
alone, read from a result or a tag's location, proves nothing.
"""

from __future__ import annotations

import redis

from dockyard.config.settings import Settings
from dockyard.config.teams import Team
from dockyard.tasks.errors import NotPermitted
from dockyard.tasks.teams.keys import team_key


def owned_key(settings: Settings, image_id: str) -> str:
    """``settings.team`` had ``image_id`` (built, joined, hit or tagged it)."""
    return team_key(settings, "owns", image_id)


def note_owned(pipe: redis.Redis | redis.client.Pipeline, settings: Settings, image_id: str) -> None:
    """Record that ``settings.team`` had ``image_id``, for as long as a cache entry lives."""
    pipe.set(owned_key(settings, image_id), "1", ex=settings.cache_ttl_s)


def sending_team(settings: Settings) -> Team:
    """The declared team ``settings`` run for (a task's settings name the verified team)."""
    team = settings.team_named(settings.team)
    if team is None:
        raise NotPermitted(f"Team {settings.team} is not declared on this farm.")
    return team


def check_repository(team: Team, image_name: str) -> None:
    """A push with the farm's login must go to one of ``team``'s repositories (``image_name`` is
    qualified, without its tag); ``NotPermitted`` names the team and its patterns."""
    repository = image_name
    if not team.may_push_with_farm_login(repository):
        allowed = ", ".join(team.push) or "none"
        raise NotPermitted(
            f"Team {team.name} may push with the farm's registry login only to {allowed}; "
            f"{repository} is not one of them (push with the team's own credentials, or ask the operator)."
        )


def check_owned(connection: redis.Redis, settings: Settings, image_id: str, reference: str) -> None:
    """``NotPermitted`` unless ``settings.team`` had ``image_id``."""
    if not connection.exists(owned_key(settings, image_id)):
        raise NotPermitted(
            f"Team {settings.team} has no build of image {image_id} ({reference}): a team pushes only images "
            "a request of its own built, joined or hit. Build it on the farm first (the same content builds nothing new)."
        )
