"""The farm's own registry login (from the settings), for what lives in the farm's registry."""

from __future__ import annotations

from dockyard.config.settings import Settings
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.request.spec import Credentials


def farm_credentials(settings: Settings) -> Credentials | None:
    """The farm's registry login as ``Credentials``, or None when the settings have none."""
    if not (settings.registry_username and settings.registry_password):
        return None
    return Credentials(
        username=settings.registry_username, password=settings.registry_password.get_secret_value(),
        registry_url=settings.registry_url,
    )


def farm_login(settings: Settings, reference: str) -> Credentials | None:
    """The farm's registry login, for references in the farm's registry."""
    return farm_credentials(settings) if registry_of(reference) == settings.registry_url else None
