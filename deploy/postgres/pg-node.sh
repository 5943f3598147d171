#!/bin/sh
# One node of estatemon's PostgreSQL pair under pg_auto_failover: the
# monitor, or a data node (the first to register is the primary, the next a
# standby cloned from it, with synchronous replication). Used by
# docker-compose.cluster.yml (deploy/postgres/Dockerfile) and by
# tests/failover.rs, which runs this very script; deploy/CLUSTER.md runs
# the same steps by hand.
#
#   pg-node.sh monitor     pg-node.sh postgres
#
# The first start creates the node; every start then runs it in the
# foreground (`pg_autoctl run`, which supervises PostgreSQL). A create that
# was cut short is resumed: pg_autoctl picks it up where it stopped.
#
# Environment:
#   PGDATA                  the node's data directory (required)
#   PGPORT                  PostgreSQL's port (5432)
#   PG_NODE_HOSTNAME        the name the other nodes reach this one by
#                           (the machine's host name)
#   PG_NODE_NAME            the data node's name in the monitor (its host name)
#   PG_MONITOR_HOST         the monitor's host (data nodes; required)
#   PG_MONITOR_PORT         the monitor's port (5432)
#   AUTOCTL_NODE_PASSWORD   the data nodes' password on the monitor (required)
#   REPLICATION_PASSWORD    the standby's password on the primary (data nodes; required)
#   ESTATEMON_DB_PASSWORD   the password of role `estatemon`, which the
#                           primary creates with database `estatemon`
#                           (data nodes; required)
#   PG_SSL                  pg_autoctl's TLS option (--ssl-self-signed;
#                           --no-ssl only on a network you trust)
#   PG_TIMESCALEDB          1: preload TimescaleDB (the image has it), 0: plain
#                           PostgreSQL; default: 1 when the extension is installed
#
#   PG_NODE_READY_FILE      made once the node is ready, removed at start
#                           (a container's health check; $TMPDIR/pg-node-$PGPORT.ready)
#
# Every connection between nodes authenticates with scram-sha-256, from
# the nodes' local network (--pg-hba-lan), but pg_auto_failover's own health
# check from the monitor (it uses `trust` for that one role, by design).
# Passwords go to PostgreSQL through psql's \getenv and to libpq through a
# password file: never on a command line (ps shows those) or in a log.
set -eu

role=${1:?usage: pg-node.sh monitor|postgres}
: "${PGDATA:?PGDATA: the node's data directory}"
: "${AUTOCTL_NODE_PASSWORD:?AUTOCTL_NODE_PASSWORD: the data nodes' password on the monitor}"
port=${PGPORT:-5432}
host=${PG_NODE_HOSTNAME:-$(hostname)}
ssl=${PG_SSL:---ssl-self-signed}
export PGPORT="$port"

say() { echo "pg-node.sh ($role, $host:$port): $*" >&2; }

ready_file=${PG_NODE_READY_FILE:-${TMPDIR:-/tmp}/pg-node-$port.ready}
rm -f "$ready_file"

# Runs "$@" until it succeeds, a second apart, while PostgreSQL restarts
# under pg_autoctl (it starts it again once it runs it); after a minute
# says $why and fails.
retrying() {
    why=$1
    shift
    n=0
    until "$@"; do
        n=$((n + 1))
        if [ $n -ge 60 ]; then
            say "$why"
            return 1
        fi
        sleep 1
    done
}

# SQL on this node as the superuser: database $1, the statements $2.
# Nothing of it in the server's log or in pg_stat_statements: the
# statements carry passwords.
psql_quiet() {
    printf '%s\n' "SET log_statement = 'none';" "SET log_min_error_statement = panic;" \
        "SET pg_stat_statements.track_utility = off;" "$2" |
        psql -q -X -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -d "$1" >/dev/null
}

# SQL from stdin on database $1, retried.
sql() {
    retrying "settings not made (psql's error above)" psql_quiet "$1" "$(cat)"
}

# Prints t on a standby, f on a primary; fails while PostgreSQL does not
# answer.
in_recovery() {
    answer=$(psql -X -Atq -h 127.0.0.1 -p "$port" -d postgres \
        -c 'SELECT pg_is_in_recovery()' 2>/dev/null) && [ -n "$answer" ] && echo "$answer"
}

# After `pg_autoctl create`, PostgreSQL may still run outside pg_autoctl's
# supervision; stopped here so that `pg_autoctl run` starts it once, with
# the settings below.
stop_unsupervised() {
    if pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then
        pg_ctl -D "$PGDATA" stop -m fast -w >/dev/null
    fi
}

# True when the node is still to be made, or its making was cut short (the
# marker beside PGDATA: initdb and pg_basebackup want PGDATA empty). The
# marker is set here.
marker="$PGDATA.pg-node-creating"
creating() {
    if [ -f "$PGDATA/PG_VERSION" ] && [ ! -f "$marker" ]; then
        return 1
    fi
    mkdir -p "$(dirname "$PGDATA")"
    touch "$marker"
}

# Runs `pg_autoctl run` in the background until PostgreSQL answers on
# $port, runs "$@" against it, then waits on pg_autoctl (the container's
# life). The node's settings that pg_autoctl does not make are made here,
# on each start, idempotently.
run_then() {
    pg_autoctl run --pgdata "$PGDATA" &
    autoctl=$!
    trap 'kill -TERM $autoctl 2>/dev/null; wait $autoctl; exit 143' TERM INT
    n=0
    until pg_isready -q -h 127.0.0.1 -p "$port"; do
        n=$((n + 1))
        if [ $n -gt 600 ] || ! kill -0 $autoctl 2>/dev/null; then
            say "PostgreSQL did not start (pg_autoctl's log above)"
            exit 1
        fi
        sleep 0.5
    done
    if ! "$@"; then
        kill -TERM $autoctl 2>/dev/null
        wait $autoctl
        exit 1
    fi
    touch "$ready_file"
    say "ready"
    wait $autoctl
}

case "$role" in
monitor)
    if creating; then
        say "creating the monitor"
        pg_autoctl create monitor --pgdata "$PGDATA" --pgport "$port" \
            --hostname "$host" --auth scram-sha-256 $ssl
        stop_unsupervised
        rm -f "$marker"
    fi
    monitor_settings() {
        # The data nodes' password; `:'pw'` quotes it, whatever it holds.
        sql pg_auto_failover <<'SQL'
\getenv pw AUTOCTL_NODE_PASSWORD
ALTER ROLE autoctl_node PASSWORD :'pw';
SQL
    }
    run_then monitor_settings
    ;;
postgres)
    : "${PG_MONITOR_HOST:?PG_MONITOR_HOST: the monitor's host}"
    : "${REPLICATION_PASSWORD:?REPLICATION_PASSWORD: the standby's password on the primary}"
    : "${ESTATEMON_DB_PASSWORD:?ESTATEMON_DB_PASSWORD: role estatemon's password}"
    name=${PG_NODE_NAME:-$host}
    sslmode=require
    [ "$ssl" = "--no-ssl" ] && sslmode=prefer
    monitor="postgres://autoctl_node@${PG_MONITOR_HOST}:${PG_MONITOR_PORT:-5432}/pg_auto_failover?sslmode=$sslmode"
    # The monitor's and replication's passwords from a password file, not
    # the monitor URI or pg_autoctl's configuration (it prints and stores
    # both, and writes replication's unquoted into primary_conninfo).
    # PostgreSQL inherits PGPASSFILE, so its standby connection reads it.
    pgpass="${PGPASSFILE:-$HOME/.pgpass}"
    esc() { printf '%s' "$1" | sed 's/\\/\\\\/g; s/:/\\:/g'; }
    umask 077
    {
        printf '*:*:pg_auto_failover:autoctl_node:%s\n' "$(esc "$AUTOCTL_NODE_PASSWORD")"
        printf '*:*:*:pgautofailover_replicator:%s\n' "$(esc "$REPLICATION_PASSWORD")"
    } >"$pgpass"
    export PGPASSFILE="$pgpass"
    umask 022
    if creating; then
        say "creating data node $name (primary if first, else a standby of it)"
        pg_autoctl create postgres --pgdata "$PGDATA" --pgport "$port" \
            --hostname "$host" --name "$name" --monitor "$monitor" \
            --dbname estatemon --auth scram-sha-256 --pg-hba-lan $ssl
        stop_unsupervised
        rm -f "$marker"
    fi
    timescaledb=${PG_TIMESCALEDB:-}
    if [ -z "$timescaledb" ]; then
        timescaledb=0
        # pg_config where it is installed, else Debian's layout.
        for control in "$(pg_config --sharedir 2>/dev/null)/extension/timescaledb.control" \
            /usr/share/postgresql/"$(postgres --version | sed -E 's/.* ([0-9]+)[.].*/\1/')"/extension/timescaledb.control; do
            [ -f "$control" ] && timescaledb=1
        done
    fi
    # TimescaleDB is preloaded before pg_autoctl runs PostgreSQL, with
    # the libraries pg_autoctl preloads (its postgresql-auto-failover.conf,
    # included before this line). A standby's postgresql.conf, copied from
    # the primary by pg_basebackup, has the line already.
    if [ "$timescaledb" = 1 ] && ! grep -q "^shared_preload_libraries = 'timescaledb" "$PGDATA/postgresql.conf"; then
        stop_unsupervised
        # pg_autoctl writes the value quoted or not.
        libs=$(sed -n 's/^shared_preload_libraries *= *//p' \
            "$PGDATA/postgresql-auto-failover.conf" 2>/dev/null | tail -n 1 |
            sed "s/#.*//; s/'//g; s/[[:space:]]*\$//")
        echo "shared_preload_libraries = 'timescaledb${libs:+,$libs}'  # pg-node.sh" >>"$PGDATA/postgresql.conf"
    fi
    # Rules pg_autoctl does not write, after its own (the first match
    # wins). pg_hba.conf is not replicated: every node adds them.
    # - estatemon's processes and Grafana's reader, with their passwords,
    #   from the nodes' networks (estatemon connects without TLS, as to the
    #   single database of docker-compose.yml);
    # - replication and pg_auto_failover's health check by network, not
    #   only by the peers' host names that pg_autoctl writes: PostgreSQL
    #   matches a name by reverse DNS, which in a container network answers
    #   `pg-2.<network>`, not `pg-2`, and addresses change when a container
    #   is made again.
    added=0
    for rule in \
        "host estatemon all samenet scram-sha-256" \
        "host replication pgautofailover_replicator samenet scram-sha-256" \
        "host all pgautofailover_replicator samenet scram-sha-256" \
        "host all pgautofailover_monitor samenet trust"; do
        if ! grep -qxF "$rule # pg-node.sh" "$PGDATA/pg_hba.conf"; then
            echo "$rule # pg-node.sh" >>"$PGDATA/pg_hba.conf"
            added=1
        fi
    done
    if [ $added = 1 ] && pg_ctl -D "$PGDATA" status >/dev/null 2>&1; then
        pg_ctl -D "$PGDATA" reload >/dev/null
    fi
    export PG_NODE_TSDB="$timescaledb"
    data_settings() {
        # Primary or standby, asked until PostgreSQL answers.
        recovery=$(retrying "PostgreSQL does not answer whether it is a standby" in_recovery) ||
            return 1
        if [ "$recovery" = f ]; then
            # The primary: replication's password (a standby made from it,
            # and this node when it is demoted and rejoins, use it), and
            # the application's role, owner of its database (CREATEROLE
            # for `estatemon db-reader`). A standby gets them by
            # replication.
            sql estatemon <<'SQL'
\getenv rp REPLICATION_PASSWORD
\getenv ap ESTATEMON_DB_PASSWORD
\getenv tsdb PG_NODE_TSDB
ALTER ROLE pgautofailover_replicator PASSWORD :'rp';
SELECT NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'estatemon') AS missing \gset
\if :missing
CREATE ROLE estatemon LOGIN CREATEROLE;
\endif
ALTER ROLE estatemon PASSWORD :'ap';
ALTER DATABASE estatemon OWNER TO estatemon;
ALTER SCHEMA public OWNER TO estatemon;
\if :tsdb
CREATE EXTENSION IF NOT EXISTS timescaledb;
\endif
SQL
        fi
    }
    run_then data_settings
    ;;
*)
    echo "usage: pg-node.sh monitor|postgres" >&2
    exit 2
    ;;
esac
