"""dockyard.tasks.worker.push: an image rebuilt for a push is pushed only while it is pinned (fakeredis, the fake engine).

A push whose image was lost rebuilds it (``execute_build``), whose pins end when
it returns. If the disk budget claims the rebuilt image for eviction then
(``image_use.claim_for_eviction``), the push must not push it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks import keyspace
from dockyard.tasks.context.store import upload_context
from dockyard.tasks.errors import PushError
from dockyard.tasks.farm import image_use
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec, PushRequest
from dockyard.tasks.worker import push as worker_push
from dockyard.tasks.worker.build import execute_build
from dockyard.tasks.worker.here import Here
from dockyard.tasks.worker.push import execute_push
from tests.unit.fakes import FakeEngine, Output
from tests.unit.support import make_settings

NAME = "reg.io/team/app"


@pytest.fixture
def settings() -> Settings:
    return make_settings(host_id="h1", lease_s=0.5, wait_wake_s=0.01)


@pytest.fixture
def here(settings: Settings, fake_redis: fakeredis.FakeRedis, engine: FakeEngine) -> Here:
    return Here(settings, fake_redis, engine, Output())  # type: ignore[arg-type]


def lost_image(tmp_path: Path, here: Here, engine: FakeEngine) -> str:
    """An image built here, then removed behind dockyard's back: a push of it rebuilds it."""
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.py /\n")
    (tmp_path / "app.py").write_text("print('hi')\n")
    spec, packed = prepare_build({"image_name": NAME, "tag": "v1", "path": str(tmp_path)}, here.settings)
    try:
        upload_context(keyspace.context_store_for(here.settings), here.settings, packed)
    finally:
        packed.close()
    built = execute_build(spec, here=here)
    assert not isinstance(built, dict) or built["cache"] == "built"
    image_id = str(built["image_id"])  # type: ignore[index]
    engine.delete(image_id)
    return image_id


def evicting_after_build(
    monkeypatch: pytest.MonkeyPatch, here: Here, engine: FakeEngine, *, remove: bool
) -> list[str]:
    """Each rebuild's image is claimed for eviction as soon as the build returns (its pins released);
    with ``remove``, the disk budget also removes it and ends the eviction, as a pass does. The claimed ids."""
    claimed: list[str] = []

    def build_then_claim(spec: BuildSpec, **kwargs: Any) -> Any:
        result = execute_build(spec, **kwargs)
        image_id = result["image_id"]
        if image_use.claim_for_eviction(here.connection, here.settings, here.settings.host_id, image_id):
            claimed.append(image_id)
            if remove:
                engine.delete(image_id)
                image_use.end_eviction(here.connection, here.settings, here.settings.host_id, image_id)
        return result

    monkeypatch.setattr(worker_push, "execute_build", build_then_claim)
    return claimed


def test_a_rebuilt_image_claimed_for_eviction_is_not_pushed(
    tmp_path: Path, here: Here, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = lost_image(tmp_path, here, engine)
    claimed = evicting_after_build(monkeypatch, here, engine, remove=False)
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": lost})
    with pytest.raises(PushError, match="evicted"):
        execute_push(request, None, here=here)
    assert claimed, "the rebuilt image was claimed (no pin of the push held it)"
    assert engine.pushes == [], "an image being evicted is never pushed"


def test_a_rebuilt_image_removed_by_the_budget_is_built_again_and_that_one_pushed(
    tmp_path: Path, here: Here, engine: FakeEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    lost = lost_image(tmp_path, here, engine)
    claimed = evicting_after_build(monkeypatch, here, engine, remove=True)
    first_claims: list[str] = []
    real = worker_push.execute_build

    def only_the_first_is_evicted(spec: BuildSpec, **kwargs: Any) -> Any:
        if first_claims:
            return execute_build(spec, **kwargs)
        result = real(spec, **kwargs)
        first_claims.append(result["image_id"])
        return result

    monkeypatch.setattr(worker_push, "execute_build", only_the_first_is_evicted)
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": lost})
    result = execute_push(request, None, here=here)
    assert claimed == first_claims and len(claimed) == 1
    assert engine.pushes == [f"{NAME}:v1"]
    pushed = engine.refs[f"{NAME}:v1"]
    assert pushed not in claimed and pushed in engine.image_ids, "the image pushed is the one built again, still here"
    assert result["cache"] == "built" and result["host"] == "h1"


def test_a_rebuilt_image_left_alone_is_pushed_once(
    tmp_path: Path, here: Here, engine: FakeEngine
) -> None:
    lost = lost_image(tmp_path, here, engine)
    request = PushRequest.parse({"image_name": NAME, "tag": "v1", "image_id": lost})
    result = execute_push(request, None, here=here)
    assert engine.pushes == [f"{NAME}:v1"] and len(engine.builds) == 2
    assert result["cache"] == "built"
