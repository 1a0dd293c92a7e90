"""Settings and the Celery configuration derived from them (no services)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from dockyard.config.celery import celery_config
from dockyard.config.settings import Settings


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
