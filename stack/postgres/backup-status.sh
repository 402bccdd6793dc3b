#!/bin/bash
# One JSON document for the deployer's checks and `inv backups`: the repository's backups and
# WAL range (pgbackrest info), the server's archiver (pg_stat_archiver), the WAL still waiting
# to be archived, and the schedule's last round. One command, so one SSH round trip.
set -uo pipefail
here="$(dirname "$(readlink -f "$0")")"
# shellcheck source=backup-env.sh
source "$here/backup-env.sh"

# The repository's reads (its info, the timelines' history files) and the server's go at once:
# each of the two repository reads is a round trip to Spaces, the status costs the slower one.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
pgbackrest info --output=json >"$work/info" 2>&1 &
info_pid=$!
# Each archive id's history files (one listing of its top level: never the WAL under it), as <id>/<file>.
{ for id in $(pgbackrest repo-ls "archive/$PGBACKREST_STANZA" --filter='^[0-9]+-[0-9]+$' 2>/dev/null); do
      pgbackrest repo-ls "archive/$PGBACKREST_STANZA/$id" --filter='^[0-9A-F]{8}\.history$' 2>/dev/null | sed "s|^|$id/|"
  done; } >"$work/histories" &
psql -X -A -t -q -h "$PGBACKREST_PG1_SOCKET_PATH" -p "$PGBACKREST_PG1_PORT" -U "$PGBACKREST_PG1_USER" -d postgres -c \
    "SELECT json_build_object('archived_count', archived_count, 'last_archived_wal', last_archived_wal,
            'last_archived_at', extract(epoch FROM last_archived_time), 'failed_count', failed_count,
            'last_failed_wal', last_failed_wal, 'last_failed_at', extract(epoch FROM last_failed_time),
            'in_recovery', pg_is_in_recovery(), 'now', extract(epoch FROM now()))
       FROM pg_stat_archiver" >"$work/archiver" 2>/dev/null &
# Rows written per table of the app's database since the statistics began (inserted, updated,
# deleted): read beside a backup and again later, the difference is what a restore to that
# backup would lose (inv rollback --restore lists it). Reset by a crash or a restore.
psql -X -A -t -q -h "$PGBACKREST_PG1_SOCKET_PATH" -p "$PGBACKREST_PG1_PORT" -U "$PGBACKREST_PG1_USER" \
    -d "${POSTGRES_DB:-postgres}" -c \
    "SELECT coalesce(json_object_agg(schemaname || '.' || relname, json_build_array(n_tup_ins, n_tup_upd, n_tup_del)),
                     '{}')
       FROM pg_stat_user_tables" >"$work/writes" 2>/dev/null &
ready=$(find "$PGBACKREST_PG1_PATH/pg_wal/archive_status" -name '*.ready' 2>/dev/null | wc -l)
info_error=""
if ! wait "$info_pid"; then
    info_error=$(cat "$work/info"); info=null
else
    info=$(cat "$work/info")
    if ! printf '%s' "$info" | jq -e . >/dev/null 2>&1; then
        info_error="$info"; info=null
    fi
fi
wait
archiver=$(cat "$work/archiver"); [ -n "$archiver" ] || archiver=null
writes=$(cat "$work/writes"); [ -n "$writes" ] || writes=null
# The newest timeline and its history: after a restore, the repository holds timelines the live
# database did not come from, and a restore to "latest" or to a time must start from a backup on
# the live one's history (deploy/backups.py chooses it). The newest timeline is the highest of the
# newest WAL segment's and of the history files: a timeline just promoted has its history file in
# the repository before its first segment (archive_timeout later), and PostgreSQL follows it.
timeline=null
newest=$(printf '%s' "$info" | jq -r '[.[0].archive[]? | select(.max != null) | {id, max}] | max_by(.max) // empty | "\(.id) \(.max[0:8])"' 2>/dev/null)
if [ -n "$newest" ]; then
    read -r archive_id tli <<<"$newest"
    newest_history=$(sed -n "s|^$archive_id/\([0-9A-F]\{8\}\)\.history\$|\1|p" "$work/histories" | sort -r | head -n 1)
    if [ -n "$newest_history" ] && [[ "$newest_history" > "$tli" ]]; then
        tli="$newest_history"
    fi
    text=""
    if [ "$tli" != "00000001" ]; then
        text=$(pgbackrest repo-get "archive/$PGBACKREST_STANZA/$archive_id/$tli.history" 2>/dev/null) || text=""
    fi
    timeline=$(jq -n --arg id "$tli" --arg history "$text" '{id: $id, history: $history}')
fi
schedule=$(cat "${BACKUP_STATUS_FILE:-/tmp/backup-schedule.json}" 2>/dev/null) || schedule=null
printf '%s' "$schedule" | jq -e . >/dev/null 2>&1 || schedule=null

jq -n --arg repo "$PGBACKREST_REPO1_TYPE" --arg info_error "$info_error" --argjson info "$info" \
    --argjson archiver "$archiver" --argjson ready "$ready" --argjson schedule "$schedule" \
    --argjson timeline "$timeline" --argjson writes "$writes" \
    --argjson now "$(date +%s)" \
    '{repo: $repo, info: $info, info_error: $info_error, archiver: $archiver,
      wal_ready_segments: $ready, schedule: $schedule, timeline: $timeline, writes: $writes, now: $now}'
