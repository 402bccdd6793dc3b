"""Shared state of one checks pass: the pinned session, settings and the files being collected."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import requests

from deploy.checks.model import PublicSite, ChecksConfig

# Appended to the message of every HTTPS check, so nobody mistakes a pass for a trusted chain.
UNVERIFIED_NOTE = "TLS chain not verified (staging certificates are not publicly trusted; see the tls check)"


@dataclass
class Context:
    target: PublicSite
    config: ChecksConfig
    session: requests.Session
    files: dict[str, str] = field(default_factory=dict)
    # First response seen per URL, reused by the header checks instead of asking again.
    responses: dict[str, requests.Response] = field(default_factory=dict)
    latency: dict[str, Any] = field(default_factory=dict)

    def url(self, path: str, subdomain: str | None = None, scheme: str = "https") -> str:
        return f"{scheme}://{self.target.host(subdomain)}{path}"

    def get(self, url: str, **kwargs: Any) -> requests.Response:
        """One GET through the pinned session: bounded by the timeout, redirects not followed."""
        kwargs.setdefault("allow_redirects", False)
        return self.session.get(url, timeout=self.config.timeout, **kwargs)


def describe_error(exc: BaseException) -> str:
    """Short, readable error text: the root reason of a requests error instead of its pool dump."""
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    text = f"{type(exc).__name__}: {reason or exc}"
    return text if len(text) <= 400 else text[:397] + "..."
