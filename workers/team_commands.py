"""The operator's team commands: ``dockyard audit`` (the push audit trail) and ``dockyard teams acl``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any

from dockyard.config.settings import get_settings
from dockyard.config.teams import load_teams, parse_teams


def cmd_audit(args: argparse.Namespace) -> int:
    """List the audited pushes (oldest first), of one team with --team, from --since on."""
    from dockyard.tasks.keyspace import redis_for
    from dockyard.tasks.teams.audit import read_audit

    settings = get_settings()
    since = time.time() - args.since if args.since is not None else None
    entries = read_audit(redis_for(settings), settings, team=args.team, since=since, limit=args.limit)
    if args.json:
        print(json.dumps([entry.as_json() for entry in entries], indent=2, sort_keys=True))
        return 0
    print("TIME\tTEAM\tREPOSITORY\tTAGS\tDIGEST\tHOST\tLOGIN\tCACHE")
    for entry in entries:
        stamp = datetime.fromtimestamp(entry.at, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        print(f"{stamp}\t{entry.team}\t{entry.repository}\t{','.join(entry.tags)}\t{entry.digest or '-'}"
              f"\t{entry.host}\t{entry.login}\t{entry.cache}")
    return 0


def cmd_teams_acl(args: argparse.Namespace) -> int:
    """Print the ACL lines of the declared teams' Redis users (for ``ACL LOAD`` or ``ACL SETUSER``)."""
    from dockyard.workers.redis_acl import FARM_QUEUES, NO_ANONYMOUS, team_users, worker_user

    if (args.worker_user is None) != (args.worker_password_env is None):
        raise ValueError("--worker-user and --worker-password-env go together")
    settings = get_settings()
    path = args.teams or settings.teams_file
    teams = parse_teams(sys.stdin.read(), source="<stdin>") if path == "-" else load_teams(path)
    if args.worker_user is not None:
        # an option's variable, read by this command only (the password never on the command line)
        password = os.environ.get(args.worker_password_env, "")
        if not password:
            raise ValueError(f"--worker-password-env: {args.worker_password_env} is unset or empty")
        print(NO_ANONYMOUS)
        print(worker_user(args.worker_user, password, server=args.server))
    for line in team_users(teams, server=args.server, key_prefix=args.key_prefix or settings.key_prefix,
                           queues=args.queues or list(FARM_QUEUES)):
        print(line)
    return 0


def add_commands(sub: Any, command: Callable[..., argparse.ArgumentParser], seconds: Callable[[str], float],
                 positive_int: Callable[[str], int]) -> None:
    """Add ``audit`` and ``teams`` to the CLI's subcommands."""
    audit = command(sub, "audit", "List the farm's audited pushes: team, repository, tags, digest, host, time.",
                    "List the pushes the workers answered, oldest first, from the audit stream (bounded by "
                    "DOCKYARD_AUDIT_MAX_ENTRIES and DOCKYARD_AUDIT_MAX_AGE_S). An operator command: it needs "
                    "the worker (or admin) Redis user.")
    audit.add_argument("--team", help="only this team's pushes")
    audit.add_argument("--since", type=seconds, metavar="SECONDS", help="only pushes of the last SECONDS")
    audit.add_argument("--limit", type=positive_int, default=1000, help="at most this many, the latest (default 1000)")
    audit.add_argument("--json", action="store_true", help="print the entries as a JSON list")
    audit.set_defaults(run=cmd_audit)

    teams_parser = command(sub, "teams", "The declared teams' Redis users.")
    teams = teams_parser.add_subparsers(dest="teams_command", required=True, metavar="ACTION", title="actions")
    acl = command(teams, "acl", "Print the ACL lines of the teams' Redis users, for ACL LOAD or ACL SETUSER.",
                  "Print one 'user dockyard-team-<name> ...' line per declared team: what the team's user may "
                  "do on the farm's Redis (--server farm) or the context store (--server store); with "
                  "--worker-user, a whole ACL file (no anonymous access, the workers' user, the teams). "
                  "See docs/security.md.")
    acl.add_argument("--server", choices=["farm", "store"], default="farm", help="which Redis (default farm)")
    acl.add_argument("--teams", metavar="FILE", help="the teams file ('-': stdin); default DOCKYARD_TEAMS_FILE")
    acl.add_argument("--key-prefix", help="dockyard's key prefix; default DOCKYARD_KEY_PREFIX")
    acl.add_argument("--queues", action="append", metavar="GLOB",
                     help="a shared queue (glob) the teams may send to; repeatable; default dockyard.build*")
    acl.add_argument("--worker-user", metavar="NAME",
                     help="print a whole ACL file: 'default' off, this workers' user, then the teams' lines")
    acl.add_argument("--worker-password-env", metavar="VAR",
                     help="the variable holding the workers' user's password (with --worker-user)")
    acl.set_defaults(run=cmd_teams_acl)
