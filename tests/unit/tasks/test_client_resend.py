"""dockyard.tasks.client.build when the context leaves the store between upload and build (fakeredis, no broker):
the caller uploads it again and resends, a bounded number of times."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks import client
from dockyard.tasks.errors import BuildError, ContextMissing
from dockyard.tasks.client import CONTEXT_RESENDS
from tests.unit.support import make_settings


@pytest.fixture
def settings() -> Settings:
    return make_settings(wait_wake_s=0.01)


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    return tmp_path


class Sent:
    """What the caller sent: each ``apply_async`` of a build signature."""

    def __init__(self) -> None:
        self.count = 0

    def signature(self, spec: Any, app: Any) -> Any:
        sent = self

        class Signature:
            def apply_async(self) -> str:
                sent.count += 1
                return f"task-{sent.count}"

        return Signature()


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch, fake_redis: fakeredis.FakeRedis, settings: Settings) -> Sent:
    """The broker is a counter; Redis (cache) is fakeredis; the context store is ``fake_store``."""
    recorder = Sent()
    monkeypatch.setattr(client, "_spec_signature", recorder.signature)
    monkeypatch.setattr(client, "redis_for", lambda _settings: fake_redis)
    monkeypatch.setattr(client, "get_settings", lambda: settings)
    return recorder


def answers(store: fakeredis.FakeRedis, *outcomes: Exception | None) -> Any:
    """An ``await_build`` that, per send, empties the store and raises the outcome, or answers (None)."""
    pending = list(outcomes)

    def await_build(result: Any, spec: Any, settings: Settings, **_: Any) -> dict[str, Any]:
        outcome = pending.pop(0)
        if outcome is not None:
            store.flushall()  # the worker found the context gone (evicted): nothing of it is left
            raise outcome
        assert store.exists(f"unit:team:default:ctx:{spec.context_digest}:meta"), "the context is in the store when the worker reads it"
        return {"image_id": "sha256:" + "1" * 64, "sent": result}

    return await_build


def test_a_context_that_left_the_store_is_uploaded_again_and_the_build_resent(
    sent: Sent, fake_store: fakeredis.FakeRedis, fake_redis: fakeredis.FakeRedis, context: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client, "await_build", answers(fake_store, ContextMissing("Build context x is not in the store"), None))
    lines: list[str] = []
    result = client.build("reg.io/team/app", tag="v1", path=str(context), on_output=lines.append)
    assert result["sent"] == "task-2" and sent.count == 2
    assert lines == [
        "dockyard: Build context x is not in the store; uploading it again and resending the build (1/2)\n"
    ]
    assert not fake_redis.keys("*ctx:*"), "nothing of the context in the broker's Redis"


def test_resends_are_bounded_then_the_clear_error_is_raised(
    sent: Sent, fake_store: fakeredis.FakeRedis, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    missing = [ContextMissing(f"gone {n}") for n in range(CONTEXT_RESENDS + 1)]
    monkeypatch.setattr(client, "await_build", answers(fake_store, *missing))
    with pytest.raises(ContextMissing, match=f"gone {CONTEXT_RESENDS}"):
        client.build("reg.io/team/app", tag="v1", path=str(context))
    assert sent.count == 1 + CONTEXT_RESENDS


def test_other_failures_are_not_resent(
    sent: Sent, fake_store: fakeredis.FakeRedis, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "await_build", answers(fake_store, BuildError("failing RUN")))
    with pytest.raises(BuildError):
        client.build("reg.io/team/app", tag="v1", path=str(context))
    assert sent.count == 1


def test_a_shared_path_context_is_never_uploaded_nor_resent(
    sent: Sent, fake_store: fakeredis.FakeRedis, context: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client, "get_settings", lambda: make_settings(context_transport="path"))
    monkeypatch.setattr(client, "await_build", answers(fake_store, ContextMissing("not there")))
    with pytest.raises(ContextMissing):
        client.build("reg.io/team/app", tag="v1", path=str(context))
    assert sent.count == 1 and not fake_store.keys("*")
