"""dockyard.tasks.worker.fast_answer.answer_build: a hit whose main tag is already recorded here but
which asks for a new additional tag tags the image on the engine (issue 19, item 5).

fakeredis and a fake engine; specs made by ``prepare_build`` as a caller makes them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fakeredis
import pytest

from dockyard.config.settings import Settings
from dockyard.tasks.cache.single_flight import build_cache
from dockyard.tasks.farm import hosts
from dockyard.tasks.prepare import prepare_build
from dockyard.tasks.request.spec import BuildSpec
from dockyard.tasks.worker import fast_answer
from dockyard.tasks.worker.here import Here
from tests.probes import store_entry
from tests.unit.fakes import FakeEngine
from tests.unit.support import make_settings

IMAGE = "sha256:" + "1" * 64
NAME = "reg.io/team/app"


@pytest.fixture
def settings() -> Settings:
    return make_settings(host_id="h1")


@pytest.fixture
def context(tmp_path: Path) -> Path:
    (tmp_path / "Dockerfile").write_text("FROM scratch\nCOPY app.txt /\n")
    (tmp_path / "app.txt").write_text("one\n")
    return tmp_path


def spec_for(settings: Settings, context: Path, **params: Any) -> BuildSpec:
    spec, packed = prepare_build({"image_name": NAME, "tag": "v1", "path": str(context), **params}, settings)
    packed.close()
    return spec


def answer(spec: BuildSpec, connection: fakeredis.FakeRedis, settings: Settings, engine: FakeEngine) -> Any:
    return fast_answer.answer_build(spec, here=Here(settings, connection, engine, lambda _text: None))  # type: ignore[arg-type]


def test_a_hit_with_its_main_tag_recorded_applies_a_new_additional_tag_on_the_engine(
    settings: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    first = spec_for(settings, context)
    store_entry(build_cache(fake_redis, settings), first.key, {"image_id": IMAGE}, host="h1")
    hosts.record_image(fake_redis, settings, host_id="h1", image_id=IMAGE, references=first.references)
    engine = FakeEngine()
    engine.add_image(IMAGE, [("sha256:layer", 10)], tags=(f"{NAME}:v1",))  # built here as v1

    again = spec_for(settings, context, additional_tags=["extra"])
    assert again.key == first.key and again.tags == ["v1", "extra"]
    result = answer(again, fake_redis, settings, engine)

    assert result is not None and (result["cache"], result["host"], result["image_id"]) == ("hit", "h1", IMAGE)
    assert engine.refs.get(f"{NAME}:extra") == IMAGE, "the new additional tag is applied on the engine"
    assert engine.refs == {f"{NAME}:v1": IMAGE, f"{NAME}:extra": IMAGE}
    here = {"host": "h1", "image_id": IMAGE}
    assert hosts.locate_images(fake_redis, settings, again.references) == [here, here], "and recorded as present"


def test_a_hit_with_every_tag_recorded_is_answered_without_the_engine(
    settings: Settings, fake_redis: fakeredis.FakeRedis, context: Path
) -> None:
    """The other side of the rule: all tags already in place, the engine is not asked."""
    spec = spec_for(settings, context, additional_tags=["extra"])
    store_entry(build_cache(fake_redis, settings), spec.key, {"image_id": IMAGE}, host="h1")
    hosts.record_image(fake_redis, settings, host_id="h1", image_id=IMAGE, references=spec.references)
    engine = FakeEngine()  # holds nothing: tagging would fail
    result = answer(spec, fake_redis, settings, engine)
    assert result is not None and result["cache"] == "hit"
    assert engine.refs == {}
