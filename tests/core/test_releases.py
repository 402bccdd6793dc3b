"""Which release a rollback goes to, and what stands in its way (deploy/releases.py: pure)."""
from deploy import releases
from remote.sync import ReleaseInfo


def _r(rid: str, applied=None, backup=None, current=False) -> ReleaseInfo:
    meta = {"images": {"api": {"ref": "a", "id": "x"}}}
    if applied:
        meta["migrations"] = {"applied": applied, "backup": backup}
    return ReleaseInfo(rid, None, "success", current, meta)


def test_only_migrations_of_releases_newer_than_the_target_stand_in_the_way():
    found = [_r("20261201T0000Z-a", ["notes.0001_initial"]), _r("20261202T0000Z-b"),
             _r("20261203T0000Z-c", ["notes.0002_tags"], "20261203-010000F_20261203-020000I"),
             _r("20261204T0000Z-d", ["notes.0003_drop"], None, current=True)]
    assert releases.migrations_in_the_way(found, found[1]) == [
        ("20261203T0000Z-c", ["notes.0002_tags"], "20261203-010000F_20261203-020000I"),
        ("20261204T0000Z-d", ["notes.0003_drop"], None)]
    assert releases.migrations_in_the_way(found, found[2]) == [("20261204T0000Z-d", ["notes.0003_drop"], None)]


def test_without_a_backup_before_them_the_refusal_names_a_point_in_time_restore():
    target = _r("20261202T0000Z-b")
    err = releases.schema_refusal(target, [("20261204T0000Z-d", ["notes.0003_drop"], None)], named=True)
    assert "inv restore --to '<a moment before release 20261204T0000Z-d migrated>'" in err.hint
    assert "inv rollback --release 20261202T0000Z-b --keep-schema" in err.hint


def test_with_only_a_rolled_back_release_before_the_live_one_the_refusal_names_it_for_by_name():
    rejected = ReleaseInfo("20261201T0000Z-a", None, "rolled-back", False, {"images": {"api": {"ref": "a", "id": "x"}}})
    found = [rejected, _r("20261202T0000Z-b", current=True)]
    try:
        releases.rollback_target(found, None)
    except releases.OperatorError as err:
        assert "ran healthy without being rolled back from" in err.message
        assert "`inv rollback --release 20261201T0000Z-a`" in err.hint
    else:
        raise AssertionError("a release rolled back from was picked without being named")
    assert releases.rollback_target(found, "20261201T0000Z-a") is rejected


def test_migrations_a_rollback_took_back_no_longer_stand_in_the_way():
    undone = _r("20261203T0000Z-c", ["notes.0002_tags"], "label")
    undone.meta["migrations"]["undone"] = "unapplied by `inv rollback --unapply` (run)"
    found = [_r("20261202T0000Z-b"), undone, _r("20261204T0000Z-d", current=True)]
    assert releases.migrations_in_the_way(found, found[0]) == []
