"""What a registry serves: the manifest digest under a tag, asked with one HEAD request.

Used to check a push cache hit (the tag still points at the cached digest)
and to resolve base images to digests. Any doubt (no answer, refused,
unknown tag) is ``None``: the caller then treats the cache as a miss.
Registries on loopback are spoken to over plain HTTP, as Docker does.
"""

from __future__ import annotations

import hashlib
import ipaddress
import logging
import os
import re
import threading

import requests

from dockyard.tasks.cache.coalesce import Coalescer
from dockyard.tasks.request.naming import registry_of
from dockyard.tasks.request.spec import Credentials

REGISTRY_TIMEOUT_S = 5.0  # a registry HEAD that takes longer counts as no answer (a cache miss)

logger = logging.getLogger("dockyard.registry")
DOCKER_HUB = "registry-1.docker.io"
MANIFEST_TYPES = ", ".join((
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
))
_CHALLENGE_FIELD = re.compile(r'(\w+)="([^"]*)"')
_heads: Coalescer[str | None] = Coalescer()  # identical HEADs in flight at once are asked once
_sessions = threading.local()  # one keep-alive session per thread (and process: never across a fork)


def repository_path(image_name: str) -> tuple[str, str]:
    """(registry host, repository path) of a qualified image name; Docker Hub's ``library/`` added."""
    registry = registry_of(image_name)
    if registry is None:
        path = image_name if "/" in image_name else f"library/{image_name}"
        return DOCKER_HUB, path
    return registry, image_name.removeprefix(registry + "/")


def is_loopback(registry: str) -> bool:
    host = registry.rsplit(":", 1)[0] if registry.count(":") == 1 else registry
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def base_url(registry: str) -> str:
    return f"{'http' if is_loopback(registry) else 'https'}://{registry}"


def _bearer_token(session: requests.Session, challenge: str, auth: tuple[str, str] | None) -> str | None:
    """A token from the realm named in a ``WWW-Authenticate: Bearer`` challenge."""
    fields = dict(_CHALLENGE_FIELD.findall(challenge))
    realm = fields.pop("realm", None)
    if realm is None:
        return None
    answer = session.get(realm, params=fields, auth=auth, timeout=REGISTRY_TIMEOUT_S)
    if answer.status_code != 200:
        return None
    body = answer.json()
    token = body.get("token") or body.get("access_token")
    return str(token) if token else None


def served_digest(image_name: str, tag: str, credentials: Credentials | None) -> str | None:
    """The digest the registry serves for ``image_name:tag`` to these credentials, or None.

    Threads asking the same question while it is being asked share its answer (``dockyard.tasks.cache.coalesce``).
    """
    registry, path = repository_path(image_name)
    url = f"{base_url(registry)}/v2/{path}/manifests/{tag}"
    auth = (credentials.username, credentials.password) if credentials else None
    asker = hashlib.sha256(repr(auth).encode()).hexdigest()  # the credentials, not kept in clear
    return _heads.run((url, asker), lambda: _ask_digest(url, auth))


def _session() -> requests.Session:
    owner, session = getattr(_sessions, "owned", (None, None))
    if session is None or owner != os.getpid():
        session = requests.Session()
        _sessions.owned = (os.getpid(), session)
    return session


def _ask_digest(url: str, auth: tuple[str, str] | None) -> str | None:
    headers = {"Accept": MANIFEST_TYPES}
    session = _session()
    try:
        answer = session.head(url, headers=headers, auth=auth, timeout=REGISTRY_TIMEOUT_S)
        challenge = answer.headers.get("WWW-Authenticate", "")
        if answer.status_code == 401 and challenge.lower().startswith("bearer"):
            token = _bearer_token(session, challenge, auth)
            if token is not None:
                answer = session.head(
                    url, headers={**headers, "Authorization": f"Bearer {token}"},
                    timeout=REGISTRY_TIMEOUT_S,
                )
    except (requests.RequestException, ValueError) as exc:
        logger.warning("registry did not answer %s: %s", url, exc)
        return None
    if answer.status_code != 200:
        return None
    return answer.headers.get("Docker-Content-Digest")


def serves(image_name: str, tags: list[str], digest: str | None, credentials: Credentials | None) -> bool:
    """The registry serves ``digest`` under every tag, to these credentials (one HEAD per tag)."""
    return digest is not None and all(served_digest(image_name, tag, credentials) == digest for tag in tags)
