"""remote/commands.py as plain strings: quoting, fixed project, no secrets, shell safety."""
from __future__ import annotations

import shlex
import subprocess

import pytest

from remote import commands as cmd
from remote.layout import ReleaseLayout

T = cmd.ComposeProject(project="myapp", compose_files=("/opt/my app/current/compose.yml",),
                      env_file="/opt/my app/shared/.env", project_directory="/opt/my app/current")


def test_compose_prefix_pins_project_dir_files_and_env_file():
    assert cmd.compose("myapp", ["/a/compose.yml", "/a/override.yml"], "/a/.env", "ps") == \
        "docker compose -p myapp -f /a/compose.yml -f /a/override.yml --env-file /a/.env ps"
    assert cmd.ps(T) == (
        "docker compose -p myapp --project-directory '/opt/my app/current' "
        "-f '/opt/my app/current/compose.yml' --env-file '/opt/my app/shared/.env' "
        "ps --all")


@pytest.mark.parametrize("bad", [dict(project=""), dict(compose_files=[])])
def test_compose_requires_project_and_files(bad):
    args = dict(project="p", compose_files=["c.yml"], env_file=None) | bad
    with pytest.raises(ValueError):
        cmd.compose(args["project"], args["compose_files"], args["env_file"])


def test_build_up_logs_and_friends():
    pre = shlex.join(["docker", "compose", "-p", "myapp", "--project-directory", "/opt/my app/current",
                      "-f", "/opt/my app/current/compose.yml", "--env-file", "/opt/my app/shared/.env"])
    assert cmd.build(T) == pre + " build"
    assert cmd.build(T, {"web", "api"}, pull=True) == pre + " build --pull api web"
    assert cmd.up(T, 120) == pre + " up -d --wait --wait-timeout 120 --no-build --remove-orphans"
    assert cmd.up(T, 60, services={"api"}, no_deps=True) == \
        pre + " up -d --wait --wait-timeout 60 --no-build --remove-orphans --no-deps api"
    assert cmd.logs(T, "traefik", tail=50) == pre + " logs --no-color --tail 50 --timestamps traefik"
    assert cmd.logs(T, "api", timestamps=False).endswith(" logs --no-color --tail 200 api")
    assert cmd.config(T) == pre + " config"
    assert cmd.config(T, json=True) == pre + " config --format json"
    assert cmd.images(T) == pre + " images --format json"
    with pytest.raises(ValueError):
        cmd.up(T, 0)
    assert "down" not in cmd.up(T, 10) and "-v" not in cmd.up(T, 10).split()


def test_docker_and_host_probes():
    api = cmd.traefik_api_get("myapp-traefik-1", "api/rawdata")
    assert api.startswith("docker exec myapp-traefik-1 timeout 10 bash -c ") and "sudo" not in api
    assert api.endswith(" api-get 8080 /api/rawdata")
    assert cmd.container_ip("myapp-api-1", "my net") == \
        "docker inspect --format '{{(index .NetworkSettings.Networks \"my net\").IPAddress}}' myapp-api-1"
    assert cmd.containers_env(["c2", "c1"]) == "docker inspect --format '{{.Id}} {{json .Config.Env}}' c1 c2"
    assert cmd.container_cat("myapp-traefik-1", "/etc/traefik/traefik.yml") == \
        "docker exec myapp-traefik-1 cat /etc/traefik/traefik.yml"
    # dangling images only (never a tagged release image), and build cache unused for 3 days
    assert cmd.prune_dangling_images() == "docker image prune --force"
    assert cmd.prune_builder_cache() == "docker builder prune --force --filter until=72h"
    assert "system" not in cmd.prune_dangling_images() + cmd.prune_builder_cache()
    # what `inv prune --dry-run` reads: reads only, nothing that removes
    assert cmd.list_image_refs() == "docker image ls --format '{{.Repository}}:{{.Tag}}'"
    assert cmd.list_dangling_images() == "docker image ls --filter dangling=true --format '{{.ID}} {{.Size}}'"
    assert cmd.disk_usage() == "docker system df --format '{{.Type}}|{{.Reclaimable}}'"
    assert cmd.health("c1") == "docker inspect --format '{{json .State.Health}}' c1"
    assert cmd.curl_headers("example.com", "api/health", timeout=5) == (
        "curl -sS -k -D - -o /dev/null --max-time 5 --resolve example.com:443:127.0.0.1 "
        "https://example.com/api/health")
    assert cmd.curl_headers("example.com", timeout=2.5).endswith("--max-time 2.5 --resolve "
                                                                 "example.com:443:127.0.0.1 https://example.com/")
    assert cmd.docker_system_df() == "docker system df" and cmd.free_m() == "free -m"
    assert cmd.readlink_current(ReleaseLayout("/opt/app")) == "readlink /opt/app/current || true"


def test_hostile_values_stay_single_arguments():
    evil = "x'; rm -rf / #"
    line = cmd.logs(cmd.ComposeProject("p", ("c.yml",)), evil)
    assert shlex.split(line)[-1] == evil
    assert shlex.split(cmd.remove_paths("/r", [evil]))[-1] == f"/r/{evil}"
    assert shlex.split(cmd.containers_env([evil]))[-1] == evil
    assert shlex.split(cmd.container_cat(evil, evil)) == ["docker", "exec", evil, "cat", evil]


def test_release_and_lock_commands_do_what_they_say(tmp_path):
    """Run the shell snippets for real in a temp dir: switch is atomic, lock mkdir is exclusive."""
    base = ReleaseLayout(str(tmp_path / "opt app"))

    def sh(line: str) -> str:
        return subprocess.run(["sh", "-c", line], capture_output=True, text=True, check=True).stdout

    sh(cmd.prepare_layout(base))
    sh(cmd.make_dir(base.release("r1")))
    sh(cmd.make_dir(base.release("r2")))
    assert sh(cmd.readlink_current(base)) == ""
    sh(cmd.switch_current(base, "r1"))
    sh(cmd.switch_current(base, "r2"))
    assert sh(cmd.readlink_current(base)).strip() == "releases/r2"
    assert sh(cmd.list_release_dirs(base)).split() == ["r1", "r2"]
    assert sh(cmd.lock_status(base)) == "free\n"
    for attempt in ("a", "b"):
        sh(cmd.lock_prepare(base, base.lock_staging(attempt)))
        sh(f"echo '{{}}' > {cmd.q(base.lock_staging(attempt))}/holder.json")
    assert sh(cmd.lock_acquire(base, base.lock_staging("a"))).strip() == "acquired"
    assert sh(cmd.lock_acquire(base, base.lock_staging("b"))).strip() == "held"   # rename(2) refuses
    assert sh(cmd.lock_status(base)) in ("held 0\n{}\n", "held 1\n{}\n")
    sh(cmd.lock_release(base, base.lock_staging("gone")))
    assert sh(cmd.lock_status(base)) == "free\n"
    assert sh(cmd.lock_acquire(base, base.lock_staging("b"))).strip() == "acquired"
    assert cmd.remove_paths(base.base, []) == "true" and cmd.remove_releases(base, []) == "true"


def test_no_builder_accepts_or_emits_secret_values():
    """Secrets reach compose through --env-file only: no builder takes an env mapping."""
    import inspect

    for name, fn in inspect.getmembers(cmd, inspect.isfunction):
        params = inspect.signature(fn).parameters
        assert not ({"env", "environment", "secrets", "password", "token"} & set(params)), name


def test_traefik_api_body_is_returned_only_for_a_200():
    assert cmd.http_body("HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{\"a\": 1}") == '{"a": 1}'
    with pytest.raises(ValueError, match="answered HTTP/1.0 404 Not Found"):
        cmd.http_body("HTTP/1.0 404 Not Found\r\nContent-Length: 0\r\n\r\n")
    with pytest.raises(ValueError, match="not an HTTP response"):
        cmd.http_body("bash: connect: Connection refused")
