#!/bin/bash
# The backup schedule, started by start.sh beside the server. Every BACKUP_CHECK_SECONDS it asks
# the repository (not a clock) what is due, so a restart, a missed day or a new droplet after a
# disaster recovery never skips or doubles a backup:
#   no full backup yet, or the newest full older than BACKUP_FULL_DAYS (7): a full backup;
#   else the newest backup older than BACKUP_DIFF_HOURS (24): a differential.
# Differentials, not incrementals: a restore needs the full and at most one differential, never
# a chain where one lost link loses the rest. Recovery points between backups come from the WAL,
# archived continuously (archive_timeout 30 s). The outcome of each round is written to
# BACKUP_STATUS_FILE for backup-status.sh (the deployer's checks read it).
set -uo pipefail
here="$(dirname "$(readlink -f "$0")")"
# shellcheck source=backup-env.sh
source "$here/backup-env.sh"

interval="${BACKUP_CHECK_SECONDS:-600}"
full_seconds=$(( ${BACKUP_FULL_DAYS:-7} * 86400 ))
diff_seconds=$(( ${BACKUP_DIFF_HOURS:-24} * 3600 ))
status_file="${BACKUP_STATUS_FILE:-/tmp/backup-schedule.json}"

due() {  # pgbackrest info JSON on stdin -> full, diff or nothing
    jq -r --argjson now "$(date +%s)" --argjson full "$full_seconds" --argjson diff "$diff_seconds" '
        ([.[0].backup[]? | select(.type == "full") | .timestamp.stop] | max) as $full_at
        | ([.[0].backup[]? | .timestamp.stop] | max) as $any_at
        | if $full_at == null or ($now - $full_at) > $full then "full"
          elif ($now - $any_at) > $diff then "diff" else empty end'
}

record() {  # state, message
    jq -n --arg state "$1" --arg message "$2" --argjson at "$(date +%s)" \
        '{state: $state, message: $message, at: $at}' > "$status_file.tmp" && mv "$status_file.tmp" "$status_file"
}

round() {
    local out info kind
    # Idempotent; it also tells a wrong key, a missing bucket or another database's repository.
    if ! out=$(pgbackrest stanza-create 2>&1); then
        record failed "stanza-create: $out"; return
    fi
    if ! info=$(pgbackrest info --output=json 2>&1); then
        record failed "info: $info"; return
    fi
    kind=$(printf '%s' "$info" | due)
    if [ -z "$kind" ]; then
        record ok "nothing due"; return
    fi
    record running "$kind backup started"
    if out=$(pgbackrest --type="$kind" backup 2>&1); then
        record ok "$kind backup done"
    else
        record failed "$kind backup: $out"
    fi
}

while :; do
    round
    sleep "$interval" & wait $!
done
