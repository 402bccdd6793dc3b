"""The Swarm stack file: the normalized compose model -> what ``docker stack deploy`` accepts.

Pure: ``swarm_stack(config, images, nodes=N)`` takes the JSON that
``docker compose -f stack/compose.yml config --format json`` prints on the droplet (interpolated,
every ``$`` of a value escaped as ``$$``, which the stack loader turns back into ``$``) and the
release's registry refs, and returns the stack file as a dict; ``dump()`` writes it as YAML.
The file holds the interpolated secrets, exactly like the config it comes from: write it 0600.

Docker 20.10 (the droplets' CLI) loads only ``version: 3.x`` files and converts a subset of
compose; what it would ignore is either translated or refused here, never dropped silently when
it matters:

- ``mem_limit``/``pids_limit`` (rejected by the 3.x schema) -> ``deploy.resources.limits``
  memory/pids (both in the 3.9 schema, enforced by Swarm since API 1.41).
- ``tmpfs`` and ``shm_size`` (ignored by Swarm) -> ``type: tmpfs`` mounts (``/dev/shm`` for
  shm). Swarm's tmpfs mounts take a size but no mode: they get the kernel's 1777, so only
  mode 1777 (or none) is accepted. Like compose's, they are noexec,nosuid,nodev.
- ``restart`` -> ``deploy.restart_policy``; ``build``, ``container_name``, ``depends_on``,
  ``pull_policy``, ``profiles``, ``expose`` are dropped (Swarm has no start order: services
  wait for their dependencies by failing their healthcheck and being restarted).
- ``security_opt``: Swarm (20.10) cannot set it. ``no-new-privileges`` is dropped, so every
  node's dockerd must run with ``--no-new-privileges`` (daemon.json) to keep it; any other
  option is refused. ``cap_drop``, ``read_only``, ``user``, ``sysctls`` and logging carry over.

Placement (``RULES``): the web tier and the workers run one task per node (capacity grows
with the cluster, one node can die); PostgreSQL and Redis stay on the node labelled
``<data_node_label>=true`` with their local volumes (that node lost = data unavailable until it
returns: on DigitalOcean use managed databases for real redundancy); beat and Flower run once.

The edge: Traefik on one manager, the node labelled ``<edge_node_label>=true``, host-mode
80/443 (not a DigitalOcean Load Balancer). Its state is on that node (the ``traefik-acme``
volume, the release's bind-mounted config) and DNS names its address, so it must not wander
between managers. Service discovery is Swarm's DNS: with ``endpoint_mode: dnsrr`` (no IPVS
here, so no VIP) ``api`` resolves to every running task, and Swarm lists a task only once its
healthcheck passes, so the file provider's ``http://api:8000`` keeps working and Traefik needs
no Docker socket. Host ports allow one Traefik task per node, so its updates are stop-first
(a brief gap); image refs of unchanged services stay the same, so it restarts only when it
changed.

Rolling updates: replicated services go start-first (new task healthy beside the old, then the
old stops), one at a time, rolled back automatically when a new task fails within ``monitor``.
Everything that must never run twice (beat, PostgreSQL and Redis on their volume, Traefik on
its ports) goes stop-first.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from typing import Any, Mapping

import yaml

from remote.swarm import DATA_LABEL, EDGE_LABEL

VERSION = "3.9"  # Docker 20.10's stack loader wants a 3.x file; 3.9 has limits.pids
START_FIRST, STOP_FIRST = "start-first", "stop-first"


@dataclass(frozen=True)
class Rule:
    replicated: bool            # one task per node (replicas = nodes), else exactly one
    order: str                  # update order
    pin: str | None = None      # "data" or "edge": the node label that holds its state


RULES: dict[str, Rule] = {
    # Stateless, behind Traefik or reading the queue: one per node.
    "frontend": Rule(True, START_FIRST),
    "api": Rule(True, START_FIRST),
    # Its entrypoint migrates; the deployer runs x-release-migrate first, so replicas find
    # the schema current (and one that loses a first-deploy race exits and is restarted).
    "django": Rule(True, START_FIRST),
    "worker": Rule(True, START_FIRST),
    # A dashboard with in-memory event history: two behind round-robin DNS would show two
    # different histories. Briefly two during an update is harmless.
    "flower": Rule(False, START_FIRST),
    # Two beats would send every periodic task twice.
    "beat": Rule(False, STOP_FIRST),
    # One server on one local volume: two at once would share a data directory.
    "postgres": Rule(False, STOP_FIRST, pin="data"),
    "redis": Rule(False, STOP_FIRST, pin="data"),
    "traefik": Rule(False, STOP_FIRST, pin="edge"),
}

# Service keys the 3.9 schema accepts and Swarm honours: copied as they are.
KEEP = {"cap_add", "cap_drop", "command", "configs", "dns", "dns_search", "entrypoint",
        "environment", "extra_hosts", "healthcheck", "hostname", "image", "init", "labels",
        "logging", "read_only", "secrets", "stop_grace_period", "stop_signal", "stdin_open",
        "sysctls", "tty", "ulimits", "user", "working_dir"}
# Compose-only keys with no meaning in a stack (restart becomes deploy.restart_policy).
DROP = {"build", "container_name", "depends_on", "expose", "pull_policy", "profiles", "restart"}
# Compose's resource keys -> deploy.resources.<section>.<key> (the 3.x schema rejects them).
RESOURCES = {"mem_limit": ("limits", "memory"), "pids_limit": ("limits", "pids"),
             "cpus": ("limits", "cpus"), "mem_reservation": ("reservations", "memory")}
HANDLED = {"deploy", "networks", "ports", "security_opt", "shm_size", "tmpfs", "volumes"}

RESTART_POLICY = {"condition": "any", "delay": "5s"}
NO_NEW_PRIVILEGES = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
_SIZE = re.compile(r"(\d+)([kmg]?)b?", re.IGNORECASE)


def swarm_stack(config: Mapping[str, Any], images: Mapping[str, str], *, nodes: int,
                data_node_label: str = DATA_LABEL, edge_node_label: str = EDGE_LABEL) -> dict[str, Any]:
    """The stack file for ``config`` (compose's normalized JSON model) on ``nodes`` nodes.

    ``images`` maps service -> registry image ref: every built service needs one; a service
    without build keeps its own image unless ``images`` names it (e.g. mirrored to the registry).
    Raises ValueError, naming the service and the fix, for whatever the stack cannot carry."""
    if nodes < 1:
        raise ValueError(f"a Swarm needs at least one node, got nodes={nodes}")
    services: Mapping[str, Any] = config.get("services") or {}
    _check_images(services, images)
    pins = {"data": data_node_label, "edge": edge_node_label}
    stack: dict[str, Any] = {"version": VERSION, "services": {
        name: _service(name, definition or {}, images.get(name), nodes, pins)
        for name, definition in services.items()}}
    networks = {name: _network(net or {}) for name, net in (config.get("networks") or {}).items()}
    volumes = {name: _volume(vol or {}) for name, vol in (config.get("volumes") or {}).items()}
    for key, value in (("networks", networks), ("volumes", volumes),
                       ("secrets", config.get("secrets")), ("configs", config.get("configs"))):
        if value:
            stack[key] = copy.deepcopy(value)
    # The x- anchors are merged into the services already (and repeat interpolated secrets);
    # x-release-migrate is the deployer's contract for the one-off migration job, kept.
    if "x-release-migrate" in config:
        stack["x-release-migrate"] = copy.deepcopy(config["x-release-migrate"])
    return stack


def dump(stack: Mapping[str, Any]) -> str:
    """The stack file as YAML (keys in the order built, no line folding)."""
    return yaml.safe_dump(dict(stack), sort_keys=False, default_flow_style=False, width=1 << 16)


def _check_images(services: Mapping[str, Any], images: Mapping[str, str]) -> None:
    built = {n for n, d in services.items() if (d or {}).get("build") is not None}
    missing = sorted(n for n in built if not images.get(n))
    if missing:
        raise ValueError(f"no registry image ref for built service(s) {', '.join(missing)}: every node "
                         "pulls its image, so each built service needs one (images maps service -> ref)")
    unknown = sorted(set(images) - set(services))
    if unknown:
        raise ValueError(f"images names service(s) the stack does not have: {', '.join(unknown)}")


def _service(name: str, definition: Mapping[str, Any], image: str | None, nodes: int,
             pins: Mapping[str, str]) -> dict[str, Any]:
    rule = RULES.get(name)
    if rule is None:
        raise ValueError(f"service {name!r} has no Swarm placement rule: add it to RULES in "
                         "remote/stackfile.py (replicated or single, start-first or stop-first, pinned?)")
    unknown = sorted(set(definition) - KEEP - DROP - HANDLED - set(RESOURCES))
    unknown = [k for k in unknown if not k.startswith("x-")]
    if unknown:
        raise ValueError(f"service {name!r}: {', '.join(unknown)} has no Swarm equivalent in a "
                         f"{VERSION} stack file")
    out: dict[str, Any] = {k: copy.deepcopy(v) for k, v in definition.items()
                           if (k in KEEP or k.startswith("x-")) and v is not None}
    if image:
        out["image"] = image  # a service without build keeps its own unless images names it
    _check_security_opt(name, definition.get("security_opt") or [])
    if definition.get("networks"):
        out["networks"] = _service_networks(name, definition["networks"])
    if definition.get("ports"):
        out["ports"] = [_port(name, p) for p in definition["ports"]]
    mounts = [_mount(name, v) for v in definition.get("volumes") or []]
    mounts += [_tmpfs(name, spec) for spec in _as_list(definition.get("tmpfs"))]
    if definition.get("shm_size") is not None:
        mounts.append({"type": "tmpfs", "target": "/dev/shm",
                       "tmpfs": {"size": _bytes(name, definition["shm_size"])}})
    if mounts:
        out["volumes"] = mounts
    out["deploy"] = _deploy(name, definition, rule, nodes, pins)
    return out


def _deploy(name: str, definition: Mapping[str, Any], rule: Rule, nodes: int,
            pins: Mapping[str, str]) -> dict[str, Any]:
    given: Mapping[str, Any] = definition.get("deploy") or {}
    declared = (given.get("update_config") or {}).get("order")
    if declared and declared != rule.order:
        raise ValueError(f"service {name!r}: compose declares update order {declared}, but on Swarm "
                         f"it must be {rule.order} (see RULES in remote/stackfile.py)")
    deploy: dict[str, Any] = {"mode": "replicated", "replicas": nodes if rule.replicated else 1,
                              "endpoint_mode": "dnsrr"}
    if given.get("labels"):
        deploy["labels"] = copy.deepcopy(given["labels"])
    constraints = list((given.get("placement") or {}).get("constraints") or [])
    if rule.pin == "edge":
        constraints += ["node.role == manager", f"node.labels.{pins['edge']} == true"]
    elif rule.pin == "data":
        constraints.append(f"node.labels.{pins['data']} == true")
    if constraints:
        deploy["placement"] = {"constraints": list(dict.fromkeys(constraints))}
    resources = _resources(definition, given.get("resources") or {})
    if resources:
        deploy["resources"] = resources
    deploy["restart_policy"] = dict(RESTART_POLICY)
    # The healthcheck gates each task (Swarm routes to a task, and starts the next one, only once
    # it is healthy), so the next replica starts at once (no delay). monitor: a new task that
    # exits within 10 s of being healthy fails the update and Swarm rolls back. Swarm holds the
    # update open for the monitor after its last task, so every rollout waits it out once: 30 s
    # cost each swarm release 20 s more and caught nothing the healthcheck had not.
    deploy["update_config"] = {"order": rule.order, "failure_action": "rollback", "monitor": "10s",
                               "parallelism": 1, "delay": "0s"}
    deploy["rollback_config"] = {"order": rule.order, "parallelism": 1}
    return deploy


def _resources(definition: Mapping[str, Any], given: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, (section, field) in RESOURCES.items():
        value = definition.get(key)
        if value is None:
            continue
        # memory and cpus are strings in the 3.9 schema (compose prints bytes), pids an integer
        out.setdefault(section, {})[field] = int(value) if field == "pids" else str(value)
    for section in ("limits", "reservations"):  # an explicit deploy.resources wins
        for field, value in (given.get(section) or {}).items():
            if value is not None:
                out.setdefault(section, {})[field] = copy.deepcopy(value)
    return out


def _check_security_opt(name: str, options: list[str]) -> None:
    other = [o for o in options if o.replace(" ", "") not in NO_NEW_PRIVILEGES]
    if other:
        raise ValueError(f"service {name!r}: security_opt {', '.join(other)} cannot be set on Swarm "
                         "(Docker 20.10); only no-new-privileges is kept, by each node's dockerd")


def _service_networks(name: str, networks: Any) -> Any:
    if isinstance(networks, list):
        return list(networks)
    if all(v is None for v in networks.values()):
        return sorted(networks)
    out = {}
    for net, opts in networks.items():
        opts = {k: v for k, v in (opts or {}).items() if v not in (None, [], {})}
        extra = set(opts) - {"aliases"}
        if extra:
            raise ValueError(f"service {name!r}: network {net!r} option(s) {', '.join(sorted(extra))} "
                             "cannot be set on Swarm (only aliases)")
        out[net] = opts or None
    return out


def _port(name: str, port: Any) -> dict[str, Any]:
    if not isinstance(port, Mapping):
        raise ValueError(f"service {name!r}: port {port!r} is not in compose's long form; "
                         "feed `docker compose config --format json` output")
    if port.get("host_ip"):
        raise ValueError(f"service {name!r}: a published port cannot bind one host address "
                         f"({port['host_ip']}) on Swarm")
    try:
        out = {"target": int(port["target"]), "published": int(port["published"])}
    except (KeyError, TypeError, ValueError):
        raise ValueError(f"service {name!r}: port {port!r} needs one target and one published "
                         "port (no ranges) on Swarm") from None
    # Host mode: no routing mesh without IPVS, and the client address reaches Traefik.
    out.update(protocol=port.get("protocol") or "tcp", mode="host")
    return out


def _mount(name: str, volume: Any) -> dict[str, Any]:
    if not isinstance(volume, Mapping):
        raise ValueError(f"service {name!r}: volume {volume!r} is not in compose's long form")
    kind = volume.get("type")
    allowed = {"type", "source", "target", "read_only", kind}
    out: dict[str, Any] = {}
    for key, value in volume.items():
        if isinstance(value, Mapping):
            # Swarm bind mounts never create a missing source (create_host_path: nothing to say).
            value = {k: v for k, v in value.items() if k != "create_host_path" and v is not None}
        if value in (None, {}, "") or (key == "read_only" and value is False):
            continue
        if key not in allowed:
            raise ValueError(f"service {name!r}: mount option {key!r} of {volume.get('target')} "
                             "cannot be set on Swarm")
        out[key] = copy.deepcopy(value)
    if kind == "tmpfs" and "tmpfs" in out:
        out["tmpfs"] = {"size": _bytes(name, out["tmpfs"].get("size", 0))}
    return out


def _tmpfs(name: str, spec: str) -> dict[str, Any]:
    """``/tmp:size=16m,mode=1777`` (compose's tmpfs entry) -> a Swarm tmpfs mount."""
    target, _, options = spec.partition(":")
    out: dict[str, Any] = {"type": "tmpfs", "target": target}
    for option in filter(None, options.split(",")):
        key, _, value = option.partition("=")
        if key == "size":
            out["tmpfs"] = {"size": _bytes(name, value)}
        elif key == "mode" and value.lstrip("0") == "1777":
            continue  # Swarm's tmpfs mode is always the kernel's 1777
        else:
            raise ValueError(f"service {name!r}: tmpfs option {option!r} of {target} cannot be set "
                             "on Swarm (Docker 20.10 carries the size only; the mode is 1777)")
    return out


def _bytes(name: str, size: Any) -> int:
    if isinstance(size, int):
        return size
    match = _SIZE.fullmatch(str(size).strip())
    if not match:
        raise ValueError(f"service {name!r}: size {size!r} is not bytes or a k/m/g size")
    return int(match[1]) * 1024 ** ("", "k", "m", "g").index(match[2].lower())


def _network(net: Mapping[str, Any]) -> dict[str, Any]:
    if net.get("external"):
        return {k: copy.deepcopy(v) for k, v in net.items() if k in ("external", "name")}
    driver = net.get("driver")
    if driver not in (None, "bridge", "overlay"):
        raise ValueError(f"network driver {driver!r} does not span nodes: a stack network is overlay")
    # Overlay spans the nodes; attachable lets the deployer's one-off containers (the release
    # migration, a debug shell) join as `compose run` did. Compose's name (<project>_<net>) is
    # left to the stack's namespace.
    out: dict[str, Any] = {"driver": "overlay", "attachable": True}
    if net.get("internal"):
        out["internal"] = True
    for key in ("driver_opts", "labels"):
        if net.get(key):
            out[key] = copy.deepcopy(net[key])
    return out


def _volume(vol: Mapping[str, Any]) -> dict[str, Any]:
    if vol.get("external"):
        return {k: copy.deepcopy(v) for k, v in vol.items() if k in ("external", "name")}
    # Compose's explicit name (<project>_pg-data) is kept: on the data node the stack mounts
    # the very volume the single-node deploy filled.
    out: dict[str, Any] = {"driver": vol.get("driver") or "local"}
    for key in ("name", "driver_opts", "labels"):
        if vol.get(key):
            out[key] = copy.deepcopy(vol[key])
    return out


def _as_list(value: Any) -> list[str]:
    if value is None:
        return []
    return [value] if isinstance(value, str) else list(value)
