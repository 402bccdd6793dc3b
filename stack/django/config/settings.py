"""Django settings: everything deployment-specific comes from the environment."""
from __future__ import annotations

import os
import secrets
from pathlib import Path

from .env import deploy_env, required, role

BASE_DIR = Path(__file__).resolve().parent.parent

# Which container this is (compose sets DJANGO_ROLE): each gets only the secrets it uses.
ROLE = role()
SERVES_HTTP = ROLE == "web"
USES_DATABASE = ROLE in {"web", "worker"}

# Only the web container signs anything (sessions, CSRF, admin); the others get a throwaway
# key so Django starts without being handed the real one.
SECRET_KEY = (required("DJANGO_SECRET_KEY", "set it in .env to a long random string") if SERVES_HTTP
              else secrets.token_urlsafe(50))
# Keys rotated out (the deployer fills it after a rotation): sessions and links signed with them stay valid.
SECRET_KEY_FALLBACKS = os.environ.get("DJANGO_SECRET_KEY_FALLBACKS", "").split() if SERVES_HTTP else []
DEPLOY_ENV = deploy_env()
DOMAIN = required("DOMAIN", "set it in .env to the public domain, e.g. example.com")
INTERNAL_API_TOKEN = (required("INTERNAL_API_TOKEN", "set it in .env to a long random string") if SERVES_HTTP
                      else "")
# The token before the last rotation (the deployer fills it): the api still sends it until it is replaced.
INTERNAL_API_TOKEN_FALLBACKS = os.environ.get("INTERNAL_API_TOKEN_FALLBACKS", "").split() if SERVES_HTTP else []
DEBUG = False

# `django` is the compose service name FastAPI uses; localhost for the healthcheck;
# admin.<DOMAIN> only matters off production, where Traefik routes it.
ALLOWED_HOSTS = ["django", "localhost", "127.0.0.1", f"admin.{DOMAIN}"]
CSRF_TRUSTED_ORIGINS = [f"https://admin.{DOMAIN}"]
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
SESSION_COOKIE_SECURE = DEPLOY_ENV != "development"
CSRF_COOKIE_SECURE = DEPLOY_ENV != "development"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "notes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {} if not USES_DATABASE else {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("POSTGRES_HOST", "postgres"),
        "PORT": os.environ.get("POSTGRES_PORT", "5432"),
        "NAME": required("POSTGRES_DB", "set it in .env to the database name"),
        # The app role (POSTGRES_APP_USER in .env, mapped by compose), never the superuser.
        "USER": required("POSTGRES_USER", "set POSTGRES_APP_USER in .env to the app's database role"),
        "PASSWORD": required("POSTGRES_PASSWORD", "set POSTGRES_APP_PASSWORD in .env to the app role's password"),
        "CONN_MAX_AGE": 60,
        # Fail fast so health checks answer quickly when PostgreSQL is down.
        "OPTIONS": {"connect_timeout": 3},
    }
}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = Path(os.environ.get("DJANGO_STATIC_ROOT", BASE_DIR / "staticfiles"))

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": "INFO"},
}

# Celery: Redis as broker (db 0) and result backend (db 1), JSON only.
# Redis requires a password, so there is no default URL (it would carry none).
CELERY_BROKER_URL = required("REDIS_URL", "set REDIS_PASSWORD in .env (compose builds redis://:PASSWORD@redis:6379/0)")
CELERY_RESULT_BACKEND = required("CELERY_RESULT_URL", "set REDIS_PASSWORD in .env (compose builds the URL)")
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 24 * 3600
CELERY_TASK_TRACK_STARTED = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Beat wakes at least this often, so its heartbeat file stays fresh for the healthcheck.
CELERY_BEAT_MAX_LOOP_INTERVAL = 10
CELERY_BEAT_SCHEDULE = {
    "heartbeat": {"task": "jobs.heartbeat", "schedule": 60.0},
}
