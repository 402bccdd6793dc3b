"""The backups' model (deploy/backups.py, pure): restore targets as operators type them, the
recoverable window, verify's checks on a repository, and the fix named for pgBackRest's errors."""
from datetime import datetime, timezone

import pytest

from deploy import backups
from deploy.backups import RestoreInputError

NOW = 1_796_570_000.0      # 2026-12-06 around 14:33 UTC


def status(**values):
    doc = {"repo": "s3", "info": [{"name": "main", "status": {"code": 0, "message": "ok"}, "backup": [
        {"label": "20261206-010000F", "type": "full", "timestamp": {"start": NOW - 7300, "stop": NOW - 7200},
         "info": {"size": 100, "repository": {"delta": 10}}, "archive": {"start": "A", "stop": "B"}}],
        "archive": [{"min": "000000010000000000000001", "max": "000000010000000000000009"}]}],
        "info_error": "", "archiver": {"last_archived_at": NOW - 20, "failed_count": 0}, "wal_ready_segments": 0,
        "schedule": None, "now": NOW}
    doc.update(values)
    import json
    return backups.parse_status(json.dumps(doc))


@pytest.mark.parametrize("typed", ["2026-12-06 03:00:00+00", "2026-12-06T03:00:00Z", "2026-12-06T04:00:00+01:00",
                                   "2026-12-06 03:00:00.000000+00"])
def test_a_target_in_iso_8601_with_a_zone_is_read_as_utc(typed):
    assert backups.parse_target(typed) == datetime(2026, 12, 6, 3, 0, tzinfo=timezone.utc)
    assert backups.pg_time(backups.parse_target(typed)) == "2026-12-06 03:00:00.000000+00"


@pytest.mark.parametrize("typed, says", [("2026-12-06 03:00:00", "no time zone"), ("yesterday+00", "not an ISO 8601 time")])
def test_a_target_without_a_zone_or_not_a_time_is_refused_with_an_example(typed, says):
    with pytest.raises(RestoreInputError) as err:
        backups.parse_target(typed)
    assert says in err.value.message and "2026-12-06 03:00:00+00" in err.value.hint


def test_targets_before_the_first_backup_or_in_the_future_are_refused_naming_the_window():
    s = status()
    with pytest.raises(RestoreInputError) as err:
        backups.check_target(s, datetime.fromtimestamp(NOW - 8000, timezone.utc))
    assert "before the first backup ended" in err.value.message and "recoverable window is" in err.value.hint
    with pytest.raises(RestoreInputError) as err:
        backups.check_target(s, datetime.fromtimestamp(NOW + 60, timezone.utc))
    assert "in the future" in err.value.message
    backups.check_target(s, datetime.fromtimestamp(NOW - 60, timezone.utc))     # inside: accepted


def test_the_window_runs_from_the_first_backups_end_to_the_last_archived_wal():
    s = status()
    assert s.earliest == datetime.fromtimestamp(NOW - 7200, timezone.utc)
    assert s.latest == datetime.fromtimestamp(NOW - 20, timezone.utc)
    with pytest.raises(RestoreInputError) as err:
        s.find("20261206-020000F")
    assert "20261206-010000F" in err.value.hint


def test_checks_pass_for_a_fresh_backup_in_a_bucket_and_warn_for_one_on_the_droplet_or_too_old():
    got = {c.name: c.status for c in backups.checks(status())}
    assert got == {"backups: off the droplet": "pass", "backups: last backup": "pass", "backups: WAL archiving": "pass"}
    old = status(repo="posix", now=NOW + 30 * 3600)
    got = {c.name: c.status for c in backups.checks(old)}
    assert got["backups: off the droplet"] == "warn" and got["backups: last backup"] == "warn"


def test_failing_archiving_fails_verify_and_reports_the_queue():
    s = status(archiver={"last_archived_at": NOW - 600, "last_failed_at": NOW - 5, "failed_count": 4},
               wal_ready_segments=12)
    wal = next(c for c in backups.checks(s) if c.name == "backups: WAL archiving")
    assert wal.status == "fail" and "12 WAL segment(s) (192 MiB) wait on the droplet" in wal.message


LOCKED = """2026-12-06 18:27:34.000 P00   INFO: backup command begin 2.45: --exec-id=1 --log-level-console=info --pg1-path=/var/lib/postgresql/data --repo1-cipher-pass=<redacted> --repo1-cipher-type=aes-256-cbc --repo1-type=s3 --stanza=main --type=full
ERROR: [050]: unable to acquire lock on file '/tmp/pgbackrest/main-backup.lock': Resource temporarily unavailable
       HINT: is another pgBackRest process running?
"""


def test_the_fix_follows_the_error_line_not_the_options_pgbackrest_echoes():
    fix = backups.repository_fix(LOCKED)
    assert "BACKUP_CIPHER_PASS" not in fix and "another backup is running" in fix
    assert "SPACES_KEY" in backups.repository_fix("ERROR: [039]: HTTP request failed with 403 (Forbidden): InvalidAccessKeyId")
    assert "BACKUP_CIPHER_PASS" in backups.repository_fix("INFO: begin --repo1-cipher-type=aes-256-cbc\n"
                                                          "ERROR: [095]: unable to read: cipher header invalid")


def _set(label, stop, wal, lsn_stop):
    return {"label": label, "type": "diff", "timestamp": {"start": stop - 5, "stop": stop},
            "info": {"size": 1, "repository": {"delta": 1}}, "archive": {"start": wal, "stop": wal},
            "lsn": {"start": "0/1", "stop": lsn_stop}}


def _branched(timeline):
    """A full backup (timeline 1), the backup before a restore (1), one on the timeline that
    restore made (2) and then undone from the second backup: the live timeline is 3."""
    info = [{"name": "main", "status": {"code": 0, "message": "ok"}, "backup": [
        _set("F", NOW - 900, "000000010000000000000002", "0/2000100"),
        _set("PRE", NOW - 600, "000000010000000000000004", "0/4000100"),
        _set("ABANDONED", NOW - 300, "000000020000000000000004", "0/4000100")],
        "archive": [{"min": "000000010000000000000001", "max": "000000030000000000000005"}]}]
    return status(info=info, timeline=timeline)


def test_a_restore_starts_from_the_newest_backup_on_the_live_timelines_history():
    s = _branched({"id": "00000003", "history": "1\t0/4000100\treached consistency"})
    assert [s.on_live_history(b) for b in s.backups] == [True, True, False]
    assert s.restore_base().label == "PRE"
    assert s.restore_base(before=datetime.fromtimestamp(NOW - 700, timezone.utc)).label == "F"
    assert s.restore_base(before=datetime.fromtimestamp(NOW - 1000, timezone.utc)) is None


def test_a_backup_past_the_point_its_timeline_was_left_is_off_the_history():
    s = _branched({"id": "00000003", "history": "1\t0/3000000\tbefore 2026-12-06 14:00:00+00"})
    assert [b.label for b in s.backups if s.on_live_history(b)] == ["F"]


def test_without_a_timeline_in_the_status_every_backup_counts():
    s = _branched(None)          # an image from before the timeline was reported
    assert s.restore_base().label == "ABANDONED"
