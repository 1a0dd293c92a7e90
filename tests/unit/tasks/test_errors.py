"""dockyard.tasks.errors: the tree of errors, and engine_error's one mapping from engine messages to it."""

from __future__ import annotations

import pytest

from dockyard.tasks import errors
from dockyard.tasks.errors import (
    DENIED_HINT,
    BuildError,
    ContextMissing,
    ContextTooLarge,
    DockyardError,
    EngineUnavailable,
    InvalidInput,
    JoinTimeout,
    PushError,
    RedeliveryLimit,
    RegistryAuthError,
    RegistryUnavailable,
    StoreUnavailable,
    TransientError,
    UnsafeContext,
    engine_error,
    is_denied,
    is_unavailable,
)

DENIED = "pull access denied for private/base, repository does not exist or may require 'docker login'"
UNAUTHORIZED = "unauthorized: authentication required"
UNAVAILABLE = "Get https://reg.io/v2/: dial tcp 10.0.0.1:443: connect: connection refused"
SERVER_ERROR = "received unexpected HTTP status: 503 Service Unavailable"


def test_every_error_is_a_dockyard_error() -> None:
    found = [value for value in vars(errors).values() if isinstance(value, type) and issubclass(value, Exception)]
    assert len(found) >= 14
    assert all(issubclass(each, DockyardError) for each in found)


@pytest.mark.parametrize(
    ("error", "parents"),
    [
        (InvalidInput, (ValueError,)),
        (ContextTooLarge, (InvalidInput,)),
        (UnsafeContext, (InvalidInput,)),
        (PushError, (OSError,)),
        (RegistryAuthError, (PushError,)),
        (RegistryUnavailable, (TransientError, PushError, OSError)),
        (EngineUnavailable, (TransientError,)),
        (StoreUnavailable, (TransientError,)),
        (JoinTimeout, (TransientError,)),
    ],
)
def test_the_tree_drawn_in_the_docstring(error: type[Exception], parents: tuple[type[Exception], ...]) -> None:
    assert all(issubclass(error, parent) for parent in parents)


@pytest.mark.parametrize(
    "error", [InvalidInput, BuildError, PushError, RegistryAuthError, RedeliveryLimit, ContextMissing]
)
def test_only_transient_errors_are_retried(error: type[Exception]) -> None:
    assert not issubclass(error, TransientError)


def test_the_docstring_names_every_error() -> None:
    names = [name for name, value in vars(errors).items() if isinstance(value, type) and issubclass(value, Exception)]
    assert all(name in (errors.__doc__ or "") for name in names)


@pytest.mark.parametrize("message", [DENIED, UNAUTHORIZED, "no basic auth credentials", "requested access to the resource is DENIED"])
def test_denied_markers(message: str) -> None:
    assert is_denied(message)


@pytest.mark.parametrize("message", [UNAVAILABLE, SERVER_ERROR, "502 Bad Gateway", "net/http: TLS handshake timeout", "unexpected EOF"])
def test_unavailable_markers(message: str) -> None:
    assert is_unavailable(message) and not is_denied(message)


# engine_error: build


def test_a_denied_build_is_a_build_error_with_the_hint() -> None:
    error = engine_error(DENIED, doing="build")
    assert type(error) is BuildError
    assert str(error) == f"{DENIED}\n{DENIED_HINT}"


@pytest.mark.parametrize("message", ["The command '/bin/sh -c false' returned a non-zero code: 1", UNAVAILABLE])
def test_other_build_failures_are_build_errors_as_they_are(message: str) -> None:
    error = engine_error(message, doing="build")
    assert type(error) is BuildError and str(error) == message
    assert DENIED_HINT not in str(error)


# engine_error: login and push


@pytest.mark.parametrize("message", [DENIED, UNAUTHORIZED, "login attempt failed with status: 400 Bad Request x"])
def test_a_refused_login_is_an_auth_error(message: str) -> None:
    error = engine_error(message, doing="login to reg.io")
    assert type(error) is RegistryAuthError
    assert str(error) == f"Login to reg.io failed: {message}"


@pytest.mark.parametrize("message", [UNAVAILABLE, SERVER_ERROR])
def test_an_unreachable_registry_at_login_is_transient(message: str) -> None:
    assert type(engine_error(message, doing="login to reg.io")) is RegistryUnavailable


@pytest.mark.parametrize("message", [UNAVAILABLE, SERVER_ERROR, "read: connection reset by peer"])
def test_an_unreachable_registry_during_a_push_is_transient(message: str) -> None:
    error = engine_error(message, doing="pushing app:v1")
    assert type(error) is RegistryUnavailable
    assert str(error) == f"Pushing app:v1 failed: {message}"


def test_denied_wins_over_unavailable() -> None:
    message = "unauthorized: authentication required (after i/o timeout)"
    assert type(engine_error(message, doing="login to reg.io")) is RegistryAuthError
    assert not isinstance(engine_error(message, doing="pushing app:v1"), TransientError)


@pytest.mark.parametrize("message", [DENIED, "manifest invalid"])
def test_other_push_failures_are_push_errors(message: str) -> None:
    assert type(engine_error(message, doing="pushing app:v1")) is PushError
