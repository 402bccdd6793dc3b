#!/bin/sh
# Web container only: bring the schema and static files up to date, then serve.
# worker/beat/flower pass their own command and skip this (they wait for django healthy).
set -e
if [ "$1" = "gunicorn" ]; then
    python manage.py migrate --noinput
    python manage.py collectstatic --noinput --verbosity 0
fi
exec "$@"
