#!/bin/bash
# PostgreSQL's container command: the image's own entrypoint (first start: initdb and
# /docker-entrypoint-initdb.d), then, once the real server listens on TCP, app-role.sh on
# every start (idempotent: the roles and their passwords as the environment says), then /tmp/app-role.ready, which the healthcheck requires, then the
# backup schedule (backup-schedule.sh) beside the server.
# Stop signals go to the server as SIGINT (fast shutdown), as the image would send them.
set -Eeuo pipefail

# The backup repository's settings, inherited by the server (archive_command, restore_command).
# shellcheck source=backup-env.sh
source /usr/local/lib/stack-postgres/backup-env.sh

# The superuser's password for the image's first-start initdb, from the deployer's file (never in
# the container's environment: docker inspect does not show it, and a rotation changes nothing
# compose compares). app-role.sh sets every password from the same file once the server runs.
secrets=/run/stack-secrets/passwords
if [ ! -s "$secrets" ]; then
    echo "start.sh: no passwords in $secrets: the deployer writes .secrets/postgres/passwords beside the release's .env (deploy with inv deploy)" >&2
    exit 1
fi
IFS= read -r POSTGRES_PASSWORD < "$secrets" || true
export POSTGRES_PASSWORD

docker-entrypoint.sh "$@" &
pid=$!
schedule=""
trap 'kill -INT "$pid" 2>/dev/null || true; [ -z "$schedule" ] || kill "$schedule" 2>/dev/null || true' INT TERM

# The first-start init server listens on the socket only: TCP means the real server. After a
# restore, the server replays WAL before it accepts connections (hot_standby is off), so the
# app role is never ensured on a database still in recovery.
until pg_isready -q -h 127.0.0.1 -U "$POSTGRES_USER" -d "$POSTGRES_DB"; do
    if ! kill -0 "$pid" 2>/dev/null; then
        wait "$pid" && exit 0 || exit $?
    fi
    sleep 0.5
done

# Over the local socket (trust inside the container): the roles' passwords are set from the
# deployer's file here, so the passwords of the release that is live are in force once it runs.
if bash /usr/local/lib/stack-postgres/app-role.sh; then
    touch /tmp/app-role.ready
    echo "start.sh: app role ${POSTGRES_APP_USER} ensured (owner of ${POSTGRES_DB}, not a superuser)"
    bash /usr/local/lib/stack-postgres/backup-schedule.sh &
    schedule=$!
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
[ -z "$schedule" ] || kill "$schedule" 2>/dev/null || true
exit "$status"
