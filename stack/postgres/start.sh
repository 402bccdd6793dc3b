#!/bin/bash
# PostgreSQL's container command: the image's own entrypoint (first start: initdb and
# /docker-entrypoint-initdb.d), then, once the real server listens on TCP, app-role.sh on
# every start (idempotent), then /tmp/app-role.ready, which the healthcheck requires.
# Stop signals go to the server as SIGINT (fast shutdown), as the image would send them.
set -Eeuo pipefail

docker-entrypoint.sh "$@" &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM

# The first-start init server listens on the socket only: TCP means the real server.
until pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" && exit 0 || exit $?
    fi
    sleep 0.5
done

if PGHOST=127.0.0.1 PGPASSWORD="$POSTGRES_PASSWORD" bash /usr/local/lib/stack-postgres/app-role.sh; then
    touch /tmp/app-role.ready
    echo "start.sh: app role ${POSTGRES_APP_USER} ensured (owner of ${POSTGRES_DB}, not a superuser)"
else
    echo "start.sh: could not ensure the app role ${POSTGRES_APP_USER:-?}: see the error above; stopping" >&2
    kill -INT "$pid" 2>/dev/null || true
    wait "$pid" || true
    exit 1
fi

status=0
while :; do
    wait "$pid" && status=0 || status=$?
    kill -0 "$pid" 2>/dev/null || break
done
exit "$status"
