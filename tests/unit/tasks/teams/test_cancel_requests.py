"""Cancel requests (``dockyard.tasks.teams.cancel``): one key per task in its team's namespace, with a TTL."""

from __future__ import annotations

import fakeredis
import pytest

from dockyard.tasks.errors import Cancelled, DockyardError, InvalidInput, TransientError
from dockyard.tasks.teams import cancel
from tests.unit.support import make_settings


def test_the_cancel_key_is_in_the_teams_own_namespace() -> None:
    settings = make_settings(team="team-a")
    assert cancel.cancel_key(settings, "4f1c-id") == "unit:team:team-a:cancel:4f1c-id"


@pytest.mark.parametrize("task_id", ["", "a b", "x*", "id\nmore", "-lead", "a" * 201, 7])
def test_a_task_id_that_could_reach_another_key_is_refused(task_id: object) -> None:
    with pytest.raises(InvalidInput, match="Not a task id"):
        cancel.cancel_key(make_settings(), task_id)  # type: ignore[arg-type]


def test_a_request_is_kept_for_its_ttl_and_read_in_the_same_team_only(fake_redis: fakeredis.FakeRedis) -> None:
    a, b = make_settings(team="team-a"), make_settings(team="team-b")
    cancel.request_cancel(fake_redis, a, "t1")
    ttl = fake_redis.ttl(cancel.cancel_key(a, "t1"))
    assert 0 < ttl <= cancel.CANCEL_TTL_S
    assert cancel.is_cancelled(fake_redis, a, "t1")
    assert not cancel.is_cancelled(fake_redis, b, "t1"), "another team's request is not this team's"
    assert not cancel.is_cancelled(fake_redis, a, "t2")
    assert not cancel.is_cancelled(fake_redis, a, None)


def test_check_raises_cancelled_naming_the_task_and_what_it_did(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    cancel.check(fake_redis, settings, "t1", doing="it did not start")  # nothing asked: nothing raised
    cancel.check(fake_redis, settings, None, doing="no task")
    cancel.request_cancel(fake_redis, settings, "t1")
    with pytest.raises(Cancelled, match=r"Task t1 was cancelled by its team \(it did not start\)"):
        cancel.check(fake_redis, settings, "t1", doing="it did not start")


def test_first_cancelled_of_a_calls_copies(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    assert cancel.first_cancelled(fake_redis, settings, set()) is None
    assert cancel.first_cancelled(fake_redis, settings, {"t1", "t2"}) is None
    cancel.request_cancel(fake_redis, settings, "t2")
    assert cancel.first_cancelled(fake_redis, settings, {"t1", "t2"}) == "t2"


def test_cancelled_is_a_dockyard_error_that_is_never_retried() -> None:
    from dockyard.tasks.celery_tasks import _RETRY

    assert issubclass(Cancelled, DockyardError)
    assert not issubclass(Cancelled, TransientError)
    assert not any(issubclass(Cancelled, each) for each in _RETRY["autoretry_for"])


def test_a_task_whose_id_no_request_can_name_runs_as_ever(fake_redis: fakeredis.FakeRedis) -> None:
    settings = make_settings()
    cancel.check(fake_redis, settings, "my build #1", doing="it did not start")  # a hand-made id: never cancelled
    assert cancel.first_cancelled(fake_redis, settings, {"my build #1"}) is None
