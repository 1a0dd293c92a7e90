"""dockyard.tasks.cache.live_output: live build output through a Redis stream, and the throttled PROGRESS state."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import fakeredis
import pytest
import redis

import dockyard.tasks.cache.live_output
from dockyard.config.settings import Settings
from dockyard.tasks.cache.live_output import ProgressState, StreamOutput, StreamReader, stream_key, tee


def test_the_stream_key_is_under_the_prefix(unit_settings: Settings) -> None:
    assert stream_key(unit_settings, "k") == "unit:team:default:out:k"


def test_a_reader_sees_whole_lines_once_they_end(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    reader = StreamReader(fake_redis, unit_settings, "k")
    output = StreamOutput(fake_redis, unit_settings, "k")
    output("Step 1/2 : FROM busy")
    assert reader.read(block_s=0.001) == [], "a partial line waits for its end"
    output("box\nStep 2/2 : RUN true\nSucc")
    assert reader.read(block_s=0.001) == ["Step 1/2 : FROM busybox", "Step 2/2 : RUN true"]
    assert reader.read(block_s=0.001) == [], "lines are read once"


def test_a_reader_starts_where_the_stream_stood(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    output = StreamOutput(fake_redis, unit_settings, "k")
    output("before\n")
    reader = StreamReader(fake_redis, unit_settings, "k")
    output("after\n")
    assert reader.read(block_s=0.001) == ["after"]


def test_builds_have_streams_of_their_own(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    reader = StreamReader(fake_redis, unit_settings, "k1")
    StreamOutput(fake_redis, unit_settings, "k2")("other build\n")
    assert reader.read(block_s=0.001) == []


def test_the_stream_expires_within_an_hour(fake_redis: fakeredis.FakeRedis, unit_settings: Settings) -> None:
    StreamOutput(fake_redis, unit_settings, "k")("line\n")
    assert 0 < fake_redis.ttl("unit:team:default:out:k") <= 3600


def test_a_redis_failure_does_not_fail_the_build(
    fake_redis: fakeredis.FakeRedis, unit_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    reader = StreamReader(fake_redis, unit_settings, "k")
    output = StreamOutput(fake_redis, unit_settings, "k")
    log: list[str] = []
    write = tee(output, log.append)  # the build's sinks: the stream, then its own log
    real_pipeline = fake_redis.pipeline
    failures: list[str] = []

    def failing_pipeline(*args: Any, **kwargs: Any) -> Any:
        pipe = real_pipeline(*args, **kwargs)

        def connection_lost(*args: Any, **kwargs: Any) -> Any:
            failures.append("execute")
            raise redis.ConnectionError("down")

        pipe.execute = connection_lost  # type: ignore[method-assign]
        return pipe

    monkeypatch.setattr(fake_redis, "pipeline", failing_pipeline)
    write("line\n")  # no exception: live output is best effort
    assert failures == ["execute"], "the stream was written to, and Redis failed under it"
    assert log == ["line\n"], "the sinks after the stream still get the text"
    monkeypatch.setattr(fake_redis, "pipeline", real_pipeline)  # Redis is back
    write("next\n")
    assert reader.read(block_s=0.001) == ["next"], "the sink goes on once Redis answers; the lost line stays lost"
    assert log == ["line\n", "next\n"]


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_progress_state_is_throttled_and_counts_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(dockyard.tasks.cache.live_output, "time", SimpleNamespace(monotonic=clock))
    updates: list[dict[str, Any]] = []
    state = ProgressState(lambda **kwargs: updates.append(kwargs), "h1")
    state("a\nb\n")
    assert updates == [], "STARTED stays visible for the first interval"
    clock.now += 1.0
    state("c\n")
    assert updates == [{"state": "PROGRESS", "meta": {"host": "h1", "lines": 3}}]
    clock.now += 0.5
    state("d\n")
    assert len(updates) == 1 and state.lines == 4


def test_a_failing_progress_update_does_not_fail_the_build(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _Clock()
    monkeypatch.setattr(dockyard.tasks.cache.live_output, "time", SimpleNamespace(monotonic=clock))

    def broken(**kwargs: Any) -> None:
        raise RuntimeError("backend down")

    state = ProgressState(broken, "h1")
    clock.now += 2
    state("line\n")
    assert state.lines == 1


def test_tee_writes_to_every_sink_in_order() -> None:
    seen: list[tuple[str, str]] = []
    write = tee(lambda text: seen.append(("a", text)), lambda text: seen.append(("b", text)))
    write("x\n")
    assert seen == [("a", "x\n"), ("b", "x\n")]
