"""Settings and the Celery configuration derived from them (no services)."""

from __future__ import annotations

import socket

import pytest
from pydantic import ValidationError

from dockyard.config.celery import celery_config
from dockyard.config.settings import InvalidSettings, Settings


def test_redis_url_feeds_broker_backend_and_cache() -> None:
    settings = Settings(redis_url="redis://h:1/2")
    assert settings.effective_broker_url == settings.effective_result_backend == settings.effective_cache_url == "redis://h:1/2"
    apart = Settings(redis_url="redis://h:1/2", broker_url="redis://b:1/0")
    assert apart.effective_broker_url == "redis://b:1/0" and apart.effective_cache_url == "redis://h:1/2"


def test_time_limit_must_be_below_visibility_timeout() -> None:
    with pytest.raises(ValidationError, match="below visibility_timeout_s"):
        Settings(task_time_limit_s=100, visibility_timeout_s=100)


def test_environment_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_HOST_ID", "builder-7")
    assert Settings().host_queue == "dockyard.host.builder-7"


def test_celery_config_is_json_only_with_late_acks_and_visibility_everywhere() -> None:
    conf = celery_config(Settings(task_time_limit_s=60, visibility_timeout_s=120))
    assert conf["accept_content"] == ["json"] and conf["task_serializer"] == "json"
    assert conf["task_acks_late"] and conf["task_reject_on_worker_lost"]
    assert conf["worker_prefetch_multiplier"] == 1 and conf["task_track_started"]
    assert conf["broker_transport_options"]["visibility_timeout"] == 120
    assert conf["result_backend_transport_options"]["visibility_timeout"] == 120
    assert conf["task_time_limit"] == 60 < 120
    assert conf["result_expires"] > 120 and conf["worker_send_task_events"]


@pytest.mark.parametrize("host_id", ["builder.fast", "a.b.fast"])
def test_a_host_id_may_not_end_in_the_fast_queue_suffix(host_id: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError, match=r"ends in '\.fast'") as raised:
        Settings(host_id=host_id)
    assert InvalidSettings.from_validation_error(raised.value).args[0].startswith("DOCKYARD_HOST_ID: host id ")
    monkeypatch.setenv("DOCKYARD_HOST_ID", host_id)
    with pytest.raises(ValidationError, match="fast queue of host"):
        Settings()


def test_the_default_host_id_is_checked_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DOCKYARD_HOST_ID", raising=False)
    monkeypatch.setattr(socket, "gethostname", lambda: "box.fast")
    with pytest.raises(ValidationError, match=r"ends in '\.fast'"):
        Settings()
    monkeypatch.setattr(socket, "gethostname", lambda: "box.faster")
    assert Settings().host_queue == "dockyard.host.box.faster"


def test_invalid_settings_name_their_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKYARD_WORKER_CONCURRENCY", "abc")
    monkeypatch.setenv("DOCKYARD_REDIS_URL", "redis://user:hunter2@h:1/0")
    monkeypatch.setenv("DOCKYARD_CONTEXT_TRANSPORT", "ftp")
    with pytest.raises(ValidationError) as raised:
        Settings()
    message = str(InvalidSettings.from_validation_error(raised.value))
    assert message.startswith("DOCKYARD_WORKER_CONCURRENCY: Input should be a valid integer")
    assert "(got 'abc')" in message and "DOCKYARD_CONTEXT_TRANSPORT: Input should be 'redis' or 'path'" in message
    assert "'ftp'" not in message, "only numbers and flags are echoed: a string may be a secret"
    assert "hunter2" not in message


def test_the_time_limit_error_names_both_variables() -> None:
    with pytest.raises(ValidationError) as raised:
        Settings(task_time_limit_s=100, visibility_timeout_s=50)
    message = str(InvalidSettings.from_validation_error(raised.value))
    assert message.startswith("task_time_limit_s (DOCKYARD_TASK_TIME_LIMIT_S, 100) must be below")
    assert "(DOCKYARD_VISIBILITY_TIMEOUT_S, 50)" in message
