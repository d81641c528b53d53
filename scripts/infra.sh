#!/usr/bin/env bash
# Local test infrastructure for ksef-hub, on loopback only:
#   - PostgreSQL from Debian's packages (/usr/lib/postgresql/<ver>/bin)
#   - a single-node Apache Kafka broker in KRaft mode, jars from Maven Central
#
# Usage: scripts/infra.sh [up|down|status|env|pg-up|pg-down|kafka-up|kafka-down]   (default: up)
#
# Another instance beside the default one (the distributed runner's, a chaos run that restarts its broker and
# database): its own KSEF_HUB_INFRA_DIR and ports.
#
# All state and logs live under ${KSEF_HUB_INFRA_DIR:-<repo>/.cache/infra}.
# Ports: KSEF_HUB_PG_PORT (55432), KSEF_HUB_KAFKA_PORT (59092),
#        KSEF_HUB_KAFKA_CONTROLLER_PORT (59093).
# KSEF_HUB_KAFKA_VERSION overrides the broker version (changing it re-resolves
# the jars and restarts a broker started by this script).
# Every subcommand is idempotent; a second `up` only checks and returns.
set -euo pipefail
# Created dirs must stay traversable by the 'postgres' user (see pg_paths).
umask 022

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(dirname "$SCRIPT_DIR")
INFRA=$(realpath -m "${KSEF_HUB_INFRA_DIR:-$REPO_ROOT/.cache/infra}")
LOG_DIR=$INFRA/logs
HOST=127.0.0.1

PG_PORT=${KSEF_HUB_PG_PORT:-55432}
PG_APP_USER=ksefhub
PG_APP_PASSWORD=ksefhub
PG_APP_DB=ksefhub
PG_START_TIMEOUT=30

# Keep in sync with the default of <kafka.version> in scripts/kafka/pom.xml.
KAFKA_VERSION=${KSEF_HUB_KAFKA_VERSION:-4.3.1}
KAFKA_PORT=${KSEF_HUB_KAFKA_PORT:-59092}
KAFKA_CONTROLLER_PORT=${KSEF_HUB_KAFKA_CONTROLLER_PORT:-59093}
KAFKA_POM=$SCRIPT_DIR/kafka/pom.xml
KAFKA_LOG4J=$SCRIPT_DIR/kafka/log4j2.properties
KAFKA_DIR=$INFRA/kafka
# Another instance may share the default one's resolved jars (they are read-only to a broker).
KAFKA_LIBS=$(realpath -m "${KSEF_HUB_KAFKA_LIBS:-$KAFKA_DIR/libs}")
KAFKA_DATA=$KAFKA_DIR/data
KAFKA_CONF=$KAFKA_DIR/server.properties
KAFKA_PID_FILE=$KAFKA_DIR/kafka.pid
KAFKA_START_TIMEOUT=60

# ---------------------------------------------------------------- helpers

log() { printf '[infra] %s\n' "$*" >&2; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }
is_root() { [[ $(id -u) -eq 0 ]]; }

# Print the last lines of each given log file (for error messages).
log_tail() {
    local f
    for f in "$@"; do
        [[ -s $f ]] || continue
        printf -- '----- last lines of %s -----\n' "$f" >&2
        tail -n 40 "$f" >&2
    done
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/$HOST/$1" 2>/dev/null
}

APT_UPDATED=0
apt_install() {
    is_root || die "missing '$*': install it with: sudo apt-get install -y $*"
    command -v apt-get >/dev/null || die "missing '$*' and no apt-get on this machine"
    if [[ $APT_UPDATED -eq 0 ]]; then
        log "apt-get update"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# Serialize concurrent invocations (e.g. parallel make targets). Children that
# outlive us (postmaster, broker) must not inherit fd 9, or they keep the lock.
take_lock() {
    mkdir -p "$INFRA" "$LOG_DIR"
    exec 9>"$INFRA/.lock"
    flock -w 300 9 || die "timed out waiting for $INFRA/.lock"
}

# ------------------------------------------------------------- PostgreSQL

PG_BIN=""
find_pg_bin() {
    local d
    d=$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -name bin -type d 2>/dev/null | sort -V | tail -n 1)
    [[ -n $d && -x $d/initdb && -x $d/pg_ctl && -x $d/psql && -x $d/pg_isready ]] || return 1
    PG_BIN=$d
}

ensure_pg_bin() {
    find_pg_bin && return 0
    is_root || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin; install the Debian package 'postgresql' (sudo apt-get install -y postgresql)"
    apt_install postgresql
    find_pg_bin || die "installed 'postgresql' but still no server binaries in /usr/lib/postgresql/*/bin"
}

# PostgreSQL refuses to run as root, so as root everything server-side runs as
# the 'postgres' system user (cd / so it never trips over an unreadable cwd).
as_pg() {
    if is_root; then
        (cd / && runuser -u postgres -- "$@")
    else
        "$@"
    fi
}

# Sets PG_ROOT, PG_DATA, PG_SOCK_DIR, PG_LOG. Deterministic, so `down` and
# `status` find what `up` created.
pg_paths() {
    PG_ROOT=$INFRA/postgres
    PG_LOG=$LOG_DIR/postgres.log
    if is_root; then
        id postgres >/dev/null 2>&1 || die "no 'postgres' system user (it comes with the Debian package 'postgresql')"
        local probe=$PG_ROOT
        while [[ ! -e $probe ]]; do probe=$(dirname "$probe"); done
        if ! (cd / && runuser -u postgres -- test -x "$probe"); then
            # The repo path is not traversable by 'postgres' (e.g. under /root):
            # keep the cluster in /tmp instead, one per infra dir.
            local key
            key=$(printf '%s' "$INFRA" | sha256sum | cut -c1-12)
            PG_ROOT=/tmp/ksef-hub-infra-$(id -u)/$key/postgres
            PG_LOG=$PG_ROOT/postgres.log
        fi
    fi
    PG_DATA=$PG_ROOT/data
    PG_SOCK_DIR=$PG_ROOT/run
    # Unix socket paths are limited to 107 bytes.
    if (( ${#PG_SOCK_DIR} + 20 > 100 )); then
        PG_SOCK_DIR=/tmp
    fi
}

pg_ready() {
    "$PG_BIN/pg_isready" -q -h "$HOST" -p "$PG_PORT" -U postgres -d postgres -t 2
}

pg_prepare_dirs() {
    mkdir -p "$PG_ROOT" "$PG_DATA" "$PG_SOCK_DIR" "$(dirname "$PG_LOG")" "$LOG_DIR"
    touch "$PG_LOG"
    [[ $PG_LOG == "$LOG_DIR/postgres.log" ]] || ln -sfn "$PG_LOG" "$LOG_DIR/postgres.log"
    chmod 700 "$PG_DATA"
    if is_root; then
        chown postgres:postgres "$PG_DATA" "$PG_LOG"
        [[ $PG_SOCK_DIR == /tmp ]] || chown postgres:postgres "$PG_SOCK_DIR"
    fi
}

pg_initdb() {
    if [[ -s $PG_DATA/PG_VERSION ]]; then
        local have want
        have=$(cat "$PG_DATA/PG_VERSION")
        want=$(basename "$(dirname "$PG_BIN")")
        [[ $have == "$want" ]] || die "cluster in $PG_DATA is PostgreSQL $have but the binaries are $want; remove it (scripts/infra.sh down && rm -rf $PG_ROOT) to recreate"
        return 0
    fi
    # A half-written data dir from an interrupted initdb would make initdb fail.
    rm -rf "$PG_DATA"
    pg_prepare_dirs
    log "initdb $PG_DATA"
    # trust is acceptable only because the server listens on 127.0.0.1 alone
    # and initdb's pg_hba.conf covers just the socket and loopback addresses.
    as_pg "$PG_BIN/initdb" -D "$PG_DATA" -U postgres --auth=trust \
        -E UTF8 --locale=C --no-sync >"$PG_ROOT/initdb.log" 2>&1 ||
        { log_tail "$PG_ROOT/initdb.log"; die "initdb failed"; }
    echo "include_if_exists = 'ksef-hub.conf'" >>"$PG_DATA/postgresql.conf"
}

# Rewritten on every start so a changed port takes effect without initdb.
pg_write_conf() {
    cat >"$PG_DATA/ksef-hub.conf" <<EOF
# Written by scripts/infra.sh on every start; test settings, not durable.
listen_addresses = '$HOST'
port = $PG_PORT
unix_socket_directories = '$PG_SOCK_DIR'
max_connections = 200
fsync = off
synchronous_commit = off
full_page_writes = off
EOF
    if is_root; then chown postgres:postgres "$PG_DATA/ksef-hub.conf"; fi
}

pg_start_server() {
    local action=start
    if as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
        # Running from our data dir but not ready on $PG_PORT: most likely the
        # port changed, so restart to pick up ksef-hub.conf.
        action=restart
    fi
    log "${action}ing PostgreSQL on $HOST:$PG_PORT (data $PG_DATA, log $PG_LOG)"
    as_pg "$PG_BIN/pg_ctl" "$action" -D "$PG_DATA" -l "$PG_LOG" -m fast -s -w -t "$PG_START_TIMEOUT" 9>&- ||
        { log_tail "$PG_LOG"; die "PostgreSQL did not start (log: $PG_LOG)"; }
    local i
    for ((i = 0; i < PG_START_TIMEOUT * 2; i++)); do
        pg_ready && return 0
        sleep 0.5
    done
    log_tail "$PG_LOG"
    die "PostgreSQL is not accepting connections on $HOST:$PG_PORT after ${PG_START_TIMEOUT}s (log: $PG_LOG)"
}

pg_ensure_role_and_db() {
    if ! "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h "$HOST" -p "$PG_PORT" -U postgres -d postgres >/dev/null <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '$PG_APP_USER') THEN
        CREATE ROLE $PG_APP_USER;
    END IF;
    ALTER ROLE $PG_APP_USER LOGIN CREATEDB SUPERUSER PASSWORD '$PG_APP_PASSWORD';
END
\$\$;
SELECT 'CREATE DATABASE $PG_APP_DB OWNER $PG_APP_USER'
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = '$PG_APP_DB')
\gexec
SQL
    then
        # A server we did not create may not let us in as 'postgres'; it is
        # still fine if the app role can already reach its database.
        PGPASSWORD=$PG_APP_PASSWORD "$PG_BIN/psql" -X -q -h "$HOST" -p "$PG_PORT" \
            -U "$PG_APP_USER" -d "$PG_APP_DB" -c 'SELECT 1' >/dev/null 2>&1 ||
            die "cannot create role/database '$PG_APP_USER' on $HOST:$PG_PORT"
    fi
}

pg_up() {
    ensure_pg_bin
    if pg_ready; then
        log "PostgreSQL already running on $HOST:$PG_PORT"
    else
        pg_paths
        pg_initdb
        pg_prepare_dirs
        pg_write_conf
        pg_start_server
    fi
    pg_ensure_role_and_db
}

pg_down() {
    find_pg_bin || { log "PostgreSQL: not installed, nothing to stop"; return 0; }
    pg_paths
    if [[ -s $PG_DATA/postmaster.pid ]] && as_pg "$PG_BIN/pg_ctl" status -D "$PG_DATA" >/dev/null 2>&1; then
        log "stopping PostgreSQL ($PG_DATA)"
        as_pg "$PG_BIN/pg_ctl" stop -D "$PG_DATA" -m fast -s -w -t 60
    else
        log "PostgreSQL: not running from $PG_DATA"
    fi
}

pg_status() {
    if find_pg_bin && pg_ready; then
        echo "postgres: up   $HOST:$PG_PORT"
    else
        echo "postgres: down $HOST:$PG_PORT"
        return 1
    fi
}

# ------------------------------------------------------------------ Kafka

JAVA=""
java_major() {
    local v
    v=$("$1" -version 2>&1 | sed -n 's/.* version "\([^"]*\)".*/\1/p' | head -n 1)
    v=${v#1.}
    echo "${v%%[.+-]*}"
}

find_java() {
    local c m
    for c in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} "$(command -v java || true)" /usr/lib/jvm/*/bin/java; do
        [[ -n $c && -x $c ]] || continue
        m=$(java_major "$c")
        if [[ $m =~ ^[0-9]+$ ]] && (( m >= 17 )); then
            JAVA=$c
            return 0
        fi
    done
    return 1
}

ensure_java() {
    [[ -n $JAVA ]] && return 0
    find_java && return 0
    is_root || die "Kafka needs Java 17+; install it with: sudo apt-get install -y openjdk-17-jre-headless"
    apt_install openjdk-17-jre-headless || apt_install default-jre-headless
    find_java || die "installed a JRE but found no Java 17+"
}

ensure_mvn() {
    command -v mvn >/dev/null && return 0
    is_root || die "resolving the Kafka jars needs Maven; install it with: sudo apt-get install -y maven"
    apt_install maven
}

kafka_libs_stamp() {
    echo "kafka=$KAFKA_VERSION pom=$(sha256sum "$KAFKA_POM" | cut -c1-64)"
}

kafka_libs_current() {
    [[ -f $KAFKA_LIBS/.stamp && $(cat "$KAFKA_LIBS/.stamp") == "$(kafka_libs_stamp)" ]]
}

# Resolves into $KAFKA_LIBS.tmp first, so a running broker keeps its jars
# until it is stopped and a failed download leaves the old set intact.
kafka_fetch_libs() {
    local tmp=$KAFKA_LIBS.tmp
    [[ -f $tmp/.stamp && $(cat "$tmp/.stamp") == "$(kafka_libs_stamp)" ]] && return 0
    ensure_mvn
    log "resolving Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS"
    rm -rf "$tmp"
    JAVA_HOME=${JAVA_HOME:-$(dirname "$(dirname "$(realpath "$JAVA")")")} \
        mvn -q -B -f "$KAFKA_POM" dependency:copy-dependencies \
        -DoutputDirectory="$tmp" -DincludeScope=runtime -Dkafka.version="$KAFKA_VERSION" \
        >"$LOG_DIR/mvn.log" 2>&1 ||
        { log_tail "$LOG_DIR/mvn.log"; die "mvn could not resolve org.apache.kafka:kafka_2.13:$KAFKA_VERSION (log: $LOG_DIR/mvn.log)"; }
    [[ -f $tmp/kafka_2.13-$KAFKA_VERSION.jar ]] || die "Maven finished but $tmp has no kafka_2.13-$KAFKA_VERSION.jar"
    kafka_libs_stamp >"$tmp/.stamp"
}

kafka_resolve_libs() {
    kafka_libs_current && return 0
    kafka_fetch_libs
    rm -rf "$KAFKA_LIBS"
    mv "$KAFKA_LIBS.tmp" "$KAFKA_LIBS"
}

# PID of the broker started by this script, if it is still that process.
kafka_pid() {
    local pid
    [[ -s $KAFKA_PID_FILE ]] || return 1
    pid=$(cat "$KAFKA_PID_FILE")
    [[ $pid =~ ^[0-9]+$ ]] && grep -qa 'kafka\.Kafka' "/proc/$pid/cmdline" 2>/dev/null || return 1
    echo "$pid"
}

kafka_write_conf() {
    mkdir -p "$KAFKA_DIR"
    cat >"$KAFKA_CONF" <<EOF
# Written by scripts/infra.sh on every start: single-node KRaft broker+controller for tests.
node.id=1
process.roles=broker,controller
listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
advertised.listeners=PLAINTEXT://$HOST:$KAFKA_PORT,CONTROLLER://$HOST:$KAFKA_CONTROLLER_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
# Static quorum: the voter set lives in this file, so a changed controller
# port needs no re-format (a --standalone dynamic quorum stores it on disk).
controller.quorum.voters=1@$HOST:$KAFKA_CONTROLLER_PORT
log.dirs=$KAFKA_DATA
num.partitions=3
default.replication.factor=1
min.insync.replicas=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
num.network.threads=2
num.io.threads=4
EOF
    # Short timeouts for the readiness probe, so a not-yet-ready broker fails fast.
    cat >"$KAFKA_DIR/tools.properties" <<EOF
request.timeout.ms=5000
default.api.timeout.ms=8000
EOF
}

# Short-lived CLI JVMs: small heap and C1 only, to start quickly; bounded by
# TOOL_TIMEOUT seconds.
kafka_tool() {
    timeout "${TOOL_TIMEOUT:-120}" "$JAVA" -Xmx256m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 \
        -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
        -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.log.file="$LOG_DIR/kafka-tools.log" \
        -cp "$KAFKA_LIBS/*" "$@"
}

# Kafka cluster ids are 16 random bytes in unpadded base64url, not starting with '-'.
kafka_random_cluster_id() {
    local id
    while :; do
        id=$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')
        [[ $id == -* ]] || break
    done
    echo "$id"
}

kafka_format() {
    [[ -f $KAFKA_DATA/meta.properties ]] && return 0
    rm -rf "$KAFKA_DATA"
    local cluster_id
    cluster_id=$(kafka_random_cluster_id)
    log "formatting KRaft storage in $KAFKA_DATA (cluster id $cluster_id)"
    kafka_tool kafka.tools.StorageTool format -t "$cluster_id" -c "$KAFKA_CONF" >"$KAFKA_DIR/format.log" 2>&1 ||
        { log_tail "$KAFKA_DIR/format.log" "$LOG_DIR/kafka-tools.log"; die "kafka-storage format failed"; }
}

kafka_launch() {
    log "starting Kafka $KAFKA_VERSION on $HOST:$KAFKA_PORT (log $LOG_DIR/kafka.log)"
    # setsid: the broker must outlive the calling shell/make process group.
    nohup setsid "$JAVA" -Xms256m -Xmx768m -XX:+UseG1GC -XX:MaxGCPauseMillis=20 \
        -Djava.awt.headless=true -Djava.net.preferIPv4Stack=true \
        -Dlog4j2.configurationFile="$KAFKA_LOG4J" -Dkafka.log.file="$LOG_DIR/kafka.log" \
        -cp "$KAFKA_LIBS/*" kafka.Kafka "$KAFKA_CONF" \
        </dev/null >>"$LOG_DIR/kafka.out" 2>&1 9>&- &
    echo $! >"$KAFKA_PID_FILE"
}

# Ready = the port accepts connections and the broker answers a metadata
# request (TopicCommand --list), which only succeeds once KRaft has elected
# the controller and the broker is unfenced.
kafka_wait_ready() {
    local deadline=$((SECONDS + KAFKA_START_TIMEOUT)) launched
    launched=$(cat "$KAFKA_PID_FILE" 2>/dev/null || true)
    while ((SECONDS < deadline)); do
        # Alive by pid, not by command line: right after the launch the child may still be the forked shell
        # (its cmdline is this script's) before it execs java, and a cmdline check would call it dead.
        if ! { [[ $launched =~ ^[0-9]+$ ]] && kill -0 "$launched" 2>/dev/null; }; then
            log_tail "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"
            die "Kafka broker exited during startup (logs: $LOG_DIR/kafka.out, $LOG_DIR/kafka.log)"
        fi
        if port_open "$KAFKA_PORT" &&
            TOOL_TIMEOUT=20 kafka_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$HOST:$KAFKA_PORT" \
                --command-config "$KAFKA_DIR/tools.properties" --list >/dev/null 2>&1; then
            return 0
        fi
        sleep 1
    done
    log_tail "$LOG_DIR/kafka.out" "$LOG_DIR/kafka.log"
    die "Kafka is not ready on $HOST:$KAFKA_PORT after ${KAFKA_START_TIMEOUT}s (logs: $LOG_DIR/kafka.out, $LOG_DIR/kafka.log)"
}

kafka_up() {
    local pid
    if port_open "$KAFKA_PORT"; then
        if pid=$(kafka_pid) && ! kafka_libs_current; then
            log "Kafka version/jars changed: restarting the broker"
            ensure_java
            kafka_fetch_libs
            kafka_down
        else
            log "Kafka already listening on $HOST:$KAFKA_PORT${pid:+ (pid $pid)}"
            return 0
        fi
    fi
    ensure_java
    if pid=$(kafka_pid); then
        # Started but not listening yet (or hung): give it the normal budget.
        log "Kafka process $pid exists but is not listening yet; waiting"
    else
        mkdir -p "$KAFKA_DIR" "$LOG_DIR"
        kafka_resolve_libs
        kafka_write_conf
        kafka_format
        kafka_launch
    fi
    kafka_wait_ready
    log "Kafka ready on $HOST:$KAFKA_PORT"
}

kafka_down() {
    local pid i
    if ! pid=$(kafka_pid); then
        rm -f "$KAFKA_PID_FILE"
        if port_open "$KAFKA_PORT"; then
            log "Kafka: $HOST:$KAFKA_PORT is served by a process this script did not start; leaving it"
        else
            log "Kafka: not running"
        fi
        return 0
    fi
    log "stopping Kafka (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 120; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "Kafka did not stop in 60s; killing it"
        kill -KILL "$pid" 2>/dev/null || true
        sleep 1
    fi
    rm -f "$KAFKA_PID_FILE"
}

kafka_status() {
    local pid=""
    if port_open "$KAFKA_PORT"; then
        pid=$(kafka_pid) || pid="not started by this script"
        echo "kafka:    up   $HOST:$KAFKA_PORT (pid $pid)"
    else
        echo "kafka:    down $HOST:$KAFKA_PORT"
        return 1
    fi
}

# ------------------------------------------------------------------- main

print_env() {
    echo "export KSEF_HUB_TEST_PG_DSN=postgresql+asyncpg://$PG_APP_USER:$PG_APP_PASSWORD@$HOST:$PG_PORT/$PG_APP_DB"
    echo "export KSEF_HUB_TEST_KAFKA_BOOTSTRAP=$HOST:$KAFKA_PORT"
}

usage() {
    echo "usage: $0 [up|down|status|env|pg-up|pg-down|kafka-up|kafka-down]" >&2
    exit 2
}

main() {
    local cmd=${1:-up} start=$SECONDS rc=0
    case $cmd in
        up)
            take_lock
            pg_up
            kafka_up
            log "up: done in $((SECONDS - start))s"
            ;;
        pg-up) take_lock; pg_up ;;
        kafka-up) take_lock; kafka_up ;;
        pg-down) take_lock; pg_down ;;
        kafka-down) take_lock; kafka_down ;;
        down)
            take_lock
            kafka_down
            pg_down
            ;;
        status)
            pg_status || rc=1
            kafka_status || rc=1
            return $rc
            ;;
        env) print_env ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
