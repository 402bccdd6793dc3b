#!/bin/sh
# Every container from this image (django, worker, beat, flower) validates its settings
# first, so a missing/bad variable is one clear line instead of a traceback.
# The web container then brings the schema and static files up to date and serves;
# worker/beat/flower wait for django to be healthy, i.e. migrated.
set -e
python manage.py check --verbosity 0
if [ "$1" = "gunicorn" ]; then
    python manage.py migrate --noinput
    python manage.py collectstatic --noinput --verbosity 0
fi
exec "$@"
