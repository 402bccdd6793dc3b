"""Lab service containers are kept across `lab.up` only when they are the ones this lab would
start: a container of the same name left by another checkout (or by a killed run whose
containers came back with the Docker engine) is replaced, never trusted."""
from __future__ import annotations

import dataclasses

from lab.docker import inspect
from lab.droplets.network import ensure_network
from lab.services import pebble
from lab.services.containers import container_name


def _started_at(cfg) -> str:
    return (inspect("container", container_name(cfg, pebble.ROLE)) or {}).get("State", {}).get("StartedAt", "")


def test_a_pebble_left_by_another_checkout_is_replaced_and_a_matching_one_kept(lab_cfg, tmp_path):
    ensure_network(lab_cfg)
    pebble.ensure(lab_cfg, log=lambda m: None)
    first = _started_at(lab_cfg)
    pebble.ensure(lab_cfg, log=lambda m: None)
    assert _started_at(lab_cfg) == first, "the same lab's running Pebble is kept (its roots stay)"

    # Same lab name, another state folder: another listener CA, so the running Pebble (serving
    # the first CA's certificate) cannot be what this checkout trusts.
    other = dataclasses.replace(lab_cfg, state_dir=tmp_path / "other-checkout" / ".lab")
    assert pebble.ensure(other, log=lambda m: None) == pebble.directory_url(other)
    assert _started_at(other) != first
    assert pebble.issuing_roots(other).startswith("-----BEGIN CERTIFICATE-----")
