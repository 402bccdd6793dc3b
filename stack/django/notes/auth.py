"""The shared-token check for Django's internal API (only FastAPI holds the token)."""
from __future__ import annotations

import hmac

from django.conf import settings
from django.http import HttpRequest


def has_internal_token(request: HttpRequest) -> bool:
    """The token, or one rotated out by the last rotation (INTERNAL_API_TOKEN_FALLBACKS: an api
    not yet replaced still sends it while a new django serves)."""
    sent = request.headers.get("X-Internal-Token", "").encode()
    if not settings.INTERNAL_API_TOKEN:  # a container without the token serves nobody
        return False
    # Constant-time comparison of every accepted token: none leaks through response timing.
    accepted = [settings.INTERNAL_API_TOKEN, *settings.INTERNAL_API_TOKEN_FALLBACKS]
    return sum(hmac.compare_digest(sent, token.encode()) for token in accepted) > 0
