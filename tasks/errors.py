"""Every error dockyard raises, under one root, and the one mapping from engine errors to them.

    DockyardError
     ├── InvalidInput (ValueError)     bad arguments or message; nothing was built or pushed
     │    ├── ContextTooLarge            the packed context is over context_max_bytes
     │    ├── UnsafeContext              a context archive names a path outside its directory
     │    └── ContextChanged             the context's files changed while the build was prepared
     ├── BuildError                    the engine refused or failed the build
     │    └── BuildLimitExceeded       a step exceeded its memory limit, or its pids limit refused a fork
     ├── PushError (OSError)           the registry refused the push
     │    ├── RegistryAuthError        wrong or missing registry credentials
     │    └── NotPermitted             the team may not push there, or that image (dockyard.tasks.teams.pushing)
     ├── RedeliveryLimit               a message killed its worker too often; not run again
     ├── ContextMissing                the context is not (or no longer) in the store
     ├── Cancelled                     the caller's team cancelled this task (``dockyard cancel``); never retried
     └── TransientError                may succeed if tried again; the only retried class
          ├── BaseUnavailable (BuildError)     a build's registry unreachable or 5xx (base image pull)
          ├── BuilderRace (BuildError)     the classic builder lost an image another removal took meanwhile
          ├── RegistryUnavailable (PushError)  registry unreachable or 5xx
          ├── EngineUnavailable            this host's Docker engine does not answer
          ├── StoreUnavailable             Redis does not answer (restarting, failing over)
          └── JoinTimeout                  a joined build neither finished nor gave up in time

``InvalidInput`` is a ``ValueError`` and ``PushError`` an ``OSError`` because
prefect-docker raises those for the same cases. ``engine_error`` sorts the
messages of docker-py and python-on-whales into these kinds, in one place.
"""

from __future__ import annotations


class DockyardError(Exception):
    """Root of every dockyard error."""


class InvalidInput(DockyardError, ValueError):
    """The caller's arguments are wrong; nothing was done."""


class ContextTooLarge(InvalidInput):
    """The packed context is over ``context_max_bytes``."""


class UnsafeContext(InvalidInput):
    """A context archive names a path outside its directory."""


class ContextChanged(InvalidInput):
    """The context's files changed between its digest and its packing: send the build again."""


class BuildError(DockyardError):
    """The build failed."""


class BuildLimitExceeded(BuildError):
    """A build step was killed for exceeding its memory limit, or could not fork past its pids limit
    (``dockyard.tasks.engine.limits``); the message names the limit and its setting."""


class PushError(DockyardError, OSError):
    """The push failed."""


class RegistryAuthError(PushError):
    """The registry refused the credentials."""


class NotPermitted(PushError):
    """The sending team may not push this: a repository not its own with the farm's login, or an image it never had."""


class RedeliveryLimit(DockyardError):
    """The same task message was delivered more often than ``max_redeliveries`` allows."""


class TransientError(DockyardError):
    """A failure that may pass if tried again (retried with backoff)."""


class BaseUnavailable(TransientError, BuildError):
    """A build met an unreachable or failing registry (pulling its base image, say)."""


class BuilderRace(TransientError, BuildError):
    """The classic builder looked up an image (a cache candidate) that a removal took meanwhile
    (the disk budget evicting another image); the build itself is fine and runs again."""


class RegistryUnavailable(TransientError, PushError):
    """The registry could not be reached or answered with a server error."""


class EngineUnavailable(TransientError):
    """This host's Docker engine does not answer."""


class StoreUnavailable(TransientError):
    """Redis does not answer."""


class ContextMissing(DockyardError):
    """The context is not (or no longer) in the store: send the build again."""


class Cancelled(DockyardError):
    """The task's own team asked to cancel it (``dockyard.tasks.teams.cancel``): it was not built, or
    its build was stopped on the engine, or (others waiting for the same build) this call left it."""


class JoinTimeout(TransientError):
    """A joined build neither finished nor released its lease in time."""


DENIED_HINT = (
    "Docker reported access denied. This can happen if the base image requires "
    "authentication, if you are not logged in to the registry, or if the image "
    "name is invalid. Check your image name (no spaces) and run `docker login` "
    "for the registry you are using."
)
# what registries and engines say when they are down or overloaded (retried)
UNAVAILABLE_MARKERS = (
    "connection refused", "no such host", "i/o timeout", "timeout", "connection reset",
    "502", "503", "504", "500 internal", "bad gateway", "service unavailable",
    "tls handshake", "context deadline exceeded", "eof",
)
# what a build says when its registry fails for a while (the reference's buildx retry list)
BUILD_RETRY_MARKERS = (
    "502", "503", "500 internal server error", "bad gateway", "service unavailable", "i/o timeout",
    "tls handshake timeout", "connection reset", "context deadline exceeded",
)
# a RUN step that failed: its own words are the command's, never a registry outage
RUN_FAILED_MARKER = "returned a non-zero code"
# what the classic builder says when an image it was looking at by id was removed meanwhile
BUILDER_RACE_MARKER = 'unable to find image "sha256:'
# what they say when the credentials are missing or wrong
DENIED_MARKERS = ("denied", "unauthorized", "no basic auth credentials", "authentication required")


def is_unavailable(message: str) -> bool:
    """The message says the registry or engine is down or overloaded."""
    lowered = message.lower()
    return any(marker in lowered for marker in UNAVAILABLE_MARKERS)


def is_denied(message: str) -> bool:
    """The message says the registry refused the credentials."""
    lowered = message.lower()
    return any(marker in lowered for marker in DENIED_MARKERS)


def is_build_retryable(message: str) -> bool:
    """A build failed because its registry was down for a while, not because of the build itself."""
    lowered = message.lower()
    return RUN_FAILED_MARKER not in lowered and any(marker in lowered for marker in BUILD_RETRY_MARKERS)


def engine_error(message: str, *, doing: str) -> DockyardError:
    """The dockyard error for an engine or registry failure while ``doing`` (build, push or login)."""
    text = f"{doing.capitalize()} failed: {message}" if doing != "build" else message
    if doing == "build":
        if is_denied(message):
            return BuildError(f"{message}\n{DENIED_HINT}")
        if is_build_retryable(message):
            return BaseUnavailable(message)
        if BUILDER_RACE_MARKER in message and RUN_FAILED_MARKER not in message.lower():
            return BuilderRace(message)
        return BuildError(message)
    if is_denied(message) and doing.startswith("login"):
        return RegistryAuthError(text)
    if is_unavailable(message) and not is_denied(message):
        return RegistryUnavailable(text)
    if doing.startswith("login"):
        return RegistryAuthError(text)
    return PushError(text)
