#!/usr/bin/env bash
# Start (or stop) a throwaway PostgreSQL for the test suite; `start` prints its SQLAlchemy URL.
#   URL=$(scripts/test-postgres.sh start /tmp/wanforge-pg)   ...   scripts/test-postgres.sh stop /tmp/wanforge-pg
# `down DIR` stops the server and keeps its data; `up DIR` starts it again on the same port (the
# restart tests: tests/e2e/test_scale_out.py).
# Installs Debian's postgresql package when no server is present (CI runs as root).
set -euo pipefail
cmd=${1:?start|stop}
dir=${2:?directory}
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
port=${WANFORGE_TEST_PGPORT:-}

find_bin() { ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1; }

case "$cmd" in
  start)
    if [ -z "$(find_bin)" ]; then
      apt-get update -qq >&2
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
    fi
    bin=$(find_bin)
    port=${port:-$(free_port)}
    rm -rf "$dir" && mkdir -p "$dir"
    echo "$port" >"$dir/port"
    run=()
    if [ "$(id -u)" = 0 ]; then
      chown postgres "$dir"
      run=(runuser -u postgres --)
    fi
    "${run[@]}" "$bin/initdb" -D "$dir/data" -A trust -U postgres >/dev/null
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    echo "postgresql+psycopg://postgres@127.0.0.1:$port/postgres"
    ;;
  down)
    bin=$(find_bin)
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null
    ;;
  up)
    bin=$(find_bin)
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    port=$(cat "$dir/port")
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w \
      -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200" start >/dev/null
    ;;
  stop)
    bin=$(find_bin)
    run=()
    [ "$(id -u)" = 0 ] && run=(runuser -u postgres --)
    "${run[@]}" "$bin/pg_ctl" -D "$dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$dir"
    ;;
esac
