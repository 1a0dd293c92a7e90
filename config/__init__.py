"""Settings: the one object that reads the environment (prefix ``DOCKYARD_``)."""

from __future__ import annotations

from dockyard.config.settings import Settings, get_settings

__all__ = ["Settings", "get_settings"]
