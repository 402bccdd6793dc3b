#!/bin/sh
# What a droplet's systemd would start: sshd, dockerd, then user_data once.
# docker-init (docker run --init) is PID 1 and reaps zombies; this script waits forever.
set -u

# Inner containers cannot use Docker's embedded DNS (127.0.0.11) of the outer engine,
# so the lab hands us the host's real resolvers, like DHCP on a real droplet.
if [ -n "${LAB_NAMESERVERS:-}" ]; then
    { for ns in $LAB_NAMESERVERS; do echo "nameserver $ns"; done; } > /etc/resolv.conf
fi

ssh-keygen -A >/dev/null 2>&1           # per-droplet host keys, never baked in the image
mkdir -p /run/sshd
/usr/sbin/sshd -E /var/log/sshd.log

# LAB_DOCKERD_ARGS: e.g. its own cgroup parent, so inner containers stay apart from the host's
# shellcheck disable=SC2086
dockerd ${LAB_DOCKERD_ARGS:-} >/var/log/dockerd.log 2>&1 &
DOCKERD=$!

stop() {
    kill -TERM "$DOCKERD" 2>/dev/null && wait "$DOCKERD"
    [ -f /run/sshd.pid ] && kill "$(cat /run/sshd.pid)" 2>/dev/null
    exit 0
}
trap stop TERM INT

# user_data runs once, after dockerd is up, like cloud-init's final stage.
USER_DATA=/var/lib/cloud/instance/user-data.txt
if [ -s "$USER_DATA" ] && [ ! -e /var/lib/cloud/instance/boot-finished ]; then
    (
        i=0; while ! docker info >/dev/null 2>&1 && [ $i -lt 120 ]; do sleep 0.5; i=$((i+1)); done
        if head -c 2 "$USER_DATA" | grep -q '#!'; then
            chmod 700 "$USER_DATA" && "$USER_DATA"
        else
            echo "lab droplet: user_data is not a script (#!); cloud-config is not interpreted"
        fi
        date -u > /var/lib/cloud/instance/boot-finished
    ) >/var/log/cloud-init-output.log 2>&1 &
fi

tail -f /dev/null &
while :; do wait $! ; done
