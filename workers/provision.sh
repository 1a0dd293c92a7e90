#!/usr/bin/env bash
# Provision a local dockyard build farm on a Debian 12/13 machine (run as root).
#
# Installs what is missing and starts, in the background, what does not run yet:
#   - N Docker engines without any bridge network (host 1 = the default engine
#     on /var/run/docker.sock, hosts 2..N on /run/dockyard-host<k>.sock),
#   - the buildx and compose v2 CLI plugins (Debian 13 packages, also used on Debian 12),
#   - a registry with htpasswd auth on 127.0.0.1:5000,
#   - the farm's teams file <state>/teams.toml (made once, then the operator's:
#     team-a and team-b, each pushing with the farm's login to its own
#     127.0.0.1:5000/<team>/*; docs/security.md, "Adding a team"),
#   - the farm's own Redis on 127.0.0.1:6390 with ACL users (the machine's Redis
#     on 6379, if any, is left alone): `default` off, dockyard-worker (workers
#     and operators), dockyard-admin (this script, the tests' set-up), and one
#     user per declared team (`dockyard teams acl`); passwords made once in the state dir,
#   - the context store, a Redis of its own on 127.0.0.1:6391 with the same
#     users: a memory budget (maxmemory) and volatile-ttl, nothing on disk, so
#     contexts never fill the farm's Redis (the broker and result backend),
##   - the base image 127.0.0.1:5000/base/busybox:1 (made locally from
#     busybox-static; nothing is ever pulled from outside),
#   - the project's virtual env at <repo>/.venv.
# Everything already running or present is reused, so the script is idempotent:
# a second run only checks and changes nothing. All traffic stays on loopback.
#
# Usage: provision.sh [--hosts N] [--bridge]
#   DOCKYARD_LOCAL_BRIDGE=1 (or --bridge): start engine 1 with Docker's default
#                        bridge (docker0, with iptables and NAT), so its build
#                        steps can reach package registries; default off (no
#                        bridge anywhere). Engines 2..N keep none (they would
#                        share docker0). Only where a bridge is allowed; never in the tests.
#   DOCKYARD_FARM_DIR    state dir (default /var/lib/dockyard-farm)
#   DOCKYARD_FARM_HOSTS  number of Docker engines (default 2; --hosts wins)
#   DOCKYARD_DEBIAN_MIRROR  Debian mirror for buildx and compose on Debian 12
#                        (default: the one in the system's apt sources)
#   DOCKYARD_ENGINE_START_TIMEOUT  seconds to wait for a starting dockerd
#                        (default 600; a killed one cleans up first)
#   DOCKYARD_FARM_REDIS_PORT  loopback port of the farm's Redis (default 6390)
#   DOCKYARD_FARM_CONTEXT_STORE_PORT  loopback port of the context store (default 6391)
#   DOCKYARD_CONTEXT_STORE_MAX_BYTES  the context store's budget (default 2147483648);
#                        its maxmemory is 7/8 of it, the rest for chunks being received
#                        (a running store takes a new value at once)
# Progress goes to stderr; the last line on stdout is the path of farm.env,
# a shell-sourceable file with the DOCKYARD_* settings of workers and operators
# (the worker user's URLs, the farm's registry login, the private sealing key,
# the teams file, and the admin user's URLs for the test suite's set-up).
# Each team's callers get <state>/<team>.env instead: the team's Redis and
# store URLs, DOCKYARD_TEAM, its own registry pull login and the public key
# only, never the workers' login or the private key.
set -euo pipefail
umask 022

STATE=${DOCKYARD_FARM_DIR:-/var/lib/dockyard-farm}
HOSTS=${DOCKYARD_FARM_HOSTS:-2}
LOCAL_BRIDGE=${DOCKYARD_LOCAL_BRIDGE:-0}  # 1: engine 1 gets Docker's default bridge (docs/operations.md)
ENGINE_START_TIMEOUT=${DOCKYARD_ENGINE_START_TIMEOUT:-600}
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
REGISTRY=127.0.0.1:5000
REGISTRY_USER=dockyard
BASE_IMAGE=$REGISTRY/base/busybox:1
DEFAULT_SOCK=unix:///var/run/docker.sock
REDIS_PORT=${DOCKYARD_FARM_REDIS_PORT:-6390}
REDIS_DIR=$STATE/redis
STORE_PORT=${DOCKYARD_FARM_CONTEXT_STORE_PORT:-6391}
STORE_DIR=$STATE/context-store
STORE_MAX_BYTES=${DOCKYARD_CONTEXT_STORE_MAX_BYTES:-2147483648}
# seven eighths of the budget; the last eighth is for chunks being received (tasks/context/store.py maxmemory_for)
STORE_MAXMEMORY=$((STORE_MAX_BYTES / 8 * 7))
# dockyard's key prefix on this farm (the tests and benchmarks make teams of their own, for their prefixes)
KEY_PREFIX=dockyard:
TEAMS_FILE=$STATE/teams.toml
EXAMPLE_TEAMS=(team-a team-b)
SYS_PYTHON=/usr/bin/python3
export DEBIAN_FRONTEND=noninteractive

# Keep stdout for the final result only; fd 3 is the real stdout.
exec 3>&1 1>&2

log() { printf 'provision: %s\n' "$*" >&2; }
# shellcheck source=workers/debian.sh
. "$REPO/workers/debian.sh"
die() { log "ERROR: $*"; exit 1; }

TMP=$(mktemp -d)
POLICY_RC_ADDED=0
cleanup() {
    rm -rf "$TMP"
    if [ "$POLICY_RC_ADDED" = 1 ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2; }

parse_args() {
    while [ $# -gt 0 ]; do
        case $1 in
            --hosts) [ $# -ge 2 ] || die "--hosts needs a number"; HOSTS=$2; shift 2 ;;
            --hosts=*) HOSTS=${1#--hosts=}; shift ;;
            --bridge) LOCAL_BRIDGE=1; shift ;;
            -h|--help) usage; exit 0 ;;
            *) usage; die "unknown argument: $1" ;;
        esac
    done
    [[ $HOSTS =~ ^[1-9][0-9]*$ ]] || die "number of hosts must be >= 1, got '$HOSTS'"
    [[ $LOCAL_BRIDGE =~ ^[01]$ ]] || die "DOCKYARD_LOCAL_BRIDGE must be 0 or 1, got '$LOCAL_BRIDGE'"
    [[ $STORE_MAX_BYTES =~ ^[1-9][0-9]*$ ]] ||
        die "DOCKYARD_CONTEXT_STORE_MAX_BYTES must be a number of bytes, got '$STORE_MAX_BYTES'"
}

# ---------------------------------------------------------------- helpers

# Close every descriptor above 2 (our lock on fd 9, stdout kept on fd 3, and
# whatever the caller passed down) so that daemons hold nothing of ours.
close_extra_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ] && [ -e "/proc/$BASHPID/fd/$fd" ]; then exec {fd}>&-; fi
    done
}

# Start a daemon that outlives this script and its shell (own session).
launch() {  # launch LOGFILE COMMAND...
    local logfile=$1; shift
    (close_extra_fds; exec setsid nohup "$@" </dev/null >>"$logfile" 2>&1) &
}

# Run a noisy command with its output in a log file; show the tail on failure.
quietly() {  # quietly LOGFILE COMMAND...
    local logfile=$1; shift
    if ! "$@" >>"$logfile" 2>&1 </dev/null; then
        tail -n 30 "$logfile" >&2 || true
        log "failed: $* (full log: $logfile)"
        return 1
    fi
}

wait_until() {  # wait_until SECONDS DESCRIPTION COMMAND...
    local secs=$1 what=$2; shift 2
    local deadline=$((SECONDS + secs))
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.5
    done
    log "$what is up"
}

# Write stdin to FILE (mode MODE) only if the content differs.
write_if_changed() {  # write_if_changed FILE MODE < content
    local file=$1 mode=$2 new
    new=$(mktemp "$file.XXXXXX")
    cat >"$new"
    chmod "$mode" "$new"
    if [ -f "$file" ] && cmp -s "$new" "$file"; then
        rm -f "$new"
        chmod "$mode" "$file"
    else
        mv -f "$new" "$file"
    fi
}

# Let apt never start services (a stock dockerd would create a bridge).
forbid_service_starts() {
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
        chmod 755 /usr/sbin/policy-rc.d
        POLICY_RC_ADDED=1
    fi
}

APT_UPDATED=0
apt_install() {  # apt_install PACKAGE...
    local apt=(apt-get -q -y -o DPkg::Lock::Timeout=900)
    forbid_service_starts
    if [ "$APT_UPDATED" = 0 ]; then
        log "apt-get update"
        quietly "$STATE/apt.log" "${apt[@]}" update
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    quietly "$STATE/apt.log" "${apt[@]}" install --no-install-recommends "$@"
}

registry_password() { cat "$STATE/registry.password"; }

# curl against the registry with basic auth, without the password on argv.
registry_curl() {  # registry_curl CURL-ARGS...
    printf 'user = "%s:%s"\n' "$REGISTRY_USER" "$(registry_password)" |
        curl -s -K - "$@"
}

http_code() { curl -s --max-time 10 -o /dev/null -w '%{http_code}' "$@" || true; }

# ------------------------------------------------------------------ steps

step_packages() {
    local missing=() cmd
    command -v dockerd >/dev/null || missing+=(docker.io)
    command -v docker >/dev/null || missing+=(docker.io)
    command -v docker-registry >/dev/null || missing+=(docker-registry)
    for cmd in redis-cli redis-server; do
        command -v "$cmd" >/dev/null || missing+=(redis-server)
    done
    command -v curl >/dev/null || missing+=(curl)
    [[ $(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null) == *' installed' ]] ||
        missing+=(busybox-static)
    "$SYS_PYTHON" -c 'import bcrypt' 2>/dev/null || missing+=(python3-bcrypt)
    if [ ${#missing[@]} -eq 0 ]; then
        log "packages: all present"
        return
    fi
    apt_install $(printf '%s\n' "${missing[@]}" | sort -u)
}

# A docker CLI plugin (docker SUBCOMMAND) from Debian 13's package: apt installs it on
# Debian 13; Debian 12 has none (buildx) or only compose v1, so the package is fetched with a
# private apt configuration (workers/debian.sh), leaving the system's sources, lists and cache
# untouched, and its plugin placed in /usr/local/lib/docker/cli-plugins/.
install_cli_plugin() {  # install_cli_plugin PACKAGE SUBCOMMAND
    local package=$1 subcommand=$2 plugin=docker-$2
    if [ "$(debian_codename)" != bookworm ]; then
        apt_install "$package"
    else
        local apt_dir=$TMP/apt-trixie
        log "$subcommand: fetching $package from $(debian_mirror) trixie"
        trixie_download "$apt_dir" "$STATE/apt.log" "$package" ||
            die "could not download Debian 13's $package (DOCKYARD_DEBIAN_MIRROR sets the mirror; log: $STATE/apt.log)"
        rm -rf "$apt_dir/root" && mkdir -p "$apt_dir/root"
        dpkg-deb -x "$apt_dir"/deb/"$package"_*.deb "$apt_dir/root"
        install -D -m 0755 "$apt_dir/root/usr/libexec/docker/cli-plugins/$plugin" \
            "/usr/local/lib/docker/cli-plugins/$plugin"
    fi
    docker "$subcommand" version >/dev/null 2>&1 || die "$plugin installed but 'docker $subcommand version' fails"
    log "$subcommand: installed $(docker "$subcommand" version | head -n 1)"
}

step_buildx() {
    if docker buildx version >/dev/null 2>&1; then
        log "buildx: present"
        return
    fi
    install_cli_plugin docker-buildx buildx
}

# Compose v2, `docker compose`: it runs compose.yaml (tests/farm/test_compose.py).
compose_v2() { docker compose version --short 2>/dev/null | grep -q '^v\{0,1\}2\.'; }

step_compose() {
    if compose_v2; then
        log "compose: present ($(docker compose version | head -n 1))"
        return
    fi
    install_cli_plugin docker-compose compose
    compose_v2 || die "'docker compose' is not compose v2: $(docker compose version 2>&1 | head -n 1)"
}

engine_sock() {  # engine_sock K -> unix socket URL of host K
    if [ "$1" = 1 ]; then echo "$DEFAULT_SOCK"; else echo "unix:///run/dockyard-host$1.sock"; fi
}

engine_up() { timeout 20 docker -H "$1" info >/dev/null 2>&1; }

step_engines() {
    local k sock name pidfile pid
    local none_net=(--bridge=none --iptables=false --ip-masq=false) net
    for ((k = 1; k <= HOSTS; k++)); do
        net=("${none_net[@]}")
        if [ "$k" = 1 ] && [ "$LOCAL_BRIDGE" = 1 ]; then
            net=()  # Docker's default bridge: build steps get it by default (DOCKYARD_BUILD_NETWORKS unset)
        fi
        sock=$(engine_sock "$k")
        if engine_up "$sock"; then
            log "docker host $k: reusing $sock"
            continue
        fi
        if [ "$k" = 1 ]; then pidfile=/var/run/docker.pid; else pidfile=/run/dockyard-host$k.pid; fi
        pid=$(live_pid "$pidfile")
        if [ -n "$pid" ]; then
            log "docker host $k: dockerd $pid is starting; waiting for it"
        else
            rm -f "$pidfile"  # left by a dockerd that was killed
            log "docker host $k: starting dockerd on $sock"
            if [ "$k" = 1 ]; then
                launch "$STATE/dockerd-host1.log" dockerd "${net[@]}" -H "$sock"
            else
                name=dockyard-host$k
                launch "$STATE/dockerd-host$k.log" dockerd "${net[@]}" -H "$sock" \
                    --data-root "/var/lib/$name" --exec-root "/run/$name" --pidfile "$pidfile"
            fi
            pid=$!
        fi
        wait_engine "$k" "$sock" "$pid" "$STATE/dockerd-host$k.log"
    done
}

live_pid_of() {  # live_pid_of PID -> PID if that process lives (not a zombie)
    grep -qs '^State:[[:space:]]*[^Z]' "/proc/$1/status" && echo "$1"
    return 0
}

# The pid in a dockerd pid file if that process is a live dockerd, else "".
live_pid() {  # live_pid PIDFILE
    local pid
    pid=$(cat "$1" 2>/dev/null) || return 0
    [[ $pid =~ ^[0-9]+$ ]] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] && live_pid_of "$pid"
    return 0
}

# A dockerd that was killed cleans up its old containers' network sandboxes
# before it listens, which can take minutes: wait while it lives and works.
wait_engine() {  # wait_engine K SOCK PID LOGFILE
    local k=$1 sock=$2 pid=$3 logfile=$4
    local deadline=$((SECONDS + ENGINE_START_TIMEOUT)) next_report=$((SECONDS + 30))
    until engine_up "$sock"; do
        if [ -z "$(live_pid_of "$pid")" ]; then
            tail -n 20 "$logfile" >&2 || true
            die "dockerd for host $k exited before it answered on $sock (log: $logfile)"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -n 20 "$logfile" >&2 || true
            die "dockerd for host $k did not answer on $sock within ${ENGINE_START_TIMEOUT} s" \
                "(log: $logfile; DOCKYARD_ENGINE_START_TIMEOUT sets the wait)"
        fi
        if [ "$SECONDS" -ge "$next_report" ]; then
            log "docker host $k: still starting ($(grep -c 'stale sandbox' "$logfile" || true)" \
                "stale sandboxes cleaned so far)"
            next_report=$((SECONDS + 30))
        fi
        sleep 0.5
    done
    log "docker host $k is up"
}

registry_unauthorized() { [ "$(http_code "http://$REGISTRY/v2/")" = 401 ]; }

registry_user_password() {  # registry_user_password USER -> its password (made once)
    local file=$STATE/registry.password
    [ "$1" = "$REGISTRY_USER" ] || file=$STATE/registry-$1.password
    if [ ! -s "$file" ]; then
        (umask 077 && python3 -c 'import secrets; print(secrets.token_hex(16))' >"$file")
    fi
    chmod 600 "$file"
    cat "$file"
}

write_registry_files() {
    local user pairs=()
    # the farm's login (workers) and each example team's own (its callers resolve base images with it)
    for user in "$REGISTRY_USER" "${EXAMPLE_TEAMS[@]}"; do
        registry_user_password "$user" >/dev/null
        if [ "$user" = "$REGISTRY_USER" ]; then pairs+=("$user" "$STATE/registry.password")
        else pairs+=("$user" "$STATE/registry-$user.password"); fi
    done
    # Keep the htpasswd lines (bcrypt salts differ each time) while they match.
    if ! "$SYS_PYTHON" - "$STATE/registry.htpasswd" "${pairs[@]}" <<'EOF'
import bcrypt, sys
path, *pairs = sys.argv[1:]
wanted = {pairs[i]: open(pairs[i + 1]).read().strip().encode() for i in range(0, len(pairs), 2)}
try:
    lines = dict(line.split(":", 1) for line in open(path).read().split())
    cheap = all(h.startswith("$2b$06$") for h in lines.values())  # every registry request checks one: keep bcrypt cost low
    sys.exit(0 if set(lines) == set(wanted) and cheap and all(bcrypt.checkpw(wanted[u], lines[u].encode()) for u in wanted) else 1)
except (OSError, ValueError):
    sys.exit(1)
EOF
    then
        log "registry: writing htpasswd"
        "$SYS_PYTHON" - "${pairs[@]}" <<'EOF' |
import bcrypt, sys
pairs = sys.argv[1:]
for i in range(0, len(pairs), 2):
    print(pairs[i] + ":" + bcrypt.hashpw(open(pairs[i + 1]).read().strip().encode(), bcrypt.gensalt(rounds=6)).decode())
EOF
            write_if_changed "$STATE/registry.htpasswd" 600
    fi
    write_if_changed "$STATE/registry.yml" 600 <<EOF
version: 0.1
log:
  level: info
storage:
  filesystem:
    rootdirectory: $STATE/registry-data
  delete:
    enabled: true
http:
  addr: $REGISTRY
auth:
  htpasswd:
    realm: dockyard-registry
    path: $STATE/registry.htpasswd
EOF
    mkdir -p "$STATE/registry-data"
}

step_registry() {
    local code
    code=$(http_code "http://$REGISTRY/v2/")
    if [ "$code" = 401 ]; then
        [ -s "$STATE/registry.password" ] ||
            die "a registry already answers on $REGISTRY but $STATE/registry.password is missing; stop that registry or restore the file"
        write_registry_files  # the registry re-reads a changed htpasswd file by itself
        [ "$(registry_curl -o /dev/null -w '%{http_code}' "http://$REGISTRY/v2/")" = 200 ] ||
            die "the registry on $REGISTRY rejects the credentials in $STATE/registry.password"
        log "registry: reusing $REGISTRY"
        return
    fi
    [ "$code" = 000 ] || die "something else answers on $REGISTRY (HTTP $code on /v2/), not an authenticated registry"
    write_registry_files
    log "registry: starting docker-registry on $REGISTRY"
    launch "$STATE/registry.log" docker-registry serve "$STATE/registry.yml"
    wait_until 30 "registry" registry_unauthorized || {
        tail -n 20 "$STATE/registry.log" >&2 || true
        die "registry did not answer 401 on http://$REGISTRY/v2/ within 30 s (log: $STATE/registry.log)"
    }
}

# A password made once for a Redis user, kept in the state dir (mode 600).
redis_password() {  # redis_password USER-SUFFIX
    local file=$STATE/redis-$1.password
    if [ ! -s "$file" ]; then
        (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
    fi
    chmod 600 "$file"
    cat "$file"
}

sha256_of() { printf '%s' "$1" | sha256sum | cut -d' ' -f1; }

# The teams file: made once with the example teams, then the operator's to edit
# (docs/security.md, "Adding a team"); each team's Redis password is made once.
step_teams() {
    local team
    if [ ! -s "$TEAMS_FILE" ]; then
        log "teams: writing $TEAMS_FILE (${EXAMPLE_TEAMS[*]})"
        {
            echo "# The farm's teams (docs/security.md). Workers and operator commands read this file."
            for team in "${EXAMPLE_TEAMS[@]}"; do
                printf '\n[teams.%s]\nredis_password_sha256 = ["%s"]\npush = ["%s/%s/*"]\nshare = 1.0\n' \
                    "$team" "$(sha256_of "$(redis_password "team-$team")")" "$REGISTRY" "$team"
            done
        } | write_if_changed "$TEAMS_FILE" 600
    fi
}

# The ACL file (docs/security.md, Redis users): no anonymous access;
# workers may do everything but administer the server; each declared team's
# user what `dockyard teams acl` prints (its own queues, results and keys only).
redis_acl() {
    cat <<EOF
user default off resetpass resetkeys resetchannels -@all
user dockyard-admin on #$(sha256_of "$(redis_password admin)") ~* &* +@all
user dockyard-worker on #$(sha256_of "$(redis_password worker)") ~* &* +@all -@admin +client|list
EOF
    "$REPO/.venv/bin/dockyard" teams acl --server farm --teams "$TEAMS_FILE" --key-prefix "$KEY_PREFIX"
}

# Run redis-cli against the farm's Redis as USER (the password never on argv).
farm_redis_cli() {  # farm_redis_cli USER-SUFFIX REDIS-CLI-ARGS...
    local who=$1; shift
    REDISCLI_AUTH=$(redis_password "$who") timeout 10 \
        redis-cli --no-auth-warning --user "dockyard-$who" -h 127.0.0.1 -p "$REDIS_PORT" "$@" 2>/dev/null
}

farm_redis_up() { [ "$(farm_redis_cli admin ping)" = PONG ]; }

step_redis() {
    local version acl changed=0
    version=$(redis-server --version | sed -n 's/.* v=\([0-9]*\)\..*/\1/p')
    [ "${version:-0}" -ge 7 ] || die "the farm's Redis needs redis-server 7 or later for its ACLs (found: $(redis-server --version))"
    mkdir -p "$REDIS_DIR"
    chmod 700 "$REDIS_DIR"
    acl=$(redis_acl) || die "could not make the farm's ACL (dockyard teams acl --server farm)"
    if ! printf '%s\n' "$acl" | cmp -s - "$REDIS_DIR/users.acl" 2>/dev/null; then
        printf '%s\n' "$acl" | write_if_changed "$REDIS_DIR/users.acl" 600
        changed=1
    fi
    chmod 600 "$REDIS_DIR/users.acl"
    if farm_redis_up; then
        if [ "$changed" = 1 ]; then
            log "redis: users changed; ACL LOAD on 127.0.0.1:$REDIS_PORT"
            [ "$(farm_redis_cli admin acl load)" = OK ] || die "ACL LOAD of $REDIS_DIR/users.acl failed"
        fi
        log "redis: reusing the farm's Redis on 127.0.0.1:$REDIS_PORT"
        return
    fi
    if [ -n "$(timeout 10 redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" ]; then
        die "a Redis on 127.0.0.1:$REDIS_PORT does not take the farm's admin password ($STATE/redis-admin.password); stop it or set DOCKYARD_FARM_REDIS_PORT"
    fi
    log "redis: starting the farm's redis-server on 127.0.0.1:$REDIS_PORT (ACL users, $REDIS_DIR)"
    (close_extra_fds
     exec redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" --protected-mode yes \
        --save "" --appendonly no --maxmemory-policy noeviction \
        --dir "$REDIS_DIR" --logfile "$REDIS_DIR/redis.log" --pidfile "$REDIS_DIR/redis.pid" \
        --aclfile "$REDIS_DIR/users.acl" </dev/null)
    wait_until 30 "redis" farm_redis_up ||
        die "the farm's redis did not answer PONG within 30 s (log: $REDIS_DIR/redis.log)"
}

redis_url() {  # redis_url USER-SUFFIX -> URL of the farm's Redis, database 0
    echo "redis://dockyard-$1:$(redis_password "$1")@127.0.0.1:$REDIS_PORT/0"
}

# The context store's ACL: the farm's users and passwords; each team reads and
# writes its own contexts only (`dockyard teams acl --server store`). Workers
# read them (and drop a broken one's meta), with no administration.
store_acl() {
    cat <<EOF
user default off resetpass resetkeys resetchannels -@all
user dockyard-admin on #$(sha256_of "$(redis_password admin)") ~* &* +@all
user dockyard-worker on #$(sha256_of "$(redis_password worker)") ~* resetchannels +@all -@admin -@dangerous -@pubsub +info
EOF
    "$REPO/.venv/bin/dockyard" teams acl --server store --teams "$TEAMS_FILE" --key-prefix "$KEY_PREFIX"
}

# Run redis-cli against the context store as USER (the password never on argv).
store_cli() {  # store_cli USER-SUFFIX REDIS-CLI-ARGS...
    local who=$1; shift
    REDISCLI_AUTH=$(redis_password "$who") timeout 10 \
        redis-cli --no-auth-warning --user "dockyard-$who" -h 127.0.0.1 -p "$STORE_PORT" "$@" 2>/dev/null
}

store_up() { [ "$(store_cli admin ping)" = PONG ]; }

# The context store: a redis-server of its own with a byte budget and LRU eviction, so
# filling it evicts the oldest contexts and never stops the farm's Redis (noeviction).
step_context_store() {
    local acl changed=0
    mkdir -p "$STORE_DIR"
    chmod 700 "$STORE_DIR"
    acl=$(store_acl) || die "could not make the context store's ACL (dockyard teams acl --server store)"
    if ! printf '%s\n' "$acl" | cmp -s - "$STORE_DIR/users.acl" 2>/dev/null; then
        printf '%s\n' "$acl" | write_if_changed "$STORE_DIR/users.acl" 600
        changed=1
    fi
    chmod 600 "$STORE_DIR/users.acl"
    if store_up; then
        if [ "$changed" = 1 ]; then
            log "context store: users changed; ACL LOAD on 127.0.0.1:$STORE_PORT"
            [ "$(store_cli admin acl load)" = OK ] || die "ACL LOAD of $STORE_DIR/users.acl failed"
        fi
        if [ "$(store_cli admin config get maxmemory | sed -n 2p)" != "$STORE_MAXMEMORY" ]; then
            log "context store: budget set to $STORE_MAX_BYTES bytes (maxmemory $STORE_MAXMEMORY)"
            [ "$(store_cli admin config set maxmemory "$STORE_MAXMEMORY")" = OK ] || die "CONFIG SET maxmemory failed"
        fi
        [ "$(store_cli admin config get maxmemory-policy | sed -n 2p)" = volatile-ttl ] ||
            [ "$(store_cli admin config set maxmemory-policy volatile-ttl)" = OK ] || die "CONFIG SET maxmemory-policy failed"
        log "context store: reusing 127.0.0.1:$STORE_PORT (budget $STORE_MAX_BYTES bytes, volatile-ttl)"
        return
    fi
    if [ -n "$(timeout 10 redis-cli -h 127.0.0.1 -p "$STORE_PORT" ping 2>/dev/null)" ]; then
        die "a Redis on 127.0.0.1:$STORE_PORT does not take the farm's admin password ($STATE/redis-admin.password); stop it or set DOCKYARD_FARM_CONTEXT_STORE_PORT"
    fi
    log "context store: starting redis-server on 127.0.0.1:$STORE_PORT (budget $STORE_MAX_BYTES bytes, volatile-ttl, $STORE_DIR)"
    (close_extra_fds
     exec redis-server --daemonize yes --bind 127.0.0.1 --port "$STORE_PORT" --protected-mode yes \
        --save "" --appendonly no --maxmemory "$STORE_MAXMEMORY" --maxmemory-policy volatile-ttl \
        --maxmemory-samples 10 \
        --dir "$STORE_DIR" --logfile "$STORE_DIR/redis.log" --pidfile "$STORE_DIR/redis.pid" \
        --aclfile "$STORE_DIR/users.acl" </dev/null)
    wait_until 30 "context store" store_up ||
        die "the context store did not answer PONG within 30 s (log: $STORE_DIR/redis.log)"
}

store_url() {  # store_url USER-SUFFIX -> URL of the context store, database 0
    echo "redis://dockyard-$1:$(redis_password "$1")@127.0.0.1:$STORE_PORT/0"
}

base_image_present() {
    [ "$(registry_curl -o /dev/null -w '%{http_code}' \
        -H 'Accept: application/vnd.docker.distribution.manifest.v2+json' \
        -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
        "http://$REGISTRY/v2/base/busybox/manifests/1")" = 200 ]
}

step_base_image() {
    if base_image_present; then
        log "base image: $BASE_IMAGE present"
        return
    fi
    log "base image: building $BASE_IMAGE from busybox-static"
    local root=$TMP/busybox-root busybox tool
    busybox=$(dpkg -L busybox-static | awk '/\/bin\/busybox$/ && !n++')
    [ -n "$busybox" ] || die "busybox-static installs no bin/busybox?"
    mkdir -p "$root/bin" "$root/tmp"
    chmod 1777 "$root/tmp"
    cp "$busybox" "$root/bin/busybox"
    for tool in sh ls cat echo sleep mkdir rm cp mv env true false test printf grep sed \
        wc head tail touch id ln chmod; do
        ln -s busybox "$root/bin/$tool"
    done
    tar -C "$root" -cf - . | docker -H "$DEFAULT_SOCK" import \
        -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        -c 'CMD ["sh"]' - "$BASE_IMAGE" >/dev/null
    # A private client config: never touch the user's ~/.docker/config.json.
    local docker=(docker --config "$TMP/docker-config" -H "$DEFAULT_SOCK")
    mkdir -p "$TMP/docker-config"
    registry_password | "${docker[@]}" login -u "$REGISTRY_USER" --password-stdin "$REGISTRY" \
        >/dev/null 2>&1 || die "docker login $REGISTRY failed"
    "${docker[@]}" push -q "$BASE_IMAGE" >/dev/null
    "${docker[@]}" logout "$REGISTRY" >/dev/null 2>&1 || true
    rm -rf "$TMP/docker-config"
    base_image_present || die "pushed $BASE_IMAGE but the registry does not serve its manifest"
    log "base image: pushed $BASE_IMAGE"
}

step_venv() {
    local venv=$REPO/.venv stamp=$REPO/.venv/.dockyard-installed
    [ -f "$REPO/pyproject.toml" ] || die "$REPO/pyproject.toml not found"
    if [ ! -x "$venv/bin/python" ]; then
        log "venv: creating $venv"
        if ! python3 -m venv "$venv"; then
            rm -rf "$venv"
            apt_install python3-venv
            python3 -m venv "$venv" || die "python3 -m venv $venv failed"
        fi
    fi
    if [ -f "$stamp" ] && [ ! "$REPO/pyproject.toml" -nt "$stamp" ]; then
        log "venv: up to date"
        return
    fi
    log "venv: pip install -e $REPO[test,prefect]"
    quietly "$STATE/pip.log" "$venv/bin/pip" install -e "$REPO[test,prefect]" ||
        die "pip install -e '$REPO[test,prefect]' failed (log: $STATE/pip.log)"
    touch "$stamp"
}

farm_seal_keys() {  # the farm's sealing key pair (public for callers, private for workers), made once
    if [ ! -s "$STATE/seal.keys" ]; then
        (umask 077 && "$REPO/.venv/bin/python" -m dockyard.tasks.request.sealing > "$STATE/seal.keys.new" \
            && mv "$STATE/seal.keys.new" "$STATE/seal.keys")
    fi
    cat "$STATE/seal.keys"
}

step_farm_env() {
    local k team hosts=""
    for ((k = 1; k <= HOSTS; k++)); do
        hosts+=${hosts:+,}$(engine_sock "$k")
    done
    write_if_changed "$STATE/farm.env" 600 <<EOF
DOCKYARD_REDIS_URL=$(redis_url worker)
DOCKYARD_CONTEXT_STORE_URL=$(store_url worker)
DOCKYARD_ADMIN_REDIS_URL=$(redis_url admin)
DOCKYARD_ADMIN_CONTEXT_STORE_URL=$(store_url admin)
DOCKYARD_TEAMS_FILE=$TEAMS_FILE
DOCKYARD_REGISTRY_URL=$REGISTRY
DOCKYARD_REGISTRY_USERNAME=$REGISTRY_USER
DOCKYARD_REGISTRY_PASSWORD=$(registry_password)
DOCKYARD_AUTO_BASE_IMAGE=$BASE_IMAGE
DOCKYARD_FARM_DOCKER_HOSTS=$hosts
$(farm_seal_keys)
EOF
    for team in "${EXAMPLE_TEAMS[@]}"; do
        write_if_changed "$STATE/$team.env" 600 <<EOF
DOCKYARD_TEAM=$team
DOCKYARD_REDIS_URL=$(redis_url "team-$team")
DOCKYARD_CONTEXT_STORE_URL=$(store_url "team-$team")
DOCKYARD_REGISTRY_URL=$REGISTRY
DOCKYARD_PULL_USERNAME=$team
DOCKYARD_PULL_PASSWORD=$(registry_user_password "$team")
DOCKYARD_AUTO_BASE_IMAGE=$BASE_IMAGE
$(farm_seal_keys | grep '^DOCKYARD_SEAL_PUBLIC_KEY=')
EOF
    done
    log "farm ready: $STATE/farm.env; each team's callers: $STATE/<team>.env (${EXAMPLE_TEAMS[*]})"
}

main() {
    parse_args "$@"
    [ "$(id -u)" = 0 ] || die "must run as root"
    mkdir -p "$STATE"
    # One provisioning at a time (daemons never inherit this fd 9).
    exec 9>>"$STATE/provision.lock"
    flock 9
    step_packages
    step_buildx
    step_compose
    step_engines
    step_registry
    step_venv
    step_teams
    step_redis
    step_context_store
    step_base_image
    step_farm_env
    echo "$STATE/farm.env" >&3
}

main "$@"
