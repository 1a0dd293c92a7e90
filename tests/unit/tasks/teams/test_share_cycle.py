"""dockyard.tasks.teams.share_cycle: the order a worker polls its teams' queues in, weighted by share."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from kombu.utils.scheduling import cycle_by_name

from dockyard.tasks.teams.share_cycle import FIXED_ORDER, ShareCycle, queue_order_strategy, team_shares
from tests.unit.support import make_settings

QUEUES = ["dockyard.build@a", "dockyard.build@b", "dockyard.host.h1@a", "dockyard.host.h1@b"]


def take(cycle: ShareCycle, waiting: set[str]) -> str | None:
    """What one BRPOP over ``cycle``'s order takes: the first queue that holds a message (the transport then rotates)."""
    for queue in cycle.consume(len(cycle.items)):
        if queue in waiting:
            cycle.rotate(queue)
            return queue
    return None


def teams_taken(cycle: ShareCycle, waiting: set[str], n: int) -> list[str]:
    return [str(take(cycle, waiting)).rpartition("@")[2] for _ in range(n)]


def test_equal_shares_take_one_message_of_each_busy_team_in_turn() -> None:
    cycle = ShareCycle(shares={"a": 1, "b": 1})
    cycle.update(QUEUES)
    assert teams_taken(cycle, set(QUEUES), 6) == ["a", "b", "a", "b", "a", "b"]


def test_shares_weight_the_turns_of_busy_teams() -> None:
    cycle = ShareCycle(shares={"a": 3, "b": 1})
    cycle.update(QUEUES)
    assert Counter(teams_taken(cycle, set(QUEUES), 400)) == {"a": 300, "b": 100}


def test_an_idle_teams_share_is_lent_and_it_comes_back_first_in_line_without_a_burst() -> None:
    cycle = ShareCycle(shares={"a": 1, "b": 1})
    cycle.update(QUEUES)
    only_a = {"dockyard.build@a", "dockyard.host.h1@a"}
    assert teams_taken(cycle, only_a, 50) == ["a"] * 50, "B waits for nothing: A takes every slot"
    assert teams_taken(cycle, set(QUEUES), 6) == ["b", "a", "b", "a", "b", "a"], "B is next, then they alternate"


def test_a_teams_host_queue_and_shared_queue_are_one_turn_in_the_workers_given_order() -> None:
    cycle = ShareCycle(shares={"a": 1, "b": 1})
    cycle.update(QUEUES)
    assert take(cycle, {"dockyard.host.h1@a", "dockyard.host.h1@b"}) == "dockyard.host.h1@a"
    assert take(cycle, {"dockyard.build@a", "dockyard.host.h1@a", "dockyard.host.h1@b"}) == "dockyard.host.h1@b"
    assert cycle.consume(2) == ["dockyard.build@a", "dockyard.build@b"], "ties: the worker's own order"


def test_a_queue_of_no_team_and_a_team_without_a_share_count_as_share_one() -> None:
    cycle = ShareCycle(shares={"a": 2})
    cycle.update(["extra", "dockyard.build@a", "dockyard.build@c"])
    assert Counter(str(take(cycle, set(cycle.items))) for _ in range(40)) == {
        "dockyard.build@a": 20, "extra": 10, "dockyard.build@c": 10,
    }


def test_workers_poll_with_the_share_cycle_or_in_a_fixed_order_first_team_first(tmp_path: Path) -> None:
    path = tmp_path / "teams.toml"
    path.write_text("[teams.a]\nshare = 3\n\n[teams.b]\n")
    settings = make_settings(teams_file=str(path))
    assert team_shares(settings) == {"a": 3.0, "b": 1.0}
    assert queue_order_strategy(settings) == "dockyard.tasks.teams.share_cycle:ShareCycle"
    assert isinstance(cycle_by_name(queue_order_strategy(settings))(), ShareCycle), "kombu loads it by its path"
    fixed = cycle_by_name(queue_order_strategy(settings.model_copy(update={"fair_share": False})))()
    assert queue_order_strategy(settings.model_copy(update={"fair_share": False})) == FIXED_ORDER
    fixed.update(QUEUES)
    for _ in range(3):
        fixed.rotate(fixed.consume(4)[0])
    assert fixed.consume(4) == QUEUES, "fair share off: always the first team's queue first"
