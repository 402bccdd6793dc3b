#!/bin/sh
# Every container from this image (django, worker, beat, flower) validates its settings
# first, so a missing/bad variable is one clear line instead of a traceback. The web
# container then brings the schema and static files up to date and serves; worker/beat/
# flower wait for django to be healthy, i.e. migrated. All in one Python process
# (config/start.py): Django is imported once.
set -e
exec python -m config.start "$@"
