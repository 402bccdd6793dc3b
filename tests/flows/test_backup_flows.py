"""inv backup, inv backups and inv restore end to end against the fake edges (pgBackRest in the
fake postgres container: tests/flows/fake_backups.py): what each prints and records, the
restore's order (a backup first, the writers stopped, the last WAL archived, then the restore,
then the live release started again), and every refusal leaving the database untouched."""
from __future__ import annotations

import io
import json
from datetime import datetime, timedelta, timezone

import pytest

from deploy import flows
from remote.lock import LockHolder
from tests.flows.fake_swarm import docr, use_swarm  # noqa: F401 - docr is a fixture

WRITERS = {"api", "django", "worker", "beat", "flower"}


@pytest.fixture
def deployed(world):
    world.cloud.exists = False
    out = world.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    return world


def restore(world, yes=True, ask=None, **target):
    kwargs = {"yes": yes} | ({"ask": ask} if ask else {})
    return world.invoke("restore", flows.restore, mode="restore",
                        target=flows.RestoreTarget.of(target.get("latest", False), target.get("label"), target.get("to")),
                        **kwargs)


def untouched(world, backups_before: int) -> bool:
    db = world.docker.database
    return (db.restores == [] and len(db.backups) == backups_before and db.checks == 0
            and WRITERS | {"postgres"} <= set(world.docker.containers))


def test_inv_backup_takes_a_full_backup_first_then_differentials_and_prints_each(deployed):
    out = deployed.invoke("backup", flows.backup_now, mode="backup")
    assert out.exit_code == 0, out.message
    first = out.manifest["details"]["backup"]
    assert first["type"] == "full" and f"backup {first['label']}: full" in out.message
    out = deployed.invoke("backup", flows.backup_now, mode="backup")
    assert out.manifest["details"]["backup"]["type"] == "diff"
    out = deployed.invoke("backup", flows.backup_now, mode="backup", full=True)
    assert out.manifest["details"]["backup"]["type"] == "full"
    assert not deployed.lock_held()


def test_inv_backups_lists_labels_and_the_recoverable_window_and_speaks_json(deployed):
    deployed.docker.database.full("20261206-010000F")
    out = deployed.invoke("backups", flows.list_backups, mode="list")
    assert "20261206-010000F  full" in out.message and "recoverable: " in out.message
    assert "the droplet itself (not safe from its loss)" in out.message
    out = deployed.invoke("backups", flows.list_backups, mode="list", as_json=True)
    doc = json.loads(out.message[out.message.index("{"):out.message.rindex("}") + 1])
    assert doc["repository"] == "droplet" and [b["label"] for b in doc["backups"]] == ["20261206-010000F"]
    assert doc["window"][0] is not None


def test_a_restore_backs_up_first_stops_the_writers_archives_restores_and_starts_the_release_again(deployed):
    db = deployed.docker.database.full()
    live = deployed.current()
    out = restore(deployed, latest=True)
    assert out.exit_code == 0, out.message
    names = out.step_names
    assert names.index("backup") < names.index("stop-writers") < names.index("restore") < names.index("checks")
    undo = db.backups[-1]["label"]
    assert f"`inv restore --backup {undo}` undoes this restore" in out.message
    # From the backup just taken: on the live timeline, with the least WAL left to replay.
    assert db.checks == 1 and db.restores == [["--log-level-console=info", "--delta", f"--set={undo}", "restore"]]
    stops = [argv for argv in deployed.docker.calls if argv[1:2] == ["compose"] and "stop" in argv]
    assert set(stops[0][stops[0].index("stop") + 1:]) == WRITERS and stops[1][-1] == "postgres"
    assert WRITERS | {"postgres"} <= set(deployed.docker.containers)     # all started again
    assert deployed.current() == live and not deployed.lock_held()
    assert not (deployed.base / "restore-pending.json").exists()


def test_a_restore_to_a_time_passes_it_exclusive_and_in_utc(deployed):
    deployed.docker.database.full(stop=datetime.now(timezone.utc).timestamp() - 7200)
    moment = (datetime.now(timezone.utc) - timedelta(minutes=30)).astimezone(timezone(timedelta(hours=2)))
    out = restore(deployed, to=moment.isoformat())
    assert out.exit_code == 0, out.message
    (args,) = deployed.docker.database.restores
    assert f"--target={moment.astimezone(timezone.utc):%Y-%m-%d %H:%M:%S}" in " ".join(args)
    assert "--target-exclusive" in args and "--type=time" in args


@pytest.mark.parametrize("target, words", [
    ({"label": "20990101-000000F"}, ["no backup is labelled '20990101-000000F'", "20261206-030000F"]),
    ({"to": "2026-12-06 03:00:00"}, ["has no time zone"]),
    ({"to": "2000-01-01T00:00:00Z"}, ["before the first backup ended", "recoverable window"]),
    ({"to": "2099-01-01T00:00:00Z"}, ["in the future"]),
])
def test_a_target_no_backup_can_reach_is_refused_before_anything_changes(deployed, target, words):
    deployed.docker.database.full()
    out = restore(deployed, **target)
    assert out.exit_code == 2, out.message
    for w in words:
        assert w in out.message
    assert untouched(deployed, 1) and not deployed.lock_held()


def test_without_a_terminal_or_yes_a_restore_asks_nothing_and_changes_nothing(deployed, monkeypatch):
    deployed.docker.database.full()
    monkeypatch.setattr("sys.stdin", io.StringIO(""))
    out = restore(deployed, yes=False, latest=True)
    assert out.exit_code == 2 and "no terminal to ask on" in out.message and "--yes" in out.message
    assert untouched(deployed, 1)


def test_a_wrong_typed_name_changes_nothing_and_the_right_one_restores(deployed, monkeypatch):
    deployed.docker.database.full()

    class Tty(io.StringIO):
        def isatty(self):
            return True
    monkeypatch.setattr("sys.stdin", Tty(""))
    out = restore(deployed, yes=False, ask=lambda prompt: "stackdeploy-2", latest=True)
    assert out.exit_code == 2 and "nothing was changed" in out.message
    assert untouched(deployed, 1)
    asked: list[str] = []
    out = restore(deployed, yes=False, ask=lambda prompt: asked.append(prompt) or "stackdeploy-1", latest=True)
    assert out.exit_code == 0, out.message
    assert "stackdeploy-1" in asked[0] and "replace the database" in asked[0]


def test_a_restore_that_fails_halfway_leaves_the_stack_stopped_and_says_how_to_finish_or_undo(deployed):
    db = deployed.docker.database.full()
    db.restore_fails = "ERROR: [047]: unable to write: [28] No space left on device"
    out = restore(deployed, latest=True)
    assert out.exit_code == 1
    undo = db.backups[-1]["label"]
    assert "No space left on device" in out.message and "run the same `inv restore` again (it resumes)" in out.message
    assert f"inv restore --backup {undo}" in out.message
    assert "postgres" not in deployed.docker.containers and not WRITERS & set(deployed.docker.containers)
    marker = json.loads((deployed.base / "restore-pending.json").read_text())
    assert marker["undo"] == undo and not deployed.lock_held()
    # The way out it names works: the same command, with the stack still stopped, finishes the job.
    db.restore_fails = ""
    out = restore(deployed, latest=True)
    assert out.exit_code == 0, out.message
    assert f"an earlier restore to the newest archived transaction did not finish" in out.message
    assert f"backup {undo}" in out.message
    assert WRITERS | {"postgres"} <= set(deployed.docker.containers)
    assert not (deployed.base / "restore-pending.json").exists()


def test_a_restore_while_another_holds_the_lock_is_refused(deployed):
    deployed.docker.database.full()
    (deployed.base / "lock").mkdir()
    holder = LockHolder(who="alice@laptop", when="2026-11-26T10:00:00+00:00", release="(restore)",
                        command="inv restore", pid=1)
    (deployed.base / "lock" / "holder.json").write_text(json.dumps(holder.__dict__))
    out = restore(deployed, latest=True)
    assert out.exit_code == 5 and "held by alice@laptop" in out.message
    assert untouched(deployed, 1)


@pytest.mark.parametrize("problem, fix", [
    ("HTTP 403 InvalidAccessKeyId: The AWS Access Key Id you provided does not exist", "Check SPACES_KEY and SPACES_SECRET"),
    ("HTTP 404 NoSuchBucket: The specified bucket does not exist", "Create the bucket SPACES_BUCKET"),
])
def test_an_unusable_repository_fails_verify_backup_and_restore_with_the_fix(deployed, problem, fix):
    db = deployed.docker.database.full()
    db.problem = problem
    for out in (deployed.invoke("verify", flows.verify_only, mode="verify"),
                deployed.invoke("backup", flows.backup_now, mode="backup"),
                restore(deployed, latest=True)):
        assert out.exit_code != 0 and fix in out.message, out.message
    assert db.restores == [] and not deployed.lock_held()


def test_verify_reports_wal_waiting_on_the_droplet_when_archiving_fails(deployed):
    deployed.docker.database.full().archive_fails = True
    out = deployed.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 1
    assert "7 WAL segment(s) (112 MiB) wait on the droplet" in out.message and "BACKUP_WAL_QUEUE_MAX" in out.message


def test_verify_warns_that_backups_on_the_droplet_share_its_fate(deployed):
    deployed.docker.database.full()
    out = deployed.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code == 0
    assert "backups are on the same droplet as the data" in out.message and "SPACES_BUCKET" in out.message


def test_on_a_swarm_backups_and_a_restore_run_on_node_one_and_the_stack_comes_back_with_its_replicas(world, docr):
    world.cloud.exists = False
    swarm = use_swarm(world, docr, nodes=3)
    assert world.invoke("deploy", flows.deploy).exit_code == 0
    out = world.invoke("backup", flows.backup_now, mode="backup")
    assert out.exit_code == 0 and out.manifest["details"]["backup"]["type"] == "full", out.message
    replicas = {name: svc.replicas for name, svc in swarm.services.items()}
    db = world.docker.database
    out = restore(world, latest=True)
    assert out.exit_code == 0, out.message
    names = out.step_names
    assert names.index("backup") < names.index("stop-writers") < names.index("restore") < names.index("stack-up")
    undo = db.backups[-1]["label"]
    assert db.restores == [["--log-level-console=info", "--delta", f"--set={undo}", "restore"]]
    # the writers and then postgres were scaled to no task; the release's stack file gave them back
    scaled = [argv[4:] for argv in world.docker.calls if argv[1:4] == ["service", "scale", "-d"]]
    assert {"stackdeploy_api=0", "stackdeploy_worker=0", "stackdeploy_beat=0"} <= set(scaled[0])
    assert scaled[1] == ["stackdeploy_postgres=0"]
    assert any(argv[1:3] == ["service", "ps"] for argv in world.docker.calls)   # waited for the tasks to stop
    assert {name: svc.replicas for name, svc in swarm.services.items()} == replicas
    assert not world.lock_held()


# -- disaster recovery: inv deploy --restore ------------------------------------------------------
SPACES = {"SPACES_BUCKET": "acme-backups", "SPACES_REGION": "ams3", "SPACES_KEY": "DO00QWERTYUIOPASDFGH",
          "SPACES_SECRET": "s3cret-Vb7Nq2Lx9Rt4Wm8Kp3Zs6Yd1Hf5Jc0", "BACKUP_CIPHER_PASS": "Zq8wX3vN5tR7yB2mK4pL9sD6fG1hJ0aQ"}


def recover(world, yes=True, ask=None, **target):
    kwargs = {"yes": yes} | ({"ask": ask} if ask else {})
    return world.invoke("deploy", flows.recover, mode="restore",
                        target=flows.RestoreTarget.of(target.get("latest", False), target.get("label"), target.get("to")),
                        **kwargs)


@pytest.fixture
def lost(world):
    """The droplet is gone; its backups are in Spaces (the fake repository keeps them)."""
    world.set_env(**SPACES)
    world.cloud.exists = False
    world.docker.database.repo = "s3"
    world.docker.database.full("20261206-010000F", stop=datetime.now(timezone.utc).timestamp() - 7200)
    return world


def test_recovery_fills_the_new_droplets_database_before_anything_starts(lost):
    out = recover(lost, latest=True)
    assert out.exit_code == 0, out.message
    names = out.step_names
    assert names.index("build") < names.index("restore") < names.index("up"), names
    (args,) = lost.docker.database.restores
    # To the end of the WAL, from the newest backup on the live timeline (named: pgBackRest's own
    # pick may be on a timeline an earlier restore abandoned).
    assert "--delta" in args and "--type=time" not in args and "--set=20261206-010000F" in args
    assert out.manifest["details"]["restore"]["target"] == "the newest archived transaction"
    assert {"postgres", "api"} <= set(lost.docker.containers) and lost.current() is not None
    assert "provision" in lost.cloud.calls   # a new droplet


def test_recovery_to_a_label_or_a_moment_passes_the_target(lost):
    out = recover(lost, label="20261206-010000F")
    assert out.exit_code == 0, out.message
    assert "--set=20261206-010000F" in lost.docker.database.restores[-1]


def test_recovery_onto_a_stack_with_a_live_release_is_refused_before_the_push(lost):
    out = lost.invoke("deploy", flows.deploy)
    assert out.exit_code == 0, out.message
    live = lost.current()
    out = recover(lost, latest=True)
    assert out.exit_code == 2, out.message
    assert "already runs release" in out.message and "inv restore --latest" in out.message
    assert lost.docker.database.restores == [] and lost.current() == live and "push" not in out.step_names


def test_recovery_without_backups_off_the_droplet_is_refused_before_a_droplet_is_made(world):
    world.cloud.exists = False
    out = recover(world, latest=True)
    assert out.exit_code == 2
    assert "SPACES_BUCKET is not set" in out.message and not any(c.startswith("provision") for c in world.cloud.calls)


def test_recovery_with_no_terminal_and_no_yes_makes_nothing(lost):
    out = recover(lost, yes=False, latest=True)
    assert out.exit_code == 2 and "no terminal" in out.message
    assert not any(c.startswith("provision") for c in lost.cloud.calls) and lost.docker.database.restores == []


def test_a_recovery_target_in_the_future_is_refused_and_nothing_goes_live(lost):
    out = recover(lost, to="2099-01-01T00:00:00Z")
    assert out.exit_code == 2 and "in the future" in out.message, out.message
    assert lost.docker.database.restores == [] and lost.current() is None


def test_a_failed_recovery_leaves_nothing_live_and_the_same_command_finishes_it(lost):
    lost.docker.database.restore_fails = "ERROR: [039]: HTTP request failed: connection reset"
    out = recover(lost, latest=True)
    assert out.exit_code != 0 and "nothing is live" in out.message and "inv deploy --restore" in out.message
    assert lost.current() is None
    lost.docker.database.restore_fails = ""
    out = recover(lost, latest=True)
    assert out.exit_code == 0, out.message
    assert len(lost.docker.database.restores) == 2 and lost.current() is not None


def test_inv_backup_while_the_schedules_backup_runs_waits_for_it_then_takes_its_own(deployed, monkeypatch):
    from deploy import backup_steps
    monkeypatch.setattr(backup_steps, "BUSY_RETRY_SECONDS", 0.01)
    db = deployed.docker.database.full()
    db.busy = 3
    out = deployed.invoke("backup", flows.backup_now, mode="backup")
    assert out.exit_code == 0, out.message
    assert "another backup is running (the schedule's); waiting for it to end" in out.message
    assert db.busy == 0 and len(db.backups) == 2 and out.manifest["details"]["backup"]["type"] == "diff"


def test_recovery_onto_a_swarm_fills_node_one_before_anything_starts_then_grows_the_swarm(lost, docr):
    repository = lost.docker.database           # the backups in Spaces
    swarm = use_swarm(lost, docr, nodes=3)
    lost.docker.database = repository
    out = recover(lost, latest=True)
    assert out.exit_code == 0, out.message
    names = out.step_names
    # node 1 as one droplet: restored before its first start; then the swarm forms and takes the stack over
    assert names.index("build") < names.index("restore") < names.index("up") < names.index("swarm") \
        < names.index("stack-up"), names
    (args,) = lost.docker.database.restores
    assert "--set=20261206-010000F" in args
    assert sorted(n.hostname for n in swarm.nodes.values()) == ["stackdeploy-1", "stackdeploy-1-2", "stackdeploy-1-3"]
    assert {"postgres", "api"} <= set(swarm.running())


def test_with_postgres_stopped_verify_names_it_and_adds_no_backup_failure_of_its_own(deployed):
    """The backup checks read the running server: with none there the services say why, and the
    backup step says it had nothing to read instead of failing a check of its own."""
    deployed.docker.database.full()
    stopped = deployed.docker.containers["postgres"]    # `docker stop`: listed as exited
    stopped.state, stopped.health, stopped.exit_code = "exited", "", 0
    out = deployed.invoke("verify", flows.verify_only, mode="verify")
    assert out.exit_code != 0 and "postgres" in out.message, out.message
    checks = [c["name"] for c in out.manifest["checks"] or [] if c["status"] == "fail"]
    assert not [c for c in checks if c.startswith("backups")], checks
    steps = {s["name"]: s for s in out.manifest["steps"]}
    assert "backup-checks" not in steps or steps["backup-checks"]["status"] == "skipped"
