"""The image's start, in one Python process: the settings are checked, then for the web role the
schema is migrated, the static files collected (unless the image has them: collected at build)
and gunicorn serves with the app already loaded.

Each of these was a `manage.py` of its own, and each paid for importing Django again: about
8 s from container start to serving on a loaded droplet, where one process takes about half.
That time is how long a release's cutover waits for django (and the api waits for django).
Celery's roles (worker, beat, flower) are checked and then run their `celery` command in the
same process; any other command replaces it.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def main(argv: list[str]) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
    from django.core.exceptions import ImproperlyConfigured

    try:
        import django
        from django.core.management import call_command

        django.setup()
        call_command("check", verbosity=0)
        if argv[:1] == ["gunicorn"]:
            call_command("migrate", interactive=False)
            from django.conf import settings

            if not any(Path(settings.STATIC_ROOT).glob("*")):   # the image has them (collected at build)
                call_command("collectstatic", interactive=False, verbosity=0)
            from django.urls import get_resolver

            # The URLconf (and every view it imports) loads on a worker's first request: here,
            # before the workers fork, the first requests a new container gets are not the slow ones.
            get_resolver().url_patterns
    except ImproperlyConfigured as exc:
        # Bad settings are an operator error: say what to fix, no traceback.
        print(f"django: configuration error: {exc}", file=sys.stderr)
        sys.exit(2)
    if argv[:1] == ["gunicorn"]:
        from django.db import connections
        from gunicorn.app.wsgiapp import run

        connections.close_all()      # never a database connection shared by the forked workers

        # --preload: the workers fork from this process with the app loaded, not import it again;
        # the config module: how a worker stops listening on SIGTERM.
        sys.argv = [*argv, "--preload", "--config", "python:config.gunicorn_conf"]
        run()
        return
    if argv[:1] == ["celery"]:
        # In this process, where Django is loaded already: an exec of the `celery` script imported
        # it all again (about 3 s of a worker's start on a busy droplet).
        from celery.bin.celery import main as celery_main

        sys.argv = argv
        sys.exit(celery_main())
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
