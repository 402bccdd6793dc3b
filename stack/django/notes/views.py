"""Django's internal JSON API, called by FastAPI over the internal network."""
from __future__ import annotations

import json

import django
from django.db import connection
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_http_methods

from .auth import has_internal_token
from .models import Note

MAX_TEXT = 500
LIST_LIMIT = 50


@require_GET
def health(request: HttpRequest) -> JsonResponse:
    """No token: used by the container healthcheck; reveals nothing but versions."""
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
        database = "ok"
    except Exception as exc:  # any DB failure means "unhealthy", with its class name
        database = f"error: {type(exc).__name__}"
    ok = database == "ok"
    return JsonResponse(
        {"status": "ok" if ok else "error", "database": database, "django": django.get_version()},
        status=200 if ok else 503,
    )


@csrf_exempt  # token-authenticated machine API, no browser session involved
@require_http_methods(["GET", "POST"])
def notes(request: HttpRequest) -> JsonResponse:
    if not has_internal_token(request):
        return JsonResponse({"detail": "missing or wrong X-Internal-Token"}, status=403)
    if request.method == "GET":
        items = [n.as_dict() for n in Note.objects.all()[:LIST_LIMIT]]
        return JsonResponse({"notes": items})
    try:
        payload = json.loads(request.body or b"{}")
    except json.JSONDecodeError:
        return JsonResponse({"detail": "body must be JSON"}, status=400)
    text = payload.get("text") if isinstance(payload, dict) else None
    if not isinstance(text, str) or not text.strip() or len(text) > MAX_TEXT:
        return JsonResponse(
            {"detail": f"text must be a non-empty string of at most {MAX_TEXT} characters"},
            status=400,
        )
    note = Note.objects.create(text=text.strip())
    return JsonResponse(note.as_dict(), status=201)
