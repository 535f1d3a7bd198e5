#!/usr/bin/env bash
# A throwaway PostgreSQL cluster on loopback, for tests and local experiments with an
# MLflow server on a real database (docs/deploy.md). Nothing here touches the system's
# own clusters: the data lives in a fresh temp dir and listens on 127.0.0.1 only.
#
#   scripts/postgres_local.sh install        # Debian packages, only when missing
#   scripts/postgres_local.sh start [PORT]   # prints PGLOCAL_DIR=, PGLOCAL_PORT=, PGLOCAL_URI=
#   scripts/postgres_local.sh stop DIR       # stops the cluster and removes DIR
#
# Database, user and password are all "mlflow" (override with PGLOCAL_DB, PGLOCAL_USER,
# PGLOCAL_PASSWORD). As root the cluster runs as the "postgres" user (initdb refuses root).
# fsync is off: the cluster is disposable; durability is not what the tests check.
set -euo pipefail

PGLOCAL_DB="${PGLOCAL_DB:-mlflow}"
PGLOCAL_USER="${PGLOCAL_USER:-mlflow}"
PGLOCAL_PASSWORD="${PGLOCAL_PASSWORD:-mlflow}"

die() { echo "postgres_local.sh: $*" >&2; exit 1; }

# Debian installs the server binaries outside PATH: /usr/lib/postgresql/<major>/bin.
find_bindir() {
    local pg_ctl
    pg_ctl="$(ls -d /usr/lib/postgresql/*/bin/pg_ctl 2>/dev/null | sort -V | tail -n 1 || true)"
    if [[ -n "$pg_ctl" ]]; then dirname "$pg_ctl"; return 0; fi
    if command -v pg_ctl >/dev/null 2>&1; then dirname "$(command -v pg_ctl)"; return 0; fi
    return 1
}

cmd_install() {
    if find_bindir >/dev/null; then return 0; fi
    [[ "$(id -u)" == 0 ]] || die "PostgreSQL is missing; install it: sudo apt-get install -y postgresql"
    export DEBIAN_FRONTEND=noninteractive
    # Update the package lists only when the package cannot be installed without it.
    apt-get install -y -q postgresql >/dev/null 2>&1 || {
        apt-get update -q >/dev/null
        apt-get install -y -q postgresql >/dev/null
    }
    # The Debian package may start the system cluster; it is not ours, leave it running.
    find_bindir >/dev/null || die "postgresql installed but pg_ctl not found under /usr/lib/postgresql"
}

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# Run a command as the cluster owner: "postgres" when we are root, ourselves otherwise.
as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

cmd_start() {
    local port="${1:-$(free_port)}" bindir dir
    cmd_install
    bindir="$(find_bindir)"
    dir="$(mktemp -d "${TMPDIR:-/tmp}/vaplan-pg.XXXXXX")"
    trap 'cmd_stop "$dir"' EXIT  # a failed start leaves nothing behind
    if [[ "$(id -u)" == 0 ]]; then
        id postgres >/dev/null 2>&1 || die "user 'postgres' missing (the Debian package creates it)"
        chown postgres: "$dir"
    fi
    printf '%s\n' "$PGLOCAL_PASSWORD" >"$dir/pwfile"
    chmod 600 "$dir/pwfile"
    [[ "$(id -u)" == 0 ]] && chown postgres: "$dir/pwfile"

    as_owner "$bindir/initdb" -D "$dir/data" -U "$PGLOCAL_USER" --pwfile="$dir/pwfile" \
        --auth-local=trust --auth-host=scram-sha-256 -E UTF8 --no-instructions >"$dir/initdb.log" 2>&1 \
        || { cat "$dir/initdb.log" >&2; die "initdb failed (log above)"; }
    rm -f "$dir/pwfile"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories=$dir \
            -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null \
        || { cat "$dir/server.log" >&2 || true; die "pg_ctl start failed on port $port (log above)"; }
    as_owner "$bindir/createdb" -h "$dir" -p "$port" -U "$PGLOCAL_USER" "$PGLOCAL_DB"
    trap - EXIT
    echo "PGLOCAL_DIR=$dir"
    echo "PGLOCAL_PORT=$port"
    echo "PGLOCAL_URI=postgresql://$PGLOCAL_USER:$PGLOCAL_PASSWORD@127.0.0.1:$port/$PGLOCAL_DB"
}

cmd_stop() {
    local dir="${1:?usage: postgres_local.sh stop DIR}" bindir
    [[ "$dir" == "${TMPDIR:-/tmp}"/vaplan-pg.* ]] || die "refusing to remove $dir: not a vaplan-pg temp dir"
    if [[ -d "$dir/data" ]] && bindir="$(find_bindir)"; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
            || as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 30 stop >/dev/null 2>&1 || true
    fi
    rm -rf "$dir"
}

case "${1:-}" in
    install) cmd_install ;;
    start) shift; cmd_start "$@" ;;
    stop) shift; cmd_stop "$@" ;;
    *) die "usage: $0 install | start [PORT] | stop DIR" ;;
esac
