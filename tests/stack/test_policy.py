"""Security and readiness policy over the parsed stack files (FR-010/011, NFR-001..009)."""
from __future__ import annotations

import re

import pytest

from .helpers import STACK, compose, load_yaml, rendered_dynamic

PUBLIC_ENTRYPOINTS = {"web", "websecure"}
DASHBOARD_ROUTERS = {"flower", "admin"}
INTERNAL_ONLY = {"redis", "postgres", "worker", "beat", "flower", "django"}
STAGING_CA = "https://acme-staging-v02.api.letsencrypt.org/directory"


def _public_routers(dynamic: dict) -> dict:
    return {name: r for name, r in dynamic["http"]["routers"].items()
            if set(r.get("entryPoints", PUBLIC_ENTRYPOINTS)) & PUBLIC_ENTRYPOINTS}


def test_only_traefik_publishes_ports_and_only_80_443():
    services = compose()["services"]
    publishers = {name for name, s in services.items() if s.get("ports")}
    assert publishers == {"traefik"}
    assert sorted(services["traefik"]["ports"]) == ["443:443", "80:80"]
    static = load_yaml(STACK / "traefik" / "traefik.yml")
    api_port = static["entryPoints"]["traefik"]["address"].rsplit(":", 1)[1]
    assert all(api_port not in p.split(":") for p in services["traefik"]["ports"])
    # Traefik's API + ping listen on the loopback of Traefik's own network namespace only.
    assert static["entryPoints"]["traefik"]["address"] == "127.0.0.1:8080"


def test_every_service_has_a_real_healthcheck():
    for name, service in compose()["services"].items():
        check = service.get("healthcheck")
        assert check and not check.get("disable"), f"{name} has no healthcheck"
        test = check["test"]
        assert isinstance(test, list) and test[0] in {"CMD", "CMD-SHELL"}, f"{name}: {test}"
        # No curl/wget: they are not in every base image (python slim, lab stand-ins).
        assert not {"curl", "wget"} & set(" ".join(test[1:]).split()), f"{name} relies on curl/wget"


def test_every_dependency_waits_for_health_or_completion():
    for name, service in compose()["services"].items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: depends_on must use conditions"
        for dep, spec in deps.items():
            assert spec.get("condition") in {"service_healthy", "service_completed_successfully"}, (name, dep)


def test_networks_edge_internal_and_dashboards():
    config = compose()
    assert config["networks"]["internal"].get("internal") is True
    assert config["networks"]["dashboards"].get("internal") is True
    services = config["services"]
    for name in INTERNAL_ONLY - {"django", "flower", "postgres"}:
        assert services[name]["networks"] == ["internal"], name
    # Traefik reaches the dashboards it routes, never the back-end network with Redis/PostgreSQL.
    assert set(services["traefik"]["networks"]) == {"edge", "dashboards"}
    assert set(services["flower"]["networks"]) == set(services["django"]["networks"]) == {"internal", "dashboards"}
    assert services["frontend"]["networks"] == ["edge"]
    assert set(services["api"]["networks"]) == {"edge", "internal"}
    # PostgreSQL's way out to the backup repository is its alone.
    assert config["networks"]["backups"].get("internal") is not True
    assert [n for n, s in services.items() if "backups" in s["networks"]] == ["postgres"]
    # The dashboards network carries only what dynamic.yml routes to there.
    routed = {s["loadBalancer"]["servers"][0]["url"].split("//")[1].split(":")[0]
              for s in rendered_dynamic("staging")["http"]["services"].values()}
    on_dashboards = {n for n, s in services.items() if "dashboards" in s["networks"]}
    assert on_dashboards - {"traefik"} == routed - {"frontend", "api"}


def test_named_volumes_keep_data():
    config = compose()
    for service, target in [("postgres", "/var/lib/postgresql/data"), ("redis", "/data"),
                            ("traefik", "/letsencrypt")]:
        mounts = config["services"][service]["volumes"]
        named = [m for m in mounts if m.endswith(":" + target) and not m.startswith((".", "/"))]
        assert named, f"{service} keeps {target} on a named volume"
        assert named[0].split(":")[0] in config["volumes"]


def test_built_images_are_named_and_use_the_official_bases():
    services = compose()["services"]
    bases = {"frontend": ["node:22-bookworm-slim", "nginx:stable-bookworm"],
             "api": ["python:3.11-slim-bookworm"], "django": ["python:3.11-slim-bookworm"],
             "traefik": ["traefik:v3.7"], "postgres": ["postgres:15-bookworm"]}
    for name, expected in bases.items():
        assert services[name]["image"] == f"stack-{name}:latest"
        dockerfile = (STACK / services[name]["build"]["context"] / "Dockerfile").read_text()
        assert re.findall(r"^FROM (\S+)", dockerfile, re.M) == expected
    assert services["redis"]["image"] == "redis:7-bookworm"
    assert "name" not in compose(), "the deployer sets the project name with -p"


@pytest.mark.parametrize("deploy_env", ["production", "staging"])
def test_every_public_router_sends_security_headers(deploy_env):
    dynamic = rendered_dynamic(deploy_env)
    headers = dynamic["http"]["middlewares"]["security-headers"]["headers"]
    assert headers["stsSeconds"] >= 15552000
    assert headers["contentTypeNosniff"] is True
    assert headers["customFrameOptionsValue"] == "SAMEORIGIN"
    assert headers["referrerPolicy"] in {"strict-origin-when-cross-origin", "strict-origin", "same-origin", "no-referrer"}
    for name, router in _public_routers(dynamic).items():
        assert "security-headers" in router.get("middlewares", []), name


@pytest.mark.parametrize("deploy_env", ["staging", "development"])
def test_dashboards_need_allowlist_and_basic_auth(deploy_env):
    dynamic = rendered_dynamic(deploy_env)
    routers, middlewares = dynamic["http"]["routers"], dynamic["http"]["middlewares"]
    assert DASHBOARD_ROUTERS <= set(routers)
    for name in DASHBOARD_ROUTERS:
        kinds = {next(iter(middlewares[m])) for m in routers[name]["middlewares"]}
        assert {"ipAllowList", "basicAuth"} <= kinds, name
    assert middlewares["dashboard-allowlist"]["ipAllowList"]["sourceRange"] == ["127.0.0.1/32", "10.0.0.0/8"]
    assert routers["flower"]["rule"] == "Host(`flower.stack.test`)"
    assert routers["admin"]["rule"].startswith("Host(`admin.stack.test`)")


@pytest.mark.parametrize("deploy_env", ["production", "", "prod", "Staging"])
def test_admin_router_exists_only_off_production(deploy_env):
    # Fail closed: anything but exactly staging/development gets no admin route at all.
    dynamic = rendered_dynamic(deploy_env)
    assert "admin" not in dynamic["http"]["routers"]
    assert "django" not in dynamic["http"]["services"]
    assert all("django" not in r["service"] for r in dynamic["http"]["routers"].values())


def test_outer_rate_limit_sits_above_the_api_limit():
    for rpm in ("60", "7", "1000"):
        limit = rendered_dynamic("production", RATE_LIMIT_API_RPM=rpm)["http"]["middlewares"]["api-ratelimit"]["rateLimit"]
        assert limit["period"] == "1m"
        assert limit["average"] > int(rpm) and limit["burst"] > int(rpm)
    api_router = rendered_dynamic("production")["http"]["routers"]["api"]
    assert "api-ratelimit" in api_router["middlewares"]
    assert "PathPrefix(`/api`)" in api_router["rule"]


def test_traefik_api_only_on_the_unpublished_entrypoint():
    static = load_yaml(STACK / "traefik" / "traefik.yml")
    assert static["api"].get("insecure") is not True
    routers = rendered_dynamic("production")["http"]["routers"]
    internal = [n for n, r in routers.items() if r["service"] == "api@internal"]
    assert internal and all(routers[n]["entryPoints"] == ["traefik"] for n in internal)


def test_static_config_shape():
    static = load_yaml(STACK / "traefik" / "traefik.yml")
    redirect = static["entryPoints"]["web"]["http"]["redirections"]["entryPoint"]
    assert redirect["to"] == "websecure" and redirect["scheme"] == "https"
    assert static["ping"]["entryPoint"] == "traefik"
    assert static["providers"]["file"] == {"directory": "/etc/traefik/dynamic", "watch": True}
    assert "accessLog" in static
    (resolver,) = static["certificatesResolvers"].values()
    assert resolver["acme"]["caServer"] == STAGING_CA
    assert resolver["acme"]["httpChallenge"]["entryPoint"] == "web"
    assert resolver["acme"]["storage"].startswith("/letsencrypt/")
    assert static["global"] == {"checkNewVersion": False, "sendAnonymousUsage": False}


def test_no_production_acme_endpoint_anywhere_in_the_stack():
    offenders = []
    for path in STACK.rglob("*"):
        if not path.is_file() or "node_modules" in path.parts or "dist" in path.parts:
            continue
        text = path.read_text(errors="ignore")
        for url in re.findall(r"acme[\w.-]*\.api\.letsencrypt\.org[^\s'\"]*", text):
            if not url.startswith("acme-staging-v02.api.letsencrypt.org"):
                offenders.append(f"{path.relative_to(STACK)}: {url}")
        if re.search(r"caServer|CASERVER|ca_server", text) and path.name != "traefik.yml":
            offenders.append(f"{path.relative_to(STACK)} configures a CA server")
    assert offenders == []


def test_env_example_is_the_complete_contract():
    example = (STACK / ".env.example").read_text().splitlines()
    keys = [l.split("=", 1)[0] for l in example if l and not l.startswith("#")]
    for i, line in enumerate(example):
        if line and not line.startswith("#"):
            assert example[i - 1].startswith("#"), f"{line.split('=')[0]} needs a comment above it"
    compose_text = "\n".join(l for l in (STACK / "compose.yml").read_text().splitlines()
                             if not l.lstrip().startswith("#"))
    used = set(re.findall(r"\$\{(\w+)", compose_text))
    assert used == set(keys), f"compose reads {sorted(used)}, .env.example lists {sorted(keys)}"
    traefik_env = compose()["services"]["traefik"]["environment"]
    templated = set(re.findall(r'env "(\w+)"', (STACK / "traefik" / "dynamic.yml").read_text()))
    assert templated <= set(traefik_env), "every variable dynamic.yml reads reaches the traefik container"
    assert "ACME_EMAIL" not in keys  # see README: static config cannot read env; staging needs none


def test_secrets_are_never_baked_into_images():
    secrets = {"POSTGRES_PASSWORD", "DJANGO_SECRET_KEY", "INTERNAL_API_TOKEN", "FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH"}
    for dockerfile in STACK.rglob("Dockerfile"):
        text = dockerfile.read_text()
        assert not [s for s in secrets if s in text], dockerfile
        assert not re.search(r"^(ARG|ENV)\s+\w*(SECRET|PASSWORD|TOKEN)", text, re.M | re.I), dockerfile


def _final_stage_user(dockerfile: str) -> str:
    final = dockerfile.rsplit("\nFROM ", 1)[-1]
    users = re.findall(r"^USER (\S+)", final, re.M)
    return users[-1] if users else ""


def test_every_service_is_hardened_in_the_compose_file():
    """The compose side of what tests/stack/test_posture.py checks on running containers."""
    for name, service in compose()["services"].items():
        assert service["security_opt"] == ["no-new-privileges:true"], name
        assert service["cap_drop"] == ["ALL"] and "cap_add" not in service, name
        assert service["read_only"] is True, name
        assert service["mem_limit"] and service["pids_limit"], name
        assert service["logging"] == {"driver": "json-file", "options": {"max-size": "10m", "max-file": "5"}}, name
        user = service.get("user") or _final_stage_user((STACK / service["build"]["context"] / "Dockerfile").read_text())
        assert user and user.split(":")[0] not in {"0", "root"}, f"{name} runs as root"
