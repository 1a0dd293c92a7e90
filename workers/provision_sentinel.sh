#!/usr/bin/env bash
# Provision a Redis Sentinel test setup on loopback, beside the local farm (run as root,
# after workers/provision.sh, whose ACL users and passwords it reuses):
#   - two redis-server processes, a master and one replica (ports 6395 and 6396 at first;
#     after a failover the roles stay swapped), with the farm's ACL file (`default` off)
#     and the replica authenticating to its master as dockyard-admin;
#   - three sentinels (26395-26397) monitoring master name `dockyard`, quorum 2, with a
#     password of their own (`requirepass`), which they also use among themselves.
# Test-only timings, for a fast failover in the farm tests: down-after-milliseconds 2000
# (a master is subjectively down after 2 s without an answer) and failover-timeout 10000.
# Everything else is Redis' defaults. No persistence (like the farm's Redis).
# Idempotent: what runs is reused; a stopped redis-server is started again as a replica of
# the master the sentinels name (so a killed master comes back as a replica), a stopped
# sentinel with its own state file. The sentinels run redis-server in sentinel mode
# (`redis-server FILE --sentinel`, what Debian's redis-sentinel package runs).
#
# Usage: provision_sentinel.sh
#   DOCKYARD_FARM_DIR  the farm's state dir (default /var/lib/dockyard-farm); this setup lives
#                      in <dir>/sentinel
# The last line on stdout is the path of sentinel.env (mode 600): the worker user's
# sentinel:// URL, the master name and the sentinels' password.
set -euo pipefail
umask 022

STATE=${DOCKYARD_FARM_DIR:-/var/lib/dockyard-farm}
DIR=$STATE/sentinel
MASTER_NAME=dockyard
REDIS_PORTS=(6395 6396)
SENTINEL_PORTS=(26395 26396 26397)
QUORUM=2
DOWN_AFTER_MS=2000  # test-only: fast failover
FAILOVER_TIMEOUT_MS=10000  # test-only: fast failover
FARM_ACL=$STATE/redis/users.acl

exec 3>&1 1>&2
log() { printf 'provision-sentinel: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

close_extra_fds() {
    local fd
    for fd in /proc/"$BASHPID"/fd/*; do
        fd=${fd##*/}
        if [ "$fd" -gt 2 ] && [ -e "/proc/$BASHPID/fd/$fd" ]; then exec {fd}>&-; fi
    done
}

password() {  # password NAME -> the password in <state>/redis-NAME.password
    local file=$STATE/redis-$1.password
    if [ ! -s "$file" ]; then
        [ "$1" = sentinel ] || die "$file is missing: run workers/provision.sh first"
        (umask 077 && head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$file")
    fi
    chmod 600 "$file"
    cat "$file"
}

node_cli() {  # node_cli PORT ARGS... (as dockyard-admin)
    local port=$1; shift
    REDISCLI_AUTH=$(password admin) timeout 5 redis-cli --no-auth-warning --user dockyard-admin \
        -h 127.0.0.1 -p "$port" "$@" 2>/dev/null || true
}

sentinel_cli() {  # sentinel_cli PORT ARGS...
    local port=$1; shift
    REDISCLI_AUTH=$(password sentinel) timeout 5 redis-cli --no-auth-warning -h 127.0.0.1 -p "$port" "$@" 2>/dev/null || true
}

node_up() { [ "$(node_cli "$1" ping)" = PONG ]; }
sentinel_up() { [ "$(sentinel_cli "$1" ping)" = PONG ]; }
node_role() { node_cli "$1" role | head -n 1; }

wait_until() {  # wait_until SECONDS COMMAND...
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do
        [ "$SECONDS" -lt "$deadline" ] || return 1
        sleep 0.2
    done
}

# The master port the running sentinels name (first answer), if it answers as a master.
sentinel_master_port() {
    local port answer
    for port in "${SENTINEL_PORTS[@]}"; do
        answer=$(sentinel_cli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | sed -n 2p)
        if [ -n "$answer" ] && [ "$(node_role "$answer")" = master ]; then echo "$answer"; return; fi
    done
}

# The master: the sentinels' choice, else a running node that is a master, else the first port.
current_master() {
    local port found
    found=$(sentinel_master_port)
    if [ -z "$found" ] && any_sentinel_up; then
        # the sentinels may be failing over right now: give them a few seconds
        for _ in $(seq 1 30); do
            sleep 1
            found=$(sentinel_master_port)
            [ -z "$found" ] || break
        done
    fi
    if [ -z "$found" ]; then
        for port in "${REDIS_PORTS[@]}"; do
            if [ "$(node_role "$port")" = master ]; then found=$port; break; fi
        done
    fi
    echo "${found:-${REDIS_PORTS[0]}}"
}

any_sentinel_up() {
    local port
    for port in "${SENTINEL_PORTS[@]}"; do sentinel_up "$port" && return 0; done
    return 1
}

copy_acl() {
    [ -s "$FARM_ACL" ] || die "$FARM_ACL is missing: run workers/provision.sh first"
    if ! cmp -s "$FARM_ACL" "$DIR/users.acl"; then
        install -m 600 "$FARM_ACL" "$DIR/users.acl"
        local port
        for port in "${REDIS_PORTS[@]}"; do
            if node_up "$port"; then [ "$(node_cli "$port" acl load)" = OK ] || die "ACL LOAD on $port failed"; fi
        done
    fi
}

start_node() {  # start_node PORT MASTER-PORT
    local port=$1 master=$2 conf=$DIR/redis-$1.conf
    mkdir -p "$DIR/redis-$port"
    {
        echo "bind 127.0.0.1"
        echo "port $port"
        echo "protected-mode yes"
        echo "daemonize yes"
        echo "save \"\""
        echo "appendonly no"
        echo "maxmemory-policy noeviction"
        echo "dir $DIR/redis-$port"
        echo "logfile $DIR/redis-$port.log"
        echo "pidfile $DIR/redis-$port.pid"
        echo "aclfile $DIR/users.acl"
        echo "masteruser dockyard-admin"
        echo "masterauth $(password admin)"
        if [ "$port" != "$master" ]; then echo "replicaof 127.0.0.1 $master"; fi
    } >"$conf.new"
    chmod 600 "$conf.new"
    mv -f "$conf.new" "$conf"
    if [ "$port" = "$master" ]; then log "redis $port: starting as the master"
    else log "redis $port: starting as a replica of $master"; fi
    (close_extra_fds; exec redis-server "$conf" </dev/null)
    wait_until 30 node_up "$port" || die "redis on $port did not answer (log: $DIR/redis-$port.log)"
}

write_sentinel_conf() {  # write_sentinel_conf PORT MASTER-PORT
    local port=$1 master=$2 conf=$DIR/sentinel-$1.conf
    mkdir -p "$DIR/sentinel-$port"
    cat >"$conf.new" <<EOF
bind 127.0.0.1
port $port
daemonize yes
dir $DIR/sentinel-$port
logfile $DIR/sentinel-$port.log
pidfile $DIR/sentinel-$port.pid
requirepass $(password sentinel)
sentinel monitor $MASTER_NAME 127.0.0.1 $master $QUORUM
sentinel auth-user $MASTER_NAME dockyard-admin
sentinel auth-pass $MASTER_NAME $(password admin)
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER_NAME 1
EOF
    chmod 600 "$conf.new"
    mv -f "$conf.new" "$conf"
}

start_sentinel() {  # start_sentinel PORT
    local port=$1
    log "sentinel $port: starting"
    (close_extra_fds; exec redis-server "$DIR/sentinel-$port.conf" --sentinel </dev/null)
    wait_until 30 sentinel_up "$port" || die "sentinel on $port did not answer (log: $DIR/sentinel-$port.log)"
}

step_packages() {
    if command -v redis-server >/dev/null && command -v redis-cli >/dev/null; then return; fi
    log "apt-get install redis-server redis-tools"
    apt-get -q -y -o DPkg::Lock::Timeout=900 update >/dev/null
    apt-get -q -y -o DPkg::Lock::Timeout=900 install --no-install-recommends redis-server redis-tools >/dev/null
}

step_nodes() {
    local master port
    master=$(current_master)
    if ! node_up "$master"; then start_node "$master" "$master"; fi
    for port in "${REDIS_PORTS[@]}"; do
        if node_up "$port"; then log "redis $port: reusing ($(node_role "$port"))"
        else start_node "$port" "$master"; fi
    done
}

step_sentinels() {
    local master port fresh=0
    master=$(current_master)
    any_sentinel_up || fresh=1  # none runs: forget old sentinel state, monitor today's master
    for port in "${SENTINEL_PORTS[@]}"; do
        if sentinel_up "$port"; then log "sentinel $port: reusing"; continue; fi
        if [ "$fresh" = 1 ] || [ ! -s "$DIR/sentinel-$port.conf" ]; then write_sentinel_conf "$port" "$master"; fi
        start_sentinel "$port"
    done
}

# Ready: every sentinel names a live master with one replica linked and knows the two other sentinels.
ready() {
    local port master
    for port in "${SENTINEL_PORTS[@]}"; do
        master=$(sentinel_cli "$port" sentinel get-master-addr-by-name "$MASTER_NAME" | sed -n 2p)
        [ -n "$master" ] && [ "$(node_role "$master")" = master ] || return 1
        [ "$(sentinel_cli "$port" sentinel master "$MASTER_NAME" | awk 'p {print; exit} $0 == "num-other-sentinels" {p=1}')" = 2 ] || return 1
        [ "$(sentinel_cli "$port" sentinel master "$MASTER_NAME" | awk 'p {print; exit} $0 == "num-slaves" {p=1}')" = 1 ] || return 1
    done
    for port in "${REDIS_PORTS[@]}"; do
        [ "$port" = "$master" ] && continue
        [[ $(node_cli "$port" info replication) == *master_link_status:up* ]] || return 1
    done
}

sentinel_urls() {  # sentinel_urls USER-SUFFIX DB
    local port url=""
    for port in "${SENTINEL_PORTS[@]}"; do
        if [ -z "$url" ]; then url="sentinel://dockyard-$1:$(password "$1")@127.0.0.1:$port/$2"
        else url+=";sentinel://127.0.0.1:$port"; fi
    done
    echo "$url"
}

main() {
    [ "$(id -u)" = 0 ] || die "must run as root"
    [ -d "$STATE" ] || die "$STATE is missing: run workers/provision.sh first"
    mkdir -p "$DIR"
    chmod 700 "$DIR"
    exec 9>>"$DIR/provision.lock"
    flock 9
    step_packages
    copy_acl
    step_nodes
    step_sentinels
    wait_until 60 ready || die "the sentinels did not agree on a master with one linked replica within 60 s (logs: $DIR)"
    log "ready: master 127.0.0.1:$(sentinel_master_port) as '$MASTER_NAME'"
    (umask 077 && cat >"$DIR/sentinel.env.new" <<EOF
DOCKYARD_SENTINEL_WORKER_REDIS_URL=$(sentinel_urls worker 0)
DOCKYARD_SENTINEL_MASTER=$MASTER_NAME
DOCKYARD_SENTINEL_PASSWORD=$(password sentinel)
DOCKYARD_SENTINEL_DIR=$DIR
EOF
    )
    mv -f "$DIR/sentinel.env.new" "$DIR/sentinel.env"
    echo "$DIR/sentinel.env" >&3
}

main "$@"
