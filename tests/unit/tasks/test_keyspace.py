"""dockyard.tasks.keyspace: dockyard's Redis keys under its prefix, one client per URL (no connection is made)."""

from __future__ import annotations

from dockyard.config import defaults
from dockyard.tasks.keyspace import context_store_for, key, redis_for  # imported before the unit conftest patches the module's
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


def test_a_sentinel_url_gives_a_client_of_the_named_master() -> None:
    from redis.sentinel import SentinelConnectionPool

    settings = make_settings(
        redis_url="sentinel://dockyard-worker:pw@127.0.0.1:1/7;sentinel://127.0.0.1:2",
        sentinel_master="farm-a", sentinel_password="sp",
    )
    client = redis_for(settings)
    pool = client.connection_pool
    assert isinstance(pool, SentinelConnectionPool)
    assert pool.service_name == "farm-a"
    assert pool.connection_kwargs["db"] == 7
    assert (pool.connection_kwargs["username"], pool.connection_kwargs["password"]) == ("dockyard-worker", "pw")
    sentinels = pool.sentinel_manager.sentinels
    assert [s.connection_pool.connection_kwargs["port"] for s in sentinels] == [1, 2]
    assert all(s.connection_pool.connection_kwargs["password"] == "sp" for s in sentinels)
    assert redis_for(settings) is client
    assert redis_for(settings.model_copy(update={"sentinel_master": "farm-b"})) is not client


def test_a_sentinel_client_retries_through_a_failover_for_the_configured_time() -> None:
    from dockyard.tasks.keyspace import failover_retry

    settings = make_settings(redis_url="sentinel://127.0.0.1:1/0", sentinel_failover_wait_s=20)
    retry = redis_for(settings).connection_pool.connection_kwargs["retry"]
    assert retry.get_retries() == failover_retry(20).get_retries() > failover_retry(5).get_retries() > 0
    plain = redis_for(make_settings(redis_url="redis://127.0.0.1:1/0"))
    assert plain.connection_pool.connection_kwargs.get("retry") is not retry


def test_a_sentinel_client_reconnects_to_the_master_the_sentinels_name_now() -> None:
    from unittest import mock

    from redis.sentinel import SentinelManagedConnection

    from dockyard.tasks.keyspace import MasterConnection

    client = redis_for(make_settings(redis_url="sentinel://127.0.0.1:1/0", sentinel_master="now"))
    pool = client.connection_pool
    assert pool.connection_class is MasterConnection
    connection = pool.make_connection()
    connection.host, connection.port = "127.0.0.1", 6395  # the master it had before a failover
    with mock.patch.object(connection.connection_pool, "get_master_address", return_value=("127.0.0.1", 6396)), \
            mock.patch.object(SentinelManagedConnection, "connect_check_health") as base:
        connection.connect_check_health()
    assert (connection.host, connection.port) == ("127.0.0.1", 6396) and base.called


def test_the_context_store_is_its_own_redis_never_the_brokers() -> None:
    settings = make_settings(redis_url="redis://127.0.0.1:1/0", context_store_url="redis://127.0.0.1:2/3")
    store = context_store_for(settings).connection_pool.connection_kwargs
    assert (store["port"], store["db"]) == (2, 3)
    assert defaults.CONTEXT_STORE_URL != defaults.REDIS_URL, "by default, contexts never go to the broker's Redis"
