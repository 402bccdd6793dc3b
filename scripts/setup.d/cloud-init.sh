#!/usr/bin/env bash
# cloud-init on this machine, for `cloud-init schema` in tests/cloud (the deployer's user data is
# validated by cloud-init itself). Installed *disabled*: this machine must never run it at boot.
set -euo pipefail
if command -v cloud-init >/dev/null 2>&1; then
  echo "cloud-init present ($(cloud-init --version 2>&1))"
  exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
$SUDO mkdir -p /etc/cloud
$SUDO touch /etc/cloud/cloud-init.disabled      # read by cloud-init's systemd generator
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends cloud-init >/dev/null
echo "installed cloud-init $(cloud-init --version 2>&1) (disabled on this machine)"
