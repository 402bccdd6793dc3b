"""Which services must be recreated because a bind-mounted file of theirs changed."""
from remote.sync import services_for_mounts

COMPOSE = {"services": {
    "traefik": {"image": "traefik:v3.7", "volumes": ["./traefik/traefik.yml:/etc/traefik/traefik.yml:ro",
                                                     "./traefik/dynamic.yml:/etc/traefik/dynamic.yml:ro", "acme:/letsencrypt"]},
    "web": {"build": "./web", "volumes": [{"type": "bind", "source": "./web/conf", "target": "/etc/conf"},
                                          {"type": "volume", "source": "data", "target": "/data"}]},
    "db": {"image": "postgres:15", "volumes": ["pg:/var/lib/postgresql/data"]},
}}


def test_changed_mounted_file_selects_its_service_only():
    assert services_for_mounts(COMPOSE, ["traefik/dynamic.yml"]) == {"traefik"}
    assert services_for_mounts(COMPOSE, ["web/conf/nginx.conf"]) == {"web"}
    assert services_for_mounts(COMPOSE, ["web/src/app.ts", "api/main.py"]) == set()


def test_none_means_every_service_with_a_release_bind_mount():
    assert services_for_mounts(COMPOSE, None) == {"traefik", "web"}
