"""Seals bound to a team and a repository (dockyard.tasks.request.sealing): one lifted from another team's message opens nothing."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from dockyard.tasks.errors import InvalidInput
from dockyard.tasks.request.sealing import credentials_binding, generate_keypair, seal, unseal

PUBLIC_KEY, PRIVATE_KEY = generate_keypair()
KEY = SecretStr(PRIVATE_KEY)
CREDENTIALS = {"username": "ci", "password": "pw-of-team-a", "registry_url": "reg.io"}


def test_the_binding_names_the_team_the_use_and_the_repository() -> None:
    assert credentials_binding("team-a", "reg.io/team-a/app") == {"team": "team-a", "use": "push-credentials", "repository": "reg.io/team-a/app"}
    assert credentials_binding("team-a", None)["repository"] is None


def test_a_seal_made_for_team_a_does_not_open_for_team_b() -> None:
    sealed = seal(CREDENTIALS, PUBLIC_KEY, ttl_s=60, bound_to=credentials_binding("team-a", None))
    assert unseal(sealed, KEY, bound_to=credentials_binding("team-a", None)) == CREDENTIALS
    with pytest.raises(InvalidInput, match="could not be opened for team team-b, use push-credentials") as refused:
        unseal(sealed, KEY, bound_to=credentials_binding("team-b", None))
    assert "pw-of-team-a" not in str(refused.value)


def test_a_seal_made_for_one_repository_does_not_open_for_another_nor_for_any() -> None:
    sealed = seal(CREDENTIALS, PUBLIC_KEY, ttl_s=60, bound_to=credentials_binding("team-a", "reg.io/team-a/app"))
    assert unseal(sealed, KEY, bound_to=credentials_binding("team-a", "reg.io/team-a/app")) == CREDENTIALS
    for other in ("reg.io/team-a/other", None):
        with pytest.raises(InvalidInput, match="could not be opened"):
            unseal(sealed, KEY, bound_to=credentials_binding("team-a", other))


def test_a_binding_is_compared_whole_whatever_its_order() -> None:
    sealed = seal(CREDENTIALS, PUBLIC_KEY, ttl_s=60, bound_to={"use": "x", "team": "team-a"})
    assert unseal(sealed, KEY, bound_to={"team": "team-a", "use": "x"}) == CREDENTIALS
    for other in ({"team": "team-a"}, {"team": "team-a", "use": "x", "repository": "r"}, {"team": "team-a", "use": "y"}):
        with pytest.raises(InvalidInput, match="could not be opened"):
            unseal(sealed, KEY, bound_to=other)
