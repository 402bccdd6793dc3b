"""FakeDigitalOcean: a stateful DigitalOcean-compatible API on 127.0.0.1 (stdlib only).

It speaks enough of /v2/ for python-digitalocean: account, droplets (+actions), ssh keys,
firewalls, domains + records, tags, VPCs (read: one default per region), the container registry
(registry.py), block storage volumes and snapshots (storage.py: listed and deleted); pagination via links.pages.next, ratelimit headers,
{"id", "message"} error bodies and 401 for a wrong token. Machines come from a
DropletBackend, called from worker threads so a droplet stays "new" while it is built.
"""
from __future__ import annotations

import hmac
import json
import math
import os
import re
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable
from urllib.parse import parse_qs, urlencode, urlsplit

from .backend import DnsPublisher, DropletBackend, NullBackend
from .faults import ERROR_IDS, Fault, FaultPlan, RequestRecord, masked_headers
from .registry import DOCR_SERVER, RegistryApi
from .storage import StorageApi
from .store import ApiError, FakeStore, not_found, unprocessable

RATE_LIMIT = 5000
Route = tuple[str, "re.Pattern[str]", Callable[..., Any]]
# (method, path, status, payload) -> the payload to send instead
ResponseHook = Callable[[str, str, int, Any], Any]


class ApiHTTPServer(ThreadingHTTPServer):
    """The API's listener. SO_REUSEADDR (http.server's default, stated here because
    lab.ports.port_free probes the port the same way before `inv lab.up` starts the API): a
    restarted API takes its port back while the last one's connections are in TIME_WAIT."""
    allow_reuse_address = True
    daemon_threads = True


class FakeDigitalOcean:
    def __init__(self, token: str, backend: DropletBackend | None = None,
                 operator_ip: str = "127.0.0.1", max_per_page: int = 200,
                 state_file: str | None = None, dns: DnsPublisher | None = None,
                 registry_server: str = DOCR_SERVER) -> None:
        self._token = token
        self.dns = dns
        self.backend: DropletBackend = backend or NullBackend()
        self.operator_ip = operator_ip
        self.max_per_page = max(1, min(200, max_per_page))
        self.state_file = state_file
        self.store = FakeStore(self._load_state(), vpc_range=getattr(self.backend, "vpc_range", NullBackend.vpc_range))
        self.faults = FaultPlan()
        self._requests: list[RequestRecord] = []
        self._response_hooks: list[ResponseHook] = []
        self._log_lock = threading.Lock()
        self._save_lock = threading.Lock()
        self._remaining = RATE_LIMIT
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.base_url = ""
        self.registry = RegistryApi(self.store, token, registry_server)   # /v2/registry (DOCR)
        self.storage = StorageApi(self.store)    # /v2/volumes and /v2/snapshots
        self._routes = self._build_routes()
        self._tls = threading.local()  # the path being served, for pagination links

    def __repr__(self) -> str:  # never show the token
        return f"<FakeDigitalOcean {self.base_url or 'stopped'}>"

    # --- lifecycle -------------------------------------------------------------------
    def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        fake = self

        class Handler(_Handler):
            api = fake

        self._server = ApiHTTPServer((host, port), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="fake-do", daemon=True)
        self._thread.start()
        bound_host, bound_port = self._server.server_address[:2]
        self.root_url = f"http://{bound_host}:{bound_port}"
        self.base_url = f"{self.root_url}/v2/"
        for droplet, action_id in self.store.pending_creates():  # resumed from a state file
            self._spawn_create(droplet, action_id, droplet.get("_public_keys") or [])
        self._publish_dns()  # a restarted API serves what its state file holds
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> "FakeDigitalOcean":
        if self._server is None:
            self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- test-facing -----------------------------------------------------------------
    def inject(self, method: str, path_regex: str, status: int | None, times: int = 1,
               delay: float = 0.0, retry_after: float | None = None,
               process: bool = False) -> Fault:
        """Make the next `times` requests matching METHOD + regex (searched in the path,
        e.g. "/v2/droplets") fail with `status` (None: only delayed). times=-1: forever.
        process=True handles the request first and then fails (a lost answer)."""
        return self.faults.add(Fault(method.upper(), path_regex, status, times, delay,
                                     retry_after, process))

    def add_response_hook(self, hook: ResponseHook) -> None:
        """Let a test rewrite each JSON answer before it is sent (e.g. corrupt one field to
        prove that a contract check notices). Hooks run in the order added."""
        self._response_hooks.append(hook)

    @property
    def requests(self) -> list[RequestRecord]:
        with self._log_lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._log_lock:
            self._requests.clear()

    @property
    def state(self) -> dict:
        """A deep copy of every resource, for assertions."""
        return self.store.snapshot()

    def wait_droplets_settled(self, timeout: float = 10.0) -> None:
        """Block until no droplet is 'new' (used by tests after deletes/creates)."""
        deadline = time.monotonic() + timeout
        while any(d["status"] == "new" for d in self.state["droplets"].values()):
            if time.monotonic() > deadline:
                raise TimeoutError("droplets still building")
            time.sleep(0.02)

    def _publish_dns(self) -> None:
        """Hand the zones to the DNS server. Its failure is logged, not answered: the real API
        does not fail a record write because a name server is slow, and the DNS check will tell."""
        if self.dns is None:
            return
        try:
            self.dns.publish(self.store.zones())
        except Exception as exc:  # noqa: BLE001 - any publisher failure is reported the same way
            print(f"fake DO: publishing DNS zones failed: {exc}", file=sys.stderr, flush=True)

    # --- state file --------------------------------------------------------------------
    def _load_state(self) -> dict | None:
        if self.state_file and os.path.exists(self.state_file):
            with open(self.state_file, encoding="utf-8") as fh:
                return json.load(fh)
        return None

    def _save_state(self) -> None:
        if not self.state_file:
            return
        with self._save_lock:
            directory = os.path.dirname(os.path.abspath(self.state_file))
            fd, tmp = tempfile.mkstemp(dir=directory, prefix=".fake_do.")
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(self.store.snapshot(), fh, indent=1)
            os.replace(tmp, self.state_file)  # atomic: a crash never leaves half a file

    # --- backend orchestration -------------------------------------------------------
    def _spawn_create(self, droplet: dict, action_id: int, public_keys: list[str]) -> None:
        def build() -> None:
            try:
                private = [n["ip_address"] for n in droplet["networks"]["v4"] if n["type"] == "private"]
                ip = self.backend.create(droplet["id"], droplet["name"], public_keys,
                                         droplet.get("_user_data"), list(droplet["tags"]),
                                         private_ip=private[0] if private else None)
                alive = self.store.finish_create(droplet["id"], action_id, ip)
            except Exception as exc:  # the droplet stays "new"; the error is inspectable
                self.store.finish_create(droplet["id"], action_id, None,
                                         error=f"{type(exc).__name__}: {exc}")
                self._save_state()
                return
            if alive:  # its own firewall, and those of droplets admitting one of its tags
                self._apply_firewalls({droplet["id"]} | self.store.referencing(droplet["tags"]))
            else:  # deleted while building: drop the machine we just made
                self.backend.delete(droplet["id"])
            self._save_state()

        threading.Thread(target=build, name=f"fake-do-create-{droplet['id']}",
                         daemon=True).start()

    def _apply_firewalls(self, droplet_ids: set[int]) -> None:
        """Hand each active droplet's inbound rules to its machine, with the droplets carrying
        each tag the rules admit (the machine resolves them to addresses)."""
        for droplet_id in sorted(droplet_ids):
            rules = self.store.effective_inbound(droplet_id)
            if rules is not None:
                tags = {t for r in rules for t in r["sources"].get("tags") or []}
                self.backend.apply_firewall(droplet_id, rules, tagged=self.store.tagged(tags))

    # --- routing -----------------------------------------------------------------------
    def _build_routes(self) -> list[Route]:
        s = self.store
        r: list[tuple[str, str, Callable[..., Any]]] = [
            ("GET", r"/account", lambda q, b: (200, s.account())),
            ("GET", r"/account/keys", lambda q, b: self._page(q, "ssh_keys", s.list_keys())),
            ("POST", r"/account/keys", lambda q, b: self._write(201, {"ssh_key": s.create_key(b)})),
            ("GET", r"/account/keys/([^/]+)", lambda q, b, k: (200, {"ssh_key": dict(s.key(k))})),
            ("PUT", r"/account/keys/([^/]+)",
             lambda q, b, k: self._write(200, {"ssh_key": s.update_key(k, b)})),
            ("DELETE", r"/account/keys/([^/]+)", lambda q, b, k: self._write(204, s.delete_key(k))),
            ("GET", r"/droplets", self._list_droplets),
            ("POST", r"/droplets", self._create_droplet),
            ("GET", r"/droplets/(\d+)",
             lambda q, b, i: (200, {"droplet": s.public_droplet(s.droplet(int(i)))})),
            ("DELETE", r"/droplets/(\d+)", self._delete_droplet),
            ("GET", r"/droplets/(\d+)/actions",
             lambda q, b, i: self._page(q, "actions", s.droplet_actions(int(i)))),
            ("GET", r"/droplets/(\d+)/actions/(\d+)", lambda q, b, i, a: (200, {"action": s.action(int(a))})),
            ("GET", r"/actions/(\d+)", lambda q, b, a: (200, {"action": s.action(int(a))})),
            ("GET", r"/firewalls", lambda q, b: self._page(q, "firewalls", s.list_firewalls())),
            ("POST", r"/firewalls", self._create_firewall),
            ("GET", r"/firewalls/([\w-]+)", lambda q, b, f: (200, {"firewall": dict(s.firewall(f))})),
            ("PUT", r"/firewalls/([\w-]+)", self._update_firewall),
            ("DELETE", r"/firewalls/([\w-]+)", self._delete_firewall),
            ("POST", r"/firewalls/([\w-]+)/droplets", lambda q, b, f: self._fw_droplets(f, b, True)),
            ("DELETE", r"/firewalls/([\w-]+)/droplets", lambda q, b, f: self._fw_droplets(f, b, False)),
            ("POST", r"/firewalls/([\w-]+)/tags", lambda q, b, f: self._fw_tags(f, b, True)),
            ("DELETE", r"/firewalls/([\w-]+)/tags", lambda q, b, f: self._fw_tags(f, b, False)),
            ("GET", r"/domains", lambda q, b: self._page(q, "domains", s.list_domains())),
            ("POST", r"/domains", lambda q, b: self._write(201, {"domain": s.create_domain(b)})),
            ("GET", r"/domains/([^/]+)", lambda q, b, d: (200, {"domain": s.domain(d)})),
            ("DELETE", r"/domains/([^/]+)", lambda q, b, d: self._write(204, s.delete_domain(d))),
            ("GET", r"/domains/([^/]+)/records",
             lambda q, b, d: self._page(q, "domain_records",
                                        s.records(d, _one(q, "name"), _one(q, "type")))),
            ("POST", r"/domains/([^/]+)/records",
             lambda q, b, d: self._write(201, {"domain_record": s.create_record(d, b)})),
            ("GET", r"/domains/([^/]+)/records/(\d+)",
             lambda q, b, d, i: (200, {"domain_record": dict(s.record(d, int(i)))})),
            ("PUT", r"/domains/([^/]+)/records/(\d+)",
             lambda q, b, d, i: self._write(200, {"domain_record": s.update_record(d, int(i), b)})),
            ("DELETE", r"/domains/([^/]+)/records/(\d+)",
             lambda q, b, d, i: self._write(204, s.delete_record(d, int(i)))),
            ("GET", r"/vpcs", lambda q, b: self._page(q, "vpcs", s.list_vpcs())),
            ("GET", r"/vpcs/([\w-]+)", lambda q, b, v: (200, {"vpc": s.vpc(v)})),
            ("GET", r"/tags", lambda q, b: self._page(q, "tags", s.list_tags())),
            ("POST", r"/tags", self._create_tag),
            ("GET", r"/tags/([^/]+)", lambda q, b, t: (200, {"tag": s.tag(t)})),
            ("DELETE", r"/tags/([^/]+)", self._delete_tag),
            ("POST", r"/tags/([^/]+)/resources", lambda q, b, t: self._tag_resources(t, b, True)),
            ("DELETE", r"/tags/([^/]+)/resources", lambda q, b, t: self._tag_resources(t, b, False)),
            *self.registry.routes(self._write),
            *self.storage.routes(self._write, self._page),
        ]
        return [(m, re.compile(f"^{p}$"), fn) for m, p, fn in r]

    def dispatch(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        for route_method, pattern, fn in self._routes:
            match = pattern.match(path)
            if match and route_method == method:
                return fn(query, body, *match.groups())
        if any(p.match(path) for _, p, _ in self._routes):
            raise ApiError(405, "method_not_allowed", f"{method} is not allowed on {path}")
        raise not_found()

    def _write(self, status: int, payload: Any) -> tuple[int, Any]:
        self._save_state()
        if getattr(self._tls, "path", "").startswith("domains"):
            self._publish_dns()
        return status, (None if status == 204 else payload)

    def _page(self, query: dict, key: str, items: list) -> tuple[int, dict]:
        try:
            page = max(1, int(_one(query, "page") or 1))
            per_page = max(1, min(self.max_per_page, int(_one(query, "per_page") or 20)))
        except ValueError:
            raise unprocessable("page and per_page must be integers") from None
        last = max(1, math.ceil(len(items) / per_page))
        body: dict[str, Any] = {key: items[(page - 1) * per_page: page * per_page],
                                "links": {}, "meta": {"total": len(items)}}
        pages: dict[str, str] = {}
        extra = {k: v[-1] for k, v in query.items() if k not in ("page", "per_page")}

        def link(n: int) -> str:
            return (f"{self.base_url}{self._tls.path}?"
                    + urlencode({**extra, "page": n, "per_page": per_page}))
        if page > 1:
            pages.update(first=link(1), prev=link(page - 1))
        if page < last:
            pages.update(next=link(page + 1), last=link(last))
        if pages:
            body["links"]["pages"] = pages
        return 200, body

    def _list_droplets(self, query: dict, body: Any) -> tuple[int, dict]:
        return self._page(query, "droplets", self.store.list_droplets(_one(query, "tag_name")))

    def _create_droplet(self, query: dict, body: Any) -> tuple[int, dict]:
        if "names" in (body or {}):
            raise unprocessable("creating several droplets at once is not supported by the fake")
        droplet, action, keys = self.store.create_droplet(body or {})
        self._spawn_create(droplet, action["id"], keys)
        self._save_state()
        shown = self.store.public_droplet(droplet)
        return 202, {"droplet": shown, "links": {"actions": [
            {"id": action["id"], "rel": "create",
             "href": f"{self.base_url}actions/{action['id']}"}]}}

    def _delete_droplet(self, query: dict, body: Any, droplet_id: str) -> tuple[int, None]:
        tags = self.store.delete_droplet(int(droplet_id))
        self._apply_firewalls(self.store.referencing(tags))  # its addresses are let in no more
        threading.Thread(target=self.backend.delete, args=(int(droplet_id),), daemon=True,
                         name=f"fake-do-delete-{droplet_id}").start()
        return self._write(204, None)

    def _create_firewall(self, query: dict, body: Any) -> tuple[int, dict]:
        fw = self.store.create_firewall(body or {})
        self._apply_firewalls(self.store.covered_droplets(fw))
        return self._write(202, {"firewall": fw})

    def _update_firewall(self, query: dict, body: Any, fw_id: str) -> tuple[int, dict]:
        fw, affected = self.store.update_firewall(fw_id, body or {})
        self._apply_firewalls(affected)
        return self._write(200, {"firewall": fw})

    def _delete_firewall(self, query: dict, body: Any, fw_id: str) -> tuple[int, None]:
        self._apply_firewalls(self.store.delete_firewall(fw_id))
        return self._write(204, None)

    def _fw_droplets(self, fw_id: str, body: Any, add: bool) -> tuple[int, None]:
        affected = self.store.firewall_droplets(fw_id, (body or {}).get("droplet_ids"), add)
        self._apply_firewalls(affected)
        return self._write(204, None)

    def _fw_tags(self, fw_id: str, body: Any, add: bool) -> tuple[int, None]:
        self._apply_firewalls(self.store.firewall_tags(fw_id, (body or {}).get("tags"), add))
        return self._write(204, None)

    def _create_tag(self, query: dict, body: Any) -> tuple[int, dict]:
        name = (body or {}).get("name")
        self.store.ensure_tags([name])
        return self._write(201, {"tag": self.store.tag(name)})

    def _tag_resources(self, tag: str, body: Any, add: bool) -> tuple[int, None]:
        touched = self.store.tag_resources(tag, (body or {}).get("resources"), add)
        # tag-attached firewalls follow the tag, and rules admitting the tag its droplets
        self._apply_firewalls(set(touched) | self.store.referencing({tag}))
        return self._write(204, None)

    def _delete_tag(self, query: dict, body: Any, tag: str) -> tuple[int, None]:
        carried = set(self.store.tagged({tag})[tag])
        self.store.delete_tag(tag)
        self._apply_firewalls(carried | self.store.referencing({tag}))
        return self._write(204, None)

    # --- request entry (called by the handler) -------------------------------------------
    def handle(self, method: str, raw_path: str, headers: Any, raw_body: bytes
               ) -> tuple[int, dict[str, str], bytes]:
        parts = urlsplit(raw_path)
        path = "/" + parts.path.strip("/")
        query = parse_qs(parts.query)
        if path == "/lab/my-ip" and method == "GET":
            text_headers = {"Content-Type": "text/plain"}
            text = (self.operator_ip + "\n").encode()
            self._log(RequestRecord(method, path, query, None, 200, True, masked_headers(headers),
                                    raw_body, text_headers, text))
            return 200, text_headers, text
        body: Any = None
        if raw_body:
            try:
                body = json.loads(raw_body)
            except ValueError:
                body = None
        authorized = self._authorized(headers.get("Authorization", ""))
        fault = self.faults.take(method, path)
        if fault and fault.delay and not fault.process:
            time.sleep(fault.delay)
        extra: dict[str, str] = {}
        try:
            if not authorized:
                raise ApiError(401, "Unauthorized", "Unable to authenticate you.")
            answer = None
            if fault and fault.process:
                answer = self._route(method, path, query, body)   # the write happens...
                time.sleep(fault.delay)                           # ...its answer comes late, or not at all
            if fault and fault.status:
                error_id, message = ERROR_IDS.get(fault.status, ("error", "Injected failure."))
                if fault.retry_after is not None:
                    extra["Retry-After"] = str(fault.retry_after)
                if fault.status == 429:  # the window reopens when the fault says so
                    extra["ratelimit-remaining"] = "0"
                    extra["ratelimit-reset"] = str(math.ceil(time.time() + (
                        fault.retry_after if fault.retry_after is not None else 1)))
                raise ApiError(fault.status, error_id, message)
            status, payload = answer or self._route(method, path, query, body)
        except ApiError as err:
            status, payload = err.status, {"id": err.error_id, "message": err.message}
        except Exception as exc:  # a bug in the fake must still look like the API
            status, payload = 500, {"id": "server_error", "message": f"fake: {type(exc).__name__}"}
        for hook in self._response_hooks:
            payload = hook(method, path, status, payload)
        headers_out = {"Content-Type": "application/json", **self._ratelimit_headers(), **extra}
        data = b"" if payload is None else json.dumps(payload).encode()
        self._log(RequestRecord(method, path, query, body, status, authorized,
                                masked_headers(headers), raw_body, headers_out, data))
        return status, headers_out, data

    def _route(self, method: str, path: str, query: dict, body: Any) -> tuple[int, Any]:
        """Dispatch one /v2/ request; an API error becomes its answer."""
        try:
            if not path.startswith("/v2/") and path != "/v2":
                raise not_found()
            self._tls.path = path[len("/v2/"):]
            return self.dispatch(method, "/" + self._tls.path, query, body)
        except ApiError as err:
            return err.status, {"id": err.error_id, "message": err.message}

    def _authorized(self, header: str) -> bool:
        scheme, _, given = header.partition(" ")
        return scheme == "Bearer" and hmac.compare_digest(given.encode(), self._token.encode())

    def _ratelimit_headers(self) -> dict[str, str]:
        with self._log_lock:
            self._remaining = self._remaining - 1 if self._remaining > 1 else RATE_LIMIT
            remaining = self._remaining
        return {"ratelimit-limit": str(RATE_LIMIT), "ratelimit-remaining": str(remaining),
                "ratelimit-reset": str(int(time.time()) + 60)}

    def _log(self, record: RequestRecord) -> None:
        with self._log_lock:
            self._requests.append(record)


def _one(query: dict, key: str) -> str | None:
    values = query.get(key)
    return values[-1] if values else None


class _Handler(BaseHTTPRequestHandler):
    api: FakeDigitalOcean
    protocol_version = "HTTP/1.1"  # keep-alive, like the real API behind its CDN

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        status, headers, data = self.api.handle(self.command, self.path, self.headers, raw)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if data:
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _serve

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read .requests
        return
