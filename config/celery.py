"""The Celery configuration derived from the settings: JSON only, late acks, one prefetch, limits below visibility.

The apps made from it, with dockyard's router, are ``dockyard.tasks.celery_app``.
"""

from __future__ import annotations

from typing import Any

from dockyard.config.redis_urls import is_sentinel_url
from dockyard.config.settings import Settings, team_queue


def transport_options(settings: Settings, url: str) -> dict[str, Any]:
    """Transport options for ``url``: the visibility timeout, and for ``sentinel://`` the master and sentinels."""
    options: dict[str, Any] = {"visibility_timeout": settings.visibility_timeout_s}
    if is_sentinel_url(url):
        options["master_name"] = settings.sentinel_master
        options["sentinel_kwargs"] = settings.sentinel_kwargs
    return options


def celery_config(settings: Settings) -> dict[str, Any]:
    """Celery settings: JSON only, late acks, one prefetch, limits below visibility."""
    signing: dict[str, Any] = {}
    if settings.signs_messages:
        signing = {
            "task_serializer": "auth",
            "accept_content": ["auth"],
            "security_key": settings.security_key,
            "security_certificate": settings.security_certificate,
            "security_cert_store": settings.security_cert_store,
            "security_digest": "sha256",
        }
    return {
        "broker_url": settings.effective_broker_url,
        "result_backend": settings.effective_result_backend,
        "task_serializer": "json",
        "result_serializer": "json",
        "accept_content": ["json"],
        "result_accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_time_limit": settings.task_time_limit_s,
        "task_soft_time_limit": max(1, settings.task_time_limit_s - min(30, settings.task_time_limit_s // 10)),
        "broker_transport_options": transport_options(settings, settings.effective_broker_url),
        "result_backend_transport_options": transport_options(settings, settings.effective_result_backend),
        "task_track_started": True,
        "result_expires": settings.result_expires_s,
        "result_extended": False,  # results never keep a task's arguments (sealed credentials included)
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "task_default_queue": team_queue(settings.build_queue, settings.team),  # the router names the team's queue anyway
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,  # a worker waits for Redis to come back
        "result_backend_always_retry": True,  # a result is stored after a Redis restart
        "result_backend_max_retries": 60,
        "worker_concurrency": settings.worker_concurrency,
        "worker_max_tasks_per_child": settings.max_tasks_per_child,
        "worker_hijack_root_logger": False,
    } | signing | _publish_retry(settings)


def _publish_retry(settings: Settings) -> dict[str, Any]:
    """Through a sentinel:// broker, a send retries through a failover (Celery's default gives up after ~1 s)."""
    if not is_sentinel_url(settings.effective_broker_url):
        return {}
    step = 1.0
    return {"task_publish_retry_policy": {
        "max_retries": max(1, int(settings.sentinel_failover_wait_s / step)),
        "interval_start": 0, "interval_step": step, "interval_max": step,
    }}
