"""Traefik static/dynamic config and the compose file validate against their schemas."""
from __future__ import annotations

import json
import os
import subprocess

import jsonschema
import pytest
import yaml

from remote import edge_config, stack_secrets

from .helpers import SCHEMAS, STACK, VENV_BIN, load_yaml, rendered_dynamic


def _schema(name: str) -> dict:
    path = SCHEMAS / name
    if not path.is_file():
        pytest.fail(f"schema {path} is missing: the shared schemas must sit beside the repo (../shared/schemas)")
    return json.loads(path.read_text())


def _errors(schema: dict, document: dict) -> list[str]:
    validator = jsonschema.Draft7Validator(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_static_config_matches_traefik_v3_schema():
    assert _errors(_schema("traefik-v3.json"), load_yaml(STACK / "traefik" / "traefik.yml")) == []


# The shared file-provider schema predates the retry middleware's options of later v3 releases
# (doc.traefik.io, reference/routing-configuration/http/middlewares/retry). The stack uses
# `status` (a reset after the request was written is sent again, idempotent methods only);
# test_traefik_real.py proves the pinned binary (3.7) loads and applies it. Every other key of
# the middleware is still refused (additionalProperties: false).
RETRY_SINCE_SCHEMA = {"status": {"type": "array", "items": {"type": "string"}}, "timeout": {"type": "string"},
                      "maxRequestBodyBytes": {"type": "integer"}, "disableRetryOnNetworkError": {"type": "boolean"},
                      "retryNonIdempotentMethod": {"type": "boolean"}}


def _file_provider_schema() -> dict:
    schema = _schema("traefik-v3-file-provider.json")
    retry = schema["definitions"]["retryMiddleware"]
    assert retry["additionalProperties"] is False
    retry["properties"] = {**retry["properties"], **RETRY_SINCE_SCHEMA}
    return schema


@pytest.mark.parametrize("deploy_env", ["production", "staging", "development"])
def test_rendered_dynamic_config_matches_file_provider_schema(deploy_env):
    document = rendered_dynamic(deploy_env)
    assert _errors(_file_provider_schema(), document) == []


def test_schema_validation_catches_a_broken_router():
    # Guard against a validator that accepts anything.
    document = rendered_dynamic("production")
    document["http"]["routers"]["api"]["entryPoints"] = "websecure"  # must be a list
    assert _errors(_schema("traefik-v3-file-provider.json"), document)


def test_compose_file_matches_compose_spec():
    result = subprocess.run(
        [str(VENV_BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(STACK / "compose.yml")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def _compose_config(env_file, extra_env=None):
    env = {k: v for k, v in os.environ.items() if k not in _env_keys()}
    # The deployer fills it in every release's env (the example leaves it empty).
    env[edge_config.DIR_VAR] = edge_config.folder("/opt/stackdeploy")
    env.update(extra_env or {})
    return subprocess.run(
        [str(VENV_BIN / "docker-compose"), "--env-file", str(env_file), "-f", str(STACK / "compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, env=env, cwd=STACK,
    )


def _env_keys() -> set[str]:
    return {line.split("=", 1)[0] for line in (STACK / ".env.example").read_text().splitlines()
            if line and not line.startswith("#")}


def test_compose_interpolates_with_the_example_env():
    result = _compose_config(STACK / ".env.example")
    assert result.returncode == 0, result.stderr
    config = json.loads(result.stdout)
    # The dashboards' users are not in Traefik's environment (a rotation would recreate it): the
    # deployer renders them into auth.yml, single-quoted htpasswd lines verbatim (no $-expansion).
    assert not {"FLOWER_BASIC_AUTH", "ADMIN_BASIC_AUTH"} & set(config["services"]["traefik"]["environment"])
    auth = yaml.safe_load(stack_secrets.files_from_env_text((STACK / ".env.example").read_text())[edge_config.AUTH_FILE])
    users = auth["http"]["middlewares"]["flower-auth"]["basicAuth"]["users"]
    assert users == ["admin:$2y$05$LfgIdG/jtpEnB5teqiTnJ.0Vww/r/uqAd/DgL7GUBojawMSlFutP."]
    assert config["services"]["api"]["environment"]["RATE_LIMIT_API_RPM"] == "60"
    traefik_mounts = {v["target"]: v["source"] for v in config["services"]["traefik"]["volumes"]}
    assert traefik_mounts[edge_config.MOUNT] == edge_config.folder("/opt/stackdeploy")


def test_without_the_deployers_edge_folder_compose_names_it():
    result = _compose_config(STACK / ".env.example", {edge_config.DIR_VAR: ""})
    assert result.returncode != 0
    assert "EDGE_CONFIG_DIR is filled by the deployer (deploy with inv deploy)" in result.stderr


def test_missing_required_variable_names_it_and_the_fix(tmp_path):
    lines = [l for l in (STACK / ".env.example").read_text().splitlines() if not l.startswith("DJANGO_SECRET_KEY=")]
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines) + "\n")
    result = _compose_config(env_file)
    assert result.returncode != 0
    assert "set DJANGO_SECRET_KEY in .env" in result.stderr


def test_production_needs_no_admin_credentials(tmp_path):
    lines = [l for l in (STACK / ".env.example").read_text().splitlines()
             if not l.startswith(("ADMIN_BASIC_AUTH=", "DEPLOY_ENV="))]
    env_file = tmp_path / ".env"
    env_file.write_text("\n".join(lines + ["DEPLOY_ENV=production"]) + "\n")
    result = _compose_config(env_file)
    assert result.returncode == 0, result.stderr
    assert "ADMIN_BASIC_AUTH" not in json.loads(result.stdout)["services"]["traefik"]["environment"]
