#!/bin/sh
# Same contract as the official redis image: flags-only args mean redis-server, run as
# the redis user from /data, protected mode off unless a config file decides.
set -e
case "$1" in -*|*.conf) set -- redis-server "$@" ;; esac

if [ "$1" = 'redis-server' ] && [ "$(id -u)" = '0' ]; then
    find . \! -user redis -exec chown redis '{}' + 2>/dev/null || true
    exec setpriv --reuid=redis --regid=redis --init-groups "$0" "$@"
fi

if [ "$1" = 'redis-server' ]; then
    protected=1
    if [ -f "${2:-}" ] && grep -q '^protected-mode' "$2"; then protected=; fi
    for a in "$@"; do [ "$a" = '--protected-mode' ] && protected=; done
    if [ -n "$protected" ]; then set -- "$@" --protected-mode no; fi
fi
exec "$@"
