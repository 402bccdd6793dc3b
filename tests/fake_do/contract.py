"""DigitalOcean's published OpenAPI contract, applied to the fake API's recorded exchanges.

The spec is shared data beside the repository (<repo>/../shared/specs, see its README). Every
/v2/ request the fake received and every answer it sent is validated with openapi-core, plus
what the schema cannot express about droplets (droplet_semantics). The fake's address stands
for the spec's server; paths lack the trailing "/" python-digitalocean adds (the API ignores
it). `off_spec` returns one readable line per problem: a passing check is an empty list.
"""
from __future__ import annotations

import copy
import functools
import importlib.util
import json
from pathlib import Path
from typing import Any, Iterable

import yaml

from lab.fake_do.faults import RequestRecord

REPO_ROOT = Path(__file__).resolve().parents[2]
SPEC_PATH = REPO_ROOT.parent / "shared" / "specs" / "digitalocean-public.v2.yaml"
API_ROOT = "https://api.digitalocean.com"  # the spec's only server; the fake's URL maps onto it


def load_contract(path: Path = SPEC_PATH) -> Any:
    """The spec as an openapi-core OpenAPI object (a few seconds: load it once per session)."""
    from openapi_core import Config, OpenAPI

    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: 3 s, not 30, on 3 MB
    with open(path, "rb") as fh:
        data = yaml.load(fh, Loader=loader)  # noqa: S506 - a safe loader
    _parameters_without_read_only(data)
    # No spec self-check: DigitalOcean's bundle fails it in schemas we never use (a null
    # default under a oneOf) and checking 3 MB costs ~10 s. We check exchanges, not the spec.
    return OpenAPI.from_dict(data, config=Config(spec_validator_cls=None))


@functools.lru_cache(maxsize=1)
def _shared_contract() -> Any:
    return load_contract()


def contract_or_skip() -> Any:
    """The contract for a test, loaded once per session; a missing spec or openapi-core skips
    the test locally and fails it in CI (which provides both)."""
    from tests.conftest import need

    need(SPEC_PATH.is_file(), f"DigitalOcean's OpenAPI spec {SPEC_PATH}", missing="is missing",
         provided_by="CI lays shared/ beside the clone (see shared/specs/README.md)")
    need(importlib.util.find_spec("openapi_core") is not None, "openapi-core (test extra)")
    return _shared_contract()


def _parameters_without_read_only(spec: dict) -> None:
    """Drop `readOnly` from parameter schemas, in place.

    OpenAPI 3.0 gives readOnly a meaning only for properties of a body, but openapi-core
    rejects any request value under a readOnly schema, so the documented GET
    /v2/account/keys/{ssh_key_identifier} (whose id/fingerprint schemas are readOnly)
    could never validate.
    """
    schemas = spec.get("components", {}).get("schemas", {})

    def readable(schema: dict) -> dict:
        ref = schema.get("$ref", "")
        if ref.startswith("#/components/schemas/"):
            schema = copy.deepcopy(schemas[ref.rsplit("/", 1)[1]])
        out = {k: v for k, v in schema.items() if k != "readOnly"}
        for key in ("anyOf", "oneOf", "allOf"):
            if key in out:
                out[key] = [readable(s) for s in out[key]]
        return out

    parameters = list(spec.get("components", {}).get("parameters", {}).values())
    for item in spec.get("paths", {}).values():
        for operation in [item, *(v for v in item.values() if isinstance(v, dict))]:
            parameters.extend(p for p in operation.get("parameters") or [] if "$ref" not in p)
    for parameter in parameters:
        if isinstance(parameter.get("schema"), dict):
            parameter["schema"] = readable(parameter["schema"])


def _messages(error: BaseException) -> list[str]:
    """Flatten openapi-core's error chain into 'where: what' lines."""
    lines: list[str] = []
    cause: BaseException | None = error
    while cause is not None:
        for schema_error in getattr(cause, "schema_errors", None) or ():
            for leaf in _leaves(schema_error):
                where = "/".join(str(p) for p in leaf.absolute_path) or "(body)"
                lines.append(f"{where}: {_short(leaf.message)}")
        cause = cause.__cause__
    return lines or [f"{type(error).__name__}: {_short(str(error))}"]


def _leaves(error: Any) -> list[Any]:
    """The errors that say what is wrong: for a failed oneOf/anyOf, those of the branch that
    got deepest into the value (the one it was meant to be), not 'matches no branch'."""
    if not error.context:
        return [error]
    branches: dict[Any, list[Any]] = {}
    for sub in error.context:
        branches.setdefault(sub.relative_schema_path[0], []).append(sub)
    meant = max(branches.values(),
                key=lambda errs: (max(len(e.absolute_path) for e in errs), -len(errs)))
    return [leaf for sub in meant for leaf in _leaves(sub)]


def _short(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def check(contract: Any, record: RequestRecord) -> list[str]:
    """Problems with one exchange: 'METHOD /path -> status: request|response: where: what'."""
    from openapi_core.testing import MockRequest, MockResponse

    request = MockRequest(
        API_ROOT, record.method, record.path, args=record.query, headers=record.headers,
        data=record.raw_body or None,
        content_type=_header(record.headers, "Content-Type") or "")
    response = MockResponse(
        record.response_body, status_code=record.status, headers=record.response_headers,
        content_type=_header(record.response_headers, "Content-Type") or "")
    label = f"{record.method} {record.path} -> {record.status}"
    problems = [f"{label}: request: {m}" for e in contract.iter_request_errors(request)
                for m in _messages(e)]
    problems += [f"{label}: response: {m}" for e in contract.iter_response_errors(request, response)
                 for m in _messages(e)]
    if "json" in response.content_type and record.response_body:
        problems += [f"{label}: response: {m}"
                     for m in droplet_semantics(json.loads(record.response_body))]
    return list(dict.fromkeys(problems))  # several errors can share a leaf


def droplet_semantics(payload: Any) -> list[str]:
    """What the schema cannot say about the droplets in an answer: each one's memory, vCPUs
    and disk are its size's, and one with the ipv6 feature and a public IPv4 also lists a
    public IPv6 network."""
    if not isinstance(payload, dict):
        return []
    if isinstance(payload.get("droplets"), list):
        droplets = payload["droplets"]
    elif isinstance(payload.get("droplet"), dict):
        droplets = [payload["droplet"]]
    else:
        return []
    problems = []
    for droplet in droplets:
        where = f"droplet {droplet.get('id')}"
        size = droplet.get("size") or {}
        for key in ("slug", "memory", "vcpus", "disk"):
            own = droplet.get("size_slug" if key == "slug" else key)
            if own != size.get(key):
                problems.append(f"{where}: {key} {own!r} is not its size's {size.get(key)!r}")
        networks = droplet.get("networks") or {}
        public = {version: any(n.get("type") == "public" for n in networks.get(version) or [])
                  for version in ("v4", "v6")}
        if "ipv6" in (droplet.get("features") or []) and public["v4"] and not public["v6"]:
            problems.append(f"{where}: has the ipv6 feature and a public IPv4 but no public IPv6")
    return problems


def _header(headers: dict[str, str], name: str) -> str | None:
    return next((v for k, v in headers.items() if k.lower() == name.lower()), None)


def off_spec(contract: Any, records: Iterable[RequestRecord]) -> list[str]:
    """Every problem in every DigitalOcean API exchange (the lab's /lab/my-ip is not one)."""
    return [problem for record in records if record.path.startswith("/v2/")
            for problem in check(contract, record)]
