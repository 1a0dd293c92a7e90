"""The Redis ACL users of the farm's teams, from the teams file: one generator for provisioning, operators and tests.

    dockyard teams acl --server farm  [--teams FILE] [--key-prefix P] [--queues GLOB]...
    dockyard teams acl --server store [--teams FILE] [--key-prefix P]

prints one ``user dockyard-team-<name> ...`` line per team, for an ACL file
(``ACL LOAD``) or, line by line, for ``ACL SETUSER``. What a team's user may
do is written once, here (``docs/security.md`` explains each right):

farm Redis: read the shared build cache, host records and placement state
by exact key; read its own namespace (``team:<name>:``), results
(``celery-task-meta-<name>.*``) and their channels; write only its own
``cacheable`` entries (and their wake-up streams), its cancel requests (``cancel:``) and waiting
marks (``waiting:``), hit notes (``seen:``) and placement bookkeeping;
enqueue (LPUSH, nothing else) only to its own queues (``<queue>@<name>``);
read the depth (LLEN) of its own queues and of host queues. No SCAN, KEYS, RANDOMKEY or PUBSUB
CHANNELS (names of others' keys and channels), no administration.

context store: read and write its own contexts (``team:<name>:ctx:*``) only.

With ``--worker-user NAME --worker-password-env VAR`` it prints a whole ACL file:
no anonymous access (``default`` off), the workers' user with the rights
``workers/provision.sh`` gives it (``WORKER_RULES``), then the teams' lines
(``compose.yaml``'s ``acl`` service writes both Redis' files so).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import redis

from dockyard.config import defaults
from dockyard.config.teams import Team, Teams
from dockyard.tasks.teams.keys import team_namespace

FARM_QUEUES = ("dockyard.build*",)  # the farm's shared queues (DOCKYARD_BUILD_QUEUE of each pool) a team may send to
SHARED_READS = (  # the farm's keys a caller reads by exact key: shared on purpose (content-addressed, or placement)
    "build:*", "lease:*", "failed:*", "done:build:*", "hosts:*", "hosts-index", "lineage:*", "lineages:*",
    "inflight:*", "inflight-fast:*", "keyof:*",
)
NO_LISTING = "-scan -randomkey -pubsub|channels -pubsub|shardchannels -pubsub|numsub -pubsub|shardnumsub -pubsub|numpat"
PRIORITY_KEYS = "[^a-z0-9-]*"  # kombu keeps a queue's priorities in <queue>\x06\x16<n>: no character a team name goes on with
SCRIPTS = "+eval +evalsha +eval_ro +evalsha_ro +script|load +script|exists"  # keys of a script are checked as any command's


NO_ANONYMOUS = "user default off resetpass resetkeys resetchannels -@all"  # the first line of an ACL file
WORKER_RULES = {  # the workers' (and operators') user: the same rules as workers/provision.sh's redis_acl and store_acl
    "farm": "~* &* +@all -@admin +client|list",
    "store": "~* resetchannels +@all -@admin -@dangerous -@pubsub +info",
}


def worker_user(name: str, password: str, *, server: str) -> str:
    """The ACL line of the workers' user ``name`` (its password kept as a SHA-256) on ``server`` (farm or store)."""
    if server not in WORKER_RULES:
        raise ValueError(f"unknown server {server!r}: farm or store")
    if not password:
        raise ValueError(f"the password of the workers' user {name!r} is empty")
    digest = hashlib.sha256(password.encode()).hexdigest()
    return f"user {name} on #{digest} {WORKER_RULES[server]}"


def _login(team: Team) -> str:
    """``reset`` (every earlier right and selector gone), then ``on`` with the team's password hashes,
    or ``off`` (no login at all) for a team declaring none."""
    if not team.redis_password_sha256:
        return "reset off"
    return "reset on " + " ".join(f"#{digest}" for digest in team.redis_password_sha256)


def farm_user(team: Team, *, key_prefix: str, queues: Iterable[str] = FARM_QUEUES) -> str:
    """The ACL line of ``team``'s user on the farm's Redis (broker, results and cache)."""
    own = team_namespace(key_prefix, team.name)
    host_queues = f"{defaults.HOST_QUEUE_PREFIX}*"
    reads = " ".join(f"%R~{key_prefix}{pattern}" for pattern in SHARED_READS)
    own_queues = [f"{queue}@{team.name}{suffix}" for queue in [*queues, host_queues] for suffix in ("", PRIORITY_KEYS)]
    send_to = " ".join(f"~{queue}" for queue in own_queues)
    return " ".join([
        f"user {team.redis_user} {_login(team)}",
        f"+@all -@admin -@dangerous -@scripting -@list {SCRIPTS} {NO_LISTING}",
        reads,
        f"%R~{own}* ~{own}call:* ~{own}done:call:* ~{own}cancel:* ~{own}waiting:* ~{key_prefix}seen:*",
        f"%R~celery-task-meta-{team.name}.* &celery-task-meta-{team.name}.*",
        " ".join(f"~{queue}:spills" for queue in queues), f"~{host_queues}:placed",
        f"({send_to} resetchannels -@all +lpush)",
        f"(%R~{host_queues} {' '.join(f'%R~{queue}' for queue in own_queues)} resetchannels -@all +llen)",
        f"(~_kombu.binding.*@{team.name} ~_kombu.binding_permanent.*@{team.name} resetchannels -@all +sadd +smembers)",
        "(resetkeys &/*.celeryev/* -@all +publish)",
    ])


def store_user(team: Team, *, key_prefix: str) -> str:
    """The ACL line of ``team``'s user on the context store."""
    own = team_namespace(key_prefix, team.name)
    return (
        f"user {team.redis_user} {_login(team)} "
        "+@read +@write +@keyspace +@connection +@transaction -@admin -@dangerous -@pubsub -@scripting -@blocking "
        f"{NO_LISTING} ~{own}ctx:*"
    )


def team_users(teams: Teams, *, server: str, key_prefix: str, queues: Iterable[str] = FARM_QUEUES) -> list[str]:
    """One ACL line per declared team for ``server`` (``farm`` or ``store``)."""
    if server == "farm":
        return [farm_user(team, key_prefix=key_prefix, queues=list(queues)) for team in teams.teams.values()]
    if server == "store":
        return [store_user(team, key_prefix=key_prefix) for team in teams.teams.values()]
    raise ValueError(f"unknown server {server!r}: farm or store")


def setuser_arguments(line: str) -> tuple[str, list[str]]:
    """The user name and the rules of one ACL line, as ``ACL SETUSER`` takes them (a selector is one argument)."""
    words = line.split()
    if len(words) < 2 or words[0] != "user":
        raise ValueError(f"not an ACL user line: {line[:40]!r}")
    rules: list[str] = []
    for word in words[2:]:
        if rules and rules[-1].startswith("(") and not rules[-1].endswith(")"):
            rules[-1] += " " + word
        else:
            rules.append(word)
    return words[1], rules


def apply_users(connection: redis.Redis, lines: Iterable[str]) -> list[str]:
    """Create or replace each line's user with ``ACL SETUSER`` (an admin's connection); the user names."""
    names = []
    for line in lines:
        name, rules = setuser_arguments(line)
        connection.execute_command("ACL", "SETUSER", name, *rules)  # type: ignore[no-untyped-call]
        names.append(name)
    return names
