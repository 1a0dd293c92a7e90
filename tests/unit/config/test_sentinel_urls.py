"""sentinel:// URLs: parsing, validation and the Celery transport options they bring (no services)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dockyard.config.celery import celery_config
from dockyard.config.redis_urls import is_sentinel_url, parse_sentinel_url
from dockyard.config.settings import Settings

URL = "sentinel://dockyard-worker:p%40ss@127.0.0.1:26395/12;sentinel://127.0.0.1:26396;sentinel://localhost:26397"


def test_a_sentinel_url_names_every_sentinel_and_the_masters_db_and_credentials() -> None:
    target = parse_sentinel_url(URL)
    assert target.sentinels == (("127.0.0.1", 26395), ("127.0.0.1", 26396), ("localhost", 26397))
    assert target.db == 12
    assert (target.username, target.password) == ("dockyard-worker", "p@ss")


def test_a_sentinel_url_without_db_or_credentials() -> None:
    target = parse_sentinel_url("sentinel://s1:1")
    assert target.sentinels == (("s1", 1),) and target.db == 0
    assert target.username is None and target.password is None


def test_only_sentinel_urls_are_sentinel_urls() -> None:
    assert is_sentinel_url(URL) and is_sentinel_url("SENTINEL://h:1")
    assert not is_sentinel_url("redis://h:1/0") and not is_sentinel_url("rediss://h:1/0")


@pytest.mark.parametrize("bad", [
    "sentinel://h:1;redis://h:2", "sentinel://h:1/x", "sentinel://h:notaport", "sentinel://:1", "sentinel://h", ";",
])
def test_malformed_sentinel_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_sentinel_url(bad)


@pytest.mark.parametrize("field", ["redis_url", "broker_url", "result_backend", "cache_url"])
def test_settings_refuse_a_malformed_sentinel_url_in_any_place(field: str) -> None:
    with pytest.raises(ValidationError, match="sentinel"):
        Settings(**{field: "sentinel://h:1;redis://h:2"})


def test_sentinel_master_defaults_to_dockyard_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().sentinel_master == "dockyard"
    monkeypatch.setenv("DOCKYARD_SENTINEL_MASTER", "farm-a")
    monkeypatch.setenv("DOCKYARD_SENTINEL_PASSWORD", "s3cret")
    settings = Settings()
    assert settings.sentinel_master == "farm-a"
    assert settings.sentinel_kwargs["password"] == "s3cret"
    assert "s3cret" not in repr(settings)


def test_celery_gets_master_name_and_sentinel_kwargs_for_broker_and_backend() -> None:
    conf = celery_config(Settings(redis_url=URL, sentinel_master="farm-a", sentinel_password="s3cret",
                                  task_time_limit_s=60, visibility_timeout_s=120))
    assert conf["broker_url"] == conf["result_backend"] == URL
    for name in ("broker_transport_options", "result_backend_transport_options"):
        options = conf[name]
        assert options["master_name"] == "farm-a" and options["visibility_timeout"] == 120
        assert options["sentinel_kwargs"]["password"] == "s3cret"
        assert options["sentinel_kwargs"]["socket_timeout"] > 0


def test_only_the_sentinel_part_gets_sentinel_options() -> None:
    conf = celery_config(Settings(redis_url="redis://h:1/0", result_backend=URL))
    assert "master_name" not in conf["broker_transport_options"]
    assert conf["result_backend_transport_options"]["master_name"] == "dockyard"
    assert "password" not in conf["result_backend_transport_options"]["sentinel_kwargs"]


def test_celery_reads_the_sentinel_url_with_its_master() -> None:
    """Celery's own backend and kombu's transport take the URL and options as dockyard writes them."""
    from celery.backends.redis import SentinelBackend

    from dockyard.tasks.celery_app import create_celery

    app = create_celery(Settings(redis_url=URL, sentinel_master="farm-a"))
    backend = app.backend
    assert isinstance(backend, SentinelBackend)
    params = backend.connparams
    assert [(h["host"], h["port"]) for h in params["hosts"]] == [
        ("127.0.0.1", 26395), ("127.0.0.1", 26396), ("localhost", 26397)]
    assert params["db"] == 12 and params["username"] == "dockyard-worker"
    with app.connection_for_write() as connection:
        assert connection.transport_cls == "sentinel"
        assert connection.transport_options["master_name"] == "farm-a"


def test_sends_through_a_sentinel_broker_retry_for_the_failover_wait() -> None:
    policy = celery_config(Settings(redis_url=URL, sentinel_failover_wait_s=30))["task_publish_retry_policy"]
    assert policy["max_retries"] * policy["interval_max"] >= 30
    assert "task_publish_retry_policy" not in celery_config(Settings(redis_url="redis://h:1/0"))
