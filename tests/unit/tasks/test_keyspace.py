"""tasks.keyspace: dockyard's Redis keys under its prefix, one client per URL (no connection is made)."""

from __future__ import annotations

from tasks.keyspace import key, redis_for
from tests.unit.support import make_settings


def test_a_key_joins_its_parts_under_the_prefix() -> None:
    settings = make_settings(key_prefix="farm-a:")
    assert key(settings, "cache", "build", "abc") == "farm-a:cache:build:abc"
    assert key(settings, "hosts") == "farm-a:hosts"
    assert key(settings) == "farm-a:"


def test_two_prefixes_never_share_a_key() -> None:
    assert key(make_settings(key_prefix="a:"), "x") != key(make_settings(key_prefix="b:"), "x")


def test_one_client_per_url_preferring_the_cache_url() -> None:
    plain = make_settings(redis_url="redis://127.0.0.1:1/0", cache_url=None)
    assert redis_for(plain) is redis_for(make_settings(redis_url="redis://127.0.0.1:1/0", cache_url=None))
    split = make_settings(redis_url="redis://127.0.0.1:1/0", cache_url="redis://127.0.0.1:1/5")
    client = redis_for(split)
    assert client is not redis_for(plain)
    assert client.connection_pool.connection_kwargs["db"] == 5
