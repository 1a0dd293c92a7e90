"""Every error dockyard raises, under one root.

    DockyardError
     ├── InvalidInput (ValueError)     bad arguments; nothing was built or pushed
     ├── BuildError                    the engine refused or failed the build
     ├── PushError (OSError)           the registry refused the push
     │    └── RegistryAuthError        wrong or missing registry credentials
     └── TransientError                may succeed if tried again; the only retried class
          ├── RegistryUnavailable (PushError)  registry unreachable or 5xx
          ├── EngineUnavailable            this host's Docker engine does not answer
          └── StoreUnavailable             Redis does not answer (restarting, failing over)

``InvalidInput`` is a ``ValueError`` and ``PushError`` an ``OSError`` because
prefect-docker raises those for the same cases.
"""

from __future__ import annotations


class DockyardError(Exception):
    """Root of every dockyard error."""


class InvalidInput(DockyardError, ValueError):
    """The caller's arguments are wrong; nothing was done."""


class BuildError(DockyardError):
    """The build failed."""


class PushError(DockyardError, OSError):
    """The push failed."""


class RegistryAuthError(PushError):
    """The registry refused the credentials."""


class TransientError(DockyardError):
    """A failure that may pass if tried again (retried with backoff)."""


class RegistryUnavailable(TransientError, PushError):
    """The registry could not be reached or answered with a server error."""


class EngineUnavailable(TransientError):
    """This host's Docker engine does not answer."""


class StoreUnavailable(TransientError):
    """Redis does not answer."""
