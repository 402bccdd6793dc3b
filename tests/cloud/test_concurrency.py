"""Two operators provisioning the same droplet at the same time, through the real
python-digitalocean against the stand-in API: one droplet survives, the loser says who won and
changes nothing else, and the SSH allowlist keeps every operator who is deploying."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable, Iterator

import pytest

from core.errors import EXIT_LOCKED
from deploy import cloud
from deploy.cloud import CloudError, CloudSpec
from tests.cloud.conftest import with_
from tests.fake_do.helpers import ssh_allowed_from

ALICE, BOB = "198.51.100.7", "192.0.2.44"
EXTRA = "203.0.113.0/24"


@pytest.fixture
def operator_ips() -> Iterator[str]:
    """What OPERATOR_IP_URL answers, per operator: <root>/alice and <root>/bob."""
    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = {"/alice": ALICE, "/bob": BOB}[self.path].encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def alice(api_spec, operator_ips) -> CloudSpec:
    return with_(api_spec, operator="alice@laptop", operator_ip_url=operator_ips + "/alice", domain=None)


@pytest.fixture
def bob(api_spec, operator_ips) -> CloudSpec:
    return with_(api_spec, operator="bob@desk", operator_ip_url=operator_ips + "/bob", domain=None)


HOLD_S = 10.0   # how long together() holds an answer for the other party


def patient(spec: CloudSpec) -> CloudSpec:
    """A run that waits out together()'s hold: with the usual 2 s request timeout a loaded
    machine turns the held answer into a lost one, the first run retries and finds its droplet
    before the second has asked, and the race never happens (seen in CI)."""
    return with_(spec, request_timeout=HOLD_S + 5)


def together(fake, method: str, path_regex: str, parties: int = 2) -> None:
    """Hold the first ``parties`` answers to METHOD path until all of them were handled: each
    run has done that request before any run goes on (a deterministic race, for runs made
    ``patient``)."""
    import re
    barrier = threading.Barrier(parties, timeout=HOLD_S)
    seen = iter(range(parties))
    lock = threading.Lock()

    def hold(m: str, path: str, status: int, payload: Any) -> Any:
        if m == method and re.search(path_regex, path):
            with lock:
                mine = next(seen, None)
            if mine is not None:
                barrier.wait()
        return payload
    fake.add_response_hook(hold)


def race(*jobs: Callable[[], Any]) -> list[Any]:
    """Run the jobs in threads at once; each result is its return value or the error raised."""
    def guarded(job: Callable[[], Any]) -> Any:
        try:
            return job()
        except CloudError as exc:
            return exc
    with ThreadPoolExecutor(len(jobs)) as pool:
        return list(pool.map(guarded, jobs))


def firewall_writes(fake) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in fake.requests if r.is_write and r.path.startswith("/v2/firewalls")]


def test_two_first_deploys_at_once_leave_one_droplet_and_the_loser_names_the_winner(fake, backend, alice, bob):
    together(fake, "GET", r"^/v2/account/keys/")   # both looked for the key (and the droplet): none yet
    results = race(lambda: cloud.provision(patient(alice)), lambda: cloud.provision(patient(bob)))
    [won] = [r for r in results if isinstance(r, cloud.ProvisionResult)]
    [lost] = [r for r in results if isinstance(r, CloudError)]
    winner, loser = ("alice_laptop", "bob_desk") if results[0] is won else ("bob_desk", "alice_laptop")
    assert [int(i) for i in fake.state["droplets"]] == [won.droplet.id]
    assert len(fake.state["ssh_keys"]) == 1
    assert lost.exit_code == EXIT_LOCKED
    assert f"another deploy created droplet stack-1 first (id {won.droplet.id}" in lost.message
    assert f"by {winner}" in lost.message and "firewall" in lost.message and "inv deploy" in lost.hint
    assert loser not in str(fake.state["firewalls"])
    # The loser never touched the firewall: the winner created it, with the winner alone allowed.
    assert firewall_writes(fake) == [("POST", "/v2/firewalls")]
    winner_ip = ALICE if winner == "alice_laptop" else BOB
    assert ssh_allowed_from(backend.rules_for(won.droplet.id)) == [f"{winner_ip}/32", EXTRA]


def test_two_deploys_of_an_existing_droplet_at_once_both_stay_allowed(fake, backend, alice, bob):
    first = cloud.provision(alice)
    together(fake, "GET", r"^/v2/firewalls$")      # both read the firewall before either writes it
    results = race(lambda: cloud.provision(patient(alice)), lambda: cloud.provision(patient(bob)))
    assert all(isinstance(r, cloud.ProvisionResult) for r in results), results
    assert len(fake.state["droplets"]) == 1 and len(fake.state["firewalls"]) == 1
    assert sorted(ssh_allowed_from(backend.rules_for(first.droplet.id))) == sorted(
        [f"{ALICE}/32", f"{BOB}/32", EXTRA])


def test_an_operator_who_arrives_while_the_firewall_is_written_is_kept(fake, backend, alice, bob):
    """The firewall is written from the operators announced on the droplet; one who announces
    in between is caught by the read after the write, and the firewall is written again."""
    first = cloud.provision(alice)
    bob_tag = cloud.presence_tag(BOB, cloud.now_s(), "bob@desk")
    sneaked = []

    def bob_announces(method: str, path: str, status: int, payload: Any) -> Any:
        if (method, path) == ("GET", "/v2/firewalls") and not sneaked:
            sneaked.append(True)
            fake.store.ensure_tags([bob_tag])
            fake.store.tag_resources(bob_tag, [{"resource_type": "droplet", "resource_id": first.droplet.id}], True)
        return payload
    fake.add_response_hook(bob_announces)
    fake.operator_ip = "192.0.2.99"                 # alice moved: her firewall must change this time
    again = cloud.provision(with_(alice, operator_ip_url=fake.root_url + "/lab/my-ip"))
    assert again.firewall.status == "updated"
    assert sorted(ssh_allowed_from(backend.rules_for(first.droplet.id))) == sorted(
        ["192.0.2.99/32", f"{BOB}/32", EXTRA])


def test_an_operator_older_than_the_allowlist_ttl_is_dropped(fake, backend, alice):
    first = cloud.provision(alice)
    old = cloud.presence_tag(BOB, cloud.now_s() - 4 * 3600, "bob@desk")
    fake.store.ensure_tags([old])
    fake.store.tag_resources(old, [{"resource_type": "droplet", "resource_id": first.droplet.id}], True)
    cloud.provision(with_(alice, allowlist_ttl=3 * 3600))
    assert ssh_allowed_from(backend.rules_for(first.droplet.id)) == [f"{ALICE}/32", EXTRA]
    assert old not in fake.state["tags"]            # removed: nobody reads it again
