#!/usr/bin/env bash
# Installs everything the project needs on a fresh Debian/Ubuntu machine (or WSL), idempotently:
# apt packages listed in scripts/apt/*.txt, the Docker engine (scripts/install-docker.sh),
# a virtualenv in .venv with the project and requirements/*.txt, and the front end's npm deps.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

step() { printf '\n==> %s\n' "$*"; }

step "system packages"
mapfile -t PKGS < <(cat scripts/apt/*.txt | sed 's/#.*//' | tr -s ' \t' '\n' | sed '/^$/d' | sort -u)
missing=()
for p in "${PKGS[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  echo "installed: ${missing[*]}"
else
  echo "all ${#PKGS[@]} packages present"
fi

if [ -x scripts/install-docker.sh ] || [ -f scripts/install-docker.sh ]; then
  step "docker engine"
  bash scripts/install-docker.sh
fi

step "python virtualenv (.venv)"
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
REQS=()
for f in requirements/*.txt; do [ -f "$f" ] && REQS+=(-r "$f"); done
.venv/bin/python -m pip install -q -e '.[test]' "${REQS[@]}"
# The project's own bytecode, written once: every `inv` starts by importing about 150 of its
# modules, and with PYTHONDONTWRITEBYTECODE set (as on this project's CI machine) Python would
# compile them from source on every run (0.3 s of each `inv status`). A module edited later is
# compiled again in memory, as always (its .pyc is older than it).
.venv/bin/python -m compileall -q -j 0 core deploy remote lab tasks.py >/dev/null

for f in scripts/setup.d/*.sh; do
  [ -f "$f" ] || continue
  step "$(basename "$f")"
  bash "$f"
done
echo
echo "setup done: activate with 'source .venv/bin/activate'"
