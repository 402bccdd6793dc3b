"""The shared-token check for Django's internal API (only FastAPI holds the token)."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest


def has_internal_token(request: HttpRequest) -> bool:
    sent = request.headers.get("X-Internal-Token", "")
    if not settings.INTERNAL_API_TOKEN:  # a container without the token serves nobody
        return False
    # Constant-time comparison: the token must not leak through response timing.
    return hmac.compare_digest(sent.encode(), settings.INTERNAL_API_TOKEN.encode())
