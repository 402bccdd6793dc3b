#!/bin/bash
# Sourced by pgbr and start.sh: pgBackRest's options from the stack's settings, exported as
# PGBACKREST_* variables, which pgBackRest reads like its config file. Nothing goes on a command
# line, where `ps` would show the Spaces secret or the cipher pass; the server inherits them, so
# archive_command and restore_command see the same repository as `pgbr backup`.
#
# SPACES_BUCKET set: the repository is that bucket (DigitalOcean Spaces or any S3 endpoint),
# encrypted with BACKUP_CIPHER_PASS. Unset: a directory on the droplet (the pg-backups volume),
# which survives a bad deploy but not the loss of the droplet; the deployer warns about that.

export PGBACKREST_STANZA="${BACKUP_STANZA:-main}"
export PGBACKREST_PG1_PATH="${PGDATA:-/var/lib/postgresql/data}"
export PGBACKREST_PG1_SOCKET_PATH="${BACKUP_PG_SOCKET:-/var/run/postgresql}"
export PGBACKREST_PG1_PORT="${BACKUP_PG_PORT:-5432}"
export PGBACKREST_PG1_USER="${POSTGRES_USER:-postgres}"
# The root filesystem is read-only: locks on the /tmp tmpfs, logs to the console only.
export PGBACKREST_LOCK_PATH="${BACKUP_LOCK_PATH:-/tmp/pgbackrest}"
export PGBACKREST_LOG_LEVEL_FILE=off
export PGBACKREST_LOG_LEVEL_CONSOLE="${PGBACKREST_LOG_LEVEL_CONSOLE:-warn}"
export PGBACKREST_COMPRESS_TYPE=zst
export PGBACKREST_START_FAST=y
export PGBACKREST_DELTA=y
# An object store costs a round trip per object: a new database's ~1,000 small files were 1,300
# objects, and a restore from the lab's S3 took 47 s fetching them one by one. Bundled, a backup
# is a few objects (bundles hold the small files; older unbundled backups still restore), and
# backups and restores move four files at a time.
export PGBACKREST_REPO1_BUNDLE=y
export PGBACKREST_PROCESS_MAX=4
# WAL waiting for an unreachable repository stays in pg_wal; past this size pgBackRest reports
# it archived and drops it (PostgreSQL keeps running; point-in-time recovery has a gap until
# the next backup, and the deployer's check says so) rather than filling the disk.
export PGBACKREST_ARCHIVE_PUSH_QUEUE_MAX="${BACKUP_WAL_QUEUE_MAX:-2GiB}"
export PGBACKREST_REPO1_RETENTION_FULL="${BACKUP_RETENTION_FULL:-2}"

if [ -n "${SPACES_BUCKET:-}" ]; then
    endpoint="${SPACES_ENDPOINT:-${SPACES_REGION:-nyc3}.digitaloceanspaces.com}"
    endpoint="${endpoint#https://}"
    endpoint="${endpoint%%/*}"
    host="${endpoint%%:*}"
    export PGBACKREST_REPO1_TYPE=s3
    export PGBACKREST_REPO1_PATH="${BACKUP_REPO_PATH:-/stackdeploy}"
    export PGBACKREST_REPO1_S3_BUCKET="$SPACES_BUCKET"
    export PGBACKREST_REPO1_S3_ENDPOINT="$host"
    export PGBACKREST_REPO1_S3_REGION="${SPACES_REGION:-nyc3}"
    export PGBACKREST_REPO1_S3_KEY="${SPACES_KEY:-}"
    export PGBACKREST_REPO1_S3_KEY_SECRET="${SPACES_SECRET:-}"
    if [ "$endpoint" != "$host" ]; then
        export PGBACKREST_REPO1_STORAGE_PORT="${endpoint##*:}"
    fi
    # An endpoint given as an IP address has no bucket subdomains: path-style requests.
    if [[ "$host" =~ ^[0-9.]+$ ]]; then
        export PGBACKREST_REPO1_S3_URI_STYLE=path
    fi
    if [ -n "${SPACES_CA_FILE:-}" ]; then
        # A copy inside the container: the mounted file lives in the release folder the
        # container was created from, which pruning removes while postgres keeps running.
        ca_copy=/tmp/stack-spaces-ca.pem
        if [ -s "$SPACES_CA_FILE" ]; then
            cp -f "$SPACES_CA_FILE" "$ca_copy.$$" 2>/dev/null && mv -f "$ca_copy.$$" "$ca_copy" 2>/dev/null || true
        fi
        if [ -s "$ca_copy" ]; then
            export PGBACKREST_REPO1_STORAGE_CA_FILE="$ca_copy"
        else
            export PGBACKREST_REPO1_STORAGE_CA_FILE="$SPACES_CA_FILE"
        fi
    fi
else
    export PGBACKREST_REPO1_TYPE=posix
    export PGBACKREST_REPO1_PATH="${BACKUP_LOCAL_REPO:-/var/lib/pgbackrest}"
fi

if [ -n "${BACKUP_CIPHER_PASS:-}" ]; then
    export PGBACKREST_REPO1_CIPHER_TYPE=aes-256-cbc
    export PGBACKREST_REPO1_CIPHER_PASS="$BACKUP_CIPHER_PASS"
fi
