"""A requests Session that always connects to the droplet's IP, whatever DNS says.

URLs are written with the real names (https://app.example.com/api/health) so messages and
artifacts read naturally; the adapter swaps the address for the pinned IP and port, and keeps
the name as Host header and TLS SNI (and as the name checked when verification is on). This is
how the checks work before DNS propagates, and why they can never wander to another server.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import requests
from requests.adapters import HTTPAdapter

from deploy.checks.model import PublicSite

USER_AGENT = "stackdeploy-checks/0.1"


class PinningError(requests.exceptions.InvalidURL):
    """A request named a host outside the target's domain; it is refused, never sent."""


class PinnedAdapter(HTTPAdapter):
    def __init__(self, target: PublicSite, **kwargs: Any) -> None:
        self._target = target
        super().__init__(**kwargs)

    def _port_for(self, scheme: str) -> int:
        return self._target.https_port if scheme == "https" else self._target.http_port

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        parts = urlsplit(request.url or "")
        host = (parts.hostname or "").lower()
        domain = self._target.domain
        if host != domain and not host.endswith("." + domain):
            raise PinningError(f"refusing {host!r}: only {domain} and its subdomains are pinned to {self._target.ip}")
        ip = self._target.ip
        address = f"[{ip}]" if ":" in ip else ip
        # Host without port: Traefik matches Host rules on the name alone.
        request.headers["Host"] = host
        request.url = urlunsplit(parts._replace(netloc=f"{address}:{self._port_for(parts.scheme)}"))
        response = super().send(request, **kwargs)
        # Show the name, not the IP, to whoever reads response.url.
        response.url = urlunsplit(parts)
        return response

    def build_connection_pool_key_attributes(  # type: ignore[override]
        self, request: requests.PreparedRequest, verify: Any, cert: Any = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        host_params, pool_kwargs = super().build_connection_pool_key_attributes(request, verify, cert)
        if host_params.get("scheme") == "https":
            name = request.headers["Host"]
            pool_kwargs["server_hostname"] = name  # SNI
            pool_kwargs["assert_hostname"] = name if verify else False
        return host_params, pool_kwargs


def pinned_session(target: PublicSite, verify: bool = False) -> requests.Session:
    """Session for the checks. verify=False by default: staging certificates are not trusted."""
    session = requests.Session()
    # Never through the operator's HTTP(S)_PROXY: the point is to reach the droplet directly.
    session.trust_env = False
    session.verify = verify
    session.headers["User-Agent"] = USER_AGENT
    adapter = PinnedAdapter(target)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
