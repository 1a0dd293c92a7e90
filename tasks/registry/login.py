"""Registry logins from the settings: the farm's (workers only) and a caller's own pull login.

A caller holds neither the workers' login nor the private sealing key: it
resolves base images with its own ``pull_username``/``pull_password`` (or
anonymously), never with ``registry_username``/``registry_password``.
"""

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


def pull_login(settings: Settings, reference: str) -> Credentials | None:
    """A caller's own login to the farm's registry (``pull_username``), for resolving base images."""
    if not (settings.pull_username and settings.pull_password) or registry_of(reference) != settings.registry_url:
        return None
    return Credentials(
        username=settings.pull_username, password=settings.pull_password.get_secret_value(), registry_url=settings.registry_url,
    )


def resolving_login(settings: Settings, reference: str) -> Credentials | None:
    """The login that resolves ``reference``'s digest here: the farm's on a worker, a caller's own pull login."""
    return farm_login(settings, reference) or pull_login(settings, reference)
