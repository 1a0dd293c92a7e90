"""Fair share between teams: the order a worker polls its teams' queues in, a rotation weighted by share.

kombu's Redis transport takes a worker's next message with one ``BRPOP`` over
every queue it consumes, in the order its *queue cycle* gives
(``queue_order_strategy``); Redis answers from the first queue of that list
that holds a message, and the transport tells the cycle which queue it was.
``ShareCycle`` is such a cycle (kombu loads it by its import path): it orders
the queues by their team's *pass* (stride scheduling). Each message taken
from a team's queue (shared, host or fast: ``<queue>@<team>``) adds
``1 / share`` to that team's pass; the team with the lowest pass is polled
first, ties and a team's own queues in the worker's given order. So when
several teams have work waiting, a worker takes their messages in the ratio
of their shares (equal shares: one each in turn); a team with nothing waiting
costs nothing (``BRPOP`` skips its empty queues: its share is lent to the
busy ones). A team that was idle comes back at the current pass, not with
the credit of its idle time: it is first in line, not first for a burst.

Each worker keeps its own passes; every worker of the farm does the same, so
the ratio holds over the farm. Shares come from the worker's teams file
(``share``, default 1; ``dockyard.config.teams``). ``fair_share = false``
(``DOCKYARD_FAIR_SHARE``) uses kombu's ``priority`` cycle instead: a fixed
order, the first team's queues first (the side-by-side baseline of
``benchmarks/fair_share.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from dockyard.config.settings import Settings, get_settings, queue_team
from dockyard.config.teams import InvalidTeams

FIXED_ORDER = "priority"  # kombu's cycle of a fixed order (fair share off)
NO_TEAM = ""  # the group of a queue that names no team (an extra queue given as is)

logger = logging.getLogger("dockyard.fair_share")


def queue_order_strategy(settings: Settings) -> str:
    """kombu's ``queue_order_strategy`` for a worker of ``settings``: this module's cycle, or a fixed order."""
    return f"{__name__}:ShareCycle" if settings.fair_share else FIXED_ORDER


def team_shares(settings: Settings) -> dict[str, float]:
    """Each declared team's share; an unreadable teams file (the worker would not start anyway): none."""
    try:
        return {name: team.share for name, team in settings.declared_teams.teams.items()}
    except InvalidTeams as exc:
        logger.warning("no shares (every team gets 1): %s", exc)
        return {}


class ShareCycle:
    """kombu's queue-cycle interface (``update``, ``consume``, ``rotate``), weighted by team shares."""

    def __init__(self, items: Iterable[str] | None = None, *, shares: dict[str, float] | None = None) -> None:
        self.items: list[str] = list(items or [])
        self._shares = shares
        self.passes: dict[str, float] = {}

    def shares(self) -> dict[str, float]:
        """The teams' shares, read from the settings when first needed (a caller's channel never needs them)."""
        if self._shares is None:
            self._shares = team_shares(get_settings())
        return self._shares

    def stride(self, team: str) -> float:
        return 1.0 / self.shares().get(team, 1.0)

    def update(self, items: Iterable[str]) -> None:
        """The queues consumed now (kombu calls it on each consume and cancel)."""
        self.items[:] = list(items)
        for team in {self.team_of(queue) for queue in self.items}:
            self.passes.setdefault(team, min(self.passes.values(), default=0.0))

    @staticmethod
    def team_of(queue: str) -> str:
        return queue_team(queue) or NO_TEAM

    def consume(self, n: int) -> list[str]:
        """The first ``n`` queues, lowest pass first (a stable sort: the given order breaks ties)."""
        ordered = sorted(self.items, key=lambda queue: self.passes.get(self.team_of(queue), 0.0))
        return ordered[:n]

    def rotate(self, last_used: str) -> str:
        """A message came from ``last_used``: its team's pass moves on by its stride; a team whose pass
        lags the pass it was served at (it had nothing waiting) catches up to it."""
        team = self.team_of(last_used)
        now = self.passes.get(team, 0.0)
        self.passes[team] = now + self.stride(team)
        for other, at in self.passes.items():
            if at < now:
                self.passes[other] = now
        return last_used
