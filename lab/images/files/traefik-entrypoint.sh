#!/bin/sh
# Same contract as the official traefik image: flags or a subcommand are passed to traefik.
set -e
if [ "${1#-}" != "$1" ]; then set -- traefik "$@"; fi
if traefik "$1" --help >/dev/null 2>&1; then set -- traefik "$@"; fi
exec "$@"
