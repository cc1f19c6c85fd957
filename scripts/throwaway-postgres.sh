#!/usr/bin/env bash
# A throwaway PostgreSQL server on 127.0.0.1 for tests and benchmarks (never for real runs).
#
#   scripts/throwaway-postgres.sh start DIR [PORT]   initdb + pg_ctl start in DIR; prints the URL
#   scripts/throwaway-postgres.sh stop DIR           pg_ctl stop, then removes DIR
#   scripts/throwaway-postgres.sh restart DIR        pg_ctl restart (the "lost database" tests)
#
# PostgreSQL refuses to run as root: as root the server runs as the `postgres` user that Debian's
# package creates. Authentication is `trust`, on loopback only, so the URL carries no password.
# fsync is off for speed (PUSHTUNE_PG_FSYNC=on for benchmarks: a server as durable as a real one).
set -euo pipefail

action="${1:?usage: throwaway-postgres.sh start|stop|restart DIR [PORT]}"
dir="${2:?usage: throwaway-postgres.sh start|stop|restart DIR [PORT]}"
port="${3:-}"

bindir="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "$bindir" ] && command -v pg_ctl >/dev/null 2>&1; then
    bindir="$(dirname "$(readlink -f "$(command -v pg_ctl)")")"
fi
if [ -z "$bindir" ] || [ ! -x "$bindir/initdb" ]; then
    echo "throwaway-postgres: no PostgreSQL server found (apt-get install -y postgresql)" >&2
    exit 1
fi

as_owner() {  # runs a server binary as the data directory's (non-root) owner
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "$action" in
start)
    if [ -z "$port" ]; then  # a free port, chosen by the kernel
        port="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    fi
    mkdir -p "$dir"
    [ "$(id -u)" = 0 ] && chown postgres: "$dir"
    chmod 700 "$dir"
    as_owner "$bindir/initdb" -D "$dir/data" -U pushtune --auth=trust -E UTF8 --locale=C.UTF-8 >"$dir/initdb.log"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=${PUSHTUNE_PG_FSYNC:-off}" start >/dev/null
    echo "$port" >"$dir/port"
    as_owner "$bindir/createdb" -h 127.0.0.1 -p "$port" -U pushtune pushtune
    echo "postgresql://pushtune@127.0.0.1:$port/pushtune"
    ;;
restart)
    port="$(cat "$dir/port")"
    as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 -m fast \
        -o "-c listen_addresses=127.0.0.1 -p $port -k $dir -c fsync=${PUSHTUNE_PG_FSYNC:-off}" restart >/dev/null
    ;;
stop)
    if [ -d "$dir/data" ]; then
        as_owner "$bindir/pg_ctl" -D "$dir/data" -w -t 60 -m fast stop >/dev/null || true
    fi
    rm -rf "$dir"
    ;;
*)
    echo "throwaway-postgres: unknown action $action (start, stop or restart)" >&2
    exit 2
    ;;
esac
