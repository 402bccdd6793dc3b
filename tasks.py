"""Invoke tasks: parse flags, then hand over to deploy.flows inside a Run. Nothing else."""
from __future__ import annotations

import sys

from invoke import Collection, task

from deploy import flows
from deploy.backups import RestoreInputError
from deploy.flows.logs import DEFAULT_TAIL
from deploy.settings import Flags
from deploy.taskrun import run_task

COMMON_HELP = {
    "env_file": "Env file with secrets and settings (default ./.env).",
    "no_timestamp": "Write into local_run_logs/latest/ instead of a new timestamped folder.",
}


def _after_dashes() -> list[str]:
    """What follows `--` on the command line: Invoke swallows it, so tasks read it here."""
    return sys.argv[sys.argv.index("--") + 1:] if "--" in sys.argv else []


def _flags(no_timestamp: bool = False, skip_allowlist: bool = False, deploy_env: str | None = None,
           skip_backup: bool = False) -> Flags:
    flags: Flags = {}
    if skip_backup:
        flags["SKIP_BACKUP"] = True
    if no_timestamp:
        flags["LOGS_TIMESTAMP"] = False
    if skip_allowlist:
        flags["SKIP_ALLOWLIST"] = True
    if deploy_env:
        flags["DEPLOY_ENV"] = deploy_env
    return flags


@task(help={**COMMON_HELP,
            "update_only": "Roll forward in place: no provisioning, delta push, rebuild only what changed, data kept.",
            "plan": "Show what the deploy would do (droplet, firewall, DNS, files, builds, recreated services, "
                    "migrations) and change nothing; also with --update-only.",
            "skip_allowlist": "Do not create or update the Cloud Firewall SSH allowlist.",
            "deploy_env": "Override DEPLOY_ENV (production, staging, development).",
            "nodes": "Droplets to run on (NODES): 1 is one droplet with Compose; more form a Docker Swarm. Unset: as "
                     "many as the cluster has (1 for a new stack).",
            "restore": "Disaster recovery: fill the new droplet's database from the backups in Spaces before it "
                       "serves: 'latest' or a backup's label.",
            "restore_to": "Disaster recovery to a moment (ISO 8601 with a zone), instead of --restore.",
            "yes": "With --restore/--restore-to: do not ask for the droplet's name (needed without a terminal).",
            "skip_backup": "Apply new migrations without the backup taken before them (SKIP_BACKUP; written in "
                           "run.json and the summary)."})
def deploy(c, update_only=False, plan=False, env_file=None, skip_allowlist=False, no_timestamp=False,
           deploy_env=None, nodes=None, restore=None, restore_to=None, yes=False, skip_backup=False):
    """Provision (or find) the droplet, ship the stack, start it, wait until healthy, verify, collect."""
    recovering = bool(restore or restore_to)
    mode = ("update" if update_only else "restore" if recovering else "full") + ("-plan" if plan else "")
    flags = _flags(no_timestamp, skip_allowlist, deploy_env, skip_backup)
    if nodes is not None:
        flags["NODES"] = nodes  # text from the command line: load_settings converts and checks it
    if recovering:
        def flow(run, s):
            if restore and restore_to:
                raise RestoreInputError("--restore and --restore-to name two targets; a recovery goes to one",
                                        "keep --restore latest|LABEL, or --restore-to TIMESTAMP")
            if update_only or plan:
                raise RestoreInputError("--restore fills a new droplet: it goes with neither --update-only nor --plan",
                                        "drop --update-only/--plan; to restore a running stack use `inv restore`")
            target = flows.RestoreTarget.of(restore == "latest", None if restore in (None, "latest") else restore, restore_to)
            flows.recover(run, s, target, yes=yes)
        run_task(c, "deploy", mode, flags, env_file, flow)
        return
    flow = flows.plan if plan else flows.deploy
    run_task(c, "deploy", mode, flags, env_file, lambda run, s: flow(run, s, update_only=update_only))


@task(help={**COMMON_HELP, "skip_allowlist": "Do not create or update the Cloud Firewall SSH allowlist.",
            "no_wait": "Return once the droplet(s) exist, without waiting for cloud-init to install Docker.",
            "nodes": "Droplets to provision (NODES): 1 is one droplet; more form a cluster for a Docker Swarm."})
def provision(c, env_file=None, skip_allowlist=False, no_timestamp=False, no_wait=False, nodes=None):
    """Find or create the droplet(s), firewall allowlist and DNS; end when each is ready for `inv push`.

    Ready: cloud-init has finished and Docker answers the deploy user (--no-wait returns before)."""
    flags = _flags(no_timestamp, skip_allowlist)
    if nodes is not None:
        flags["NODES"] = nodes
    run_task(c, "provision", "full", flags, env_file,
             lambda run, s: flows.provision_only(run, s, wait=not no_wait))


@task(help=COMMON_HELP)
def push(c, env_file=None, no_timestamp=False):
    """Upload the stack as a new release and build its images (on node 1 of a swarm); nothing live changes.

    `inv up` puts it live."""
    run_task(c, "push", "update", _flags(no_timestamp), env_file, flows.push_only)


@task(help={**COMMON_HELP, "skip_backup": "Apply new migrations without the backup taken before them (SKIP_BACKUP)."})
def up(c, env_file=None, no_timestamp=False, skip_backup=False):
    """Put the release `inv push` left live, with a deploy's zero-downtime cutover, or restart the live one.

    With nothing newer pushed, the live release starts again (after a reboot, a container removed by hand)."""
    run_task(c, "up", "update", _flags(no_timestamp, skip_backup=skip_backup), env_file, flows.up_only)


@task(help=COMMON_HELP)
def verify(c, env_file=None, no_timestamp=False):
    """Run the outside-in checks and collect remote state into a new artifact set."""
    run_task(c, "verify", "verify", _flags(no_timestamp), env_file, flows.verify_only)


@task(help=COMMON_HELP)
def collect(c, env_file=None, no_timestamp=False):
    """Collect remote state (containers, Traefik config, env snapshots, logs) without the HTTP checks."""
    run_task(c, "collect", "collect", _flags(no_timestamp), env_file, flows.collect_only)


@task(help={**COMMON_HELP, "release": "Release id to return to (default: the one before the current release).",
            "keep_schema": "Go back over migrations applied since that release, leaving the schema as it is (for "
                           "migrations known to be backward compatible); without it such a rollback is refused.",
            "restore": "Go back over migrations applied since that release by restoring the backup taken before "
                       "them: lists what was written since (lost), then asks for the droplet's name.",
            "unapply": "Go back over migrations applied since that release by unapplying them (the live release "
                       "runs `migrate APP TARGET`), only when Django can reverse each and none loses a row.",
            "yes": "With --restore: do not ask for the droplet's name (needed without a terminal)."})
def rollback(c, release=None, env_file=None, no_timestamp=False, keep_schema=False, restore=False, unapply=False,
             yes=False):
    """Put the previous (or a named) healthy release live again without a build, then verify and collect."""
    run_task(c, "rollback", "rollback", _flags(no_timestamp), env_file,
             lambda run, s: flows.rollback(run, s, release, keep_schema=keep_schema, restore=restore, yes=yes,
                                           unapply=unapply))


@task(help=COMMON_HELP)
def releases(c, env_file=None, no_timestamp=False):
    """List the releases on the droplet (node 1 of a swarm) with their dates and outcomes (* = current)."""
    run_task(c, "releases", "list", _flags(no_timestamp), env_file, flows.list_releases)


@task(help={**COMMON_HELP, "full": "A full backup (default: a differential, or a full one when none exists yet)."})
def backup(c, full=False, env_file=None, no_timestamp=False):
    """Back up the database now (to SPACES_BUCKET, else the droplet); print its label, type, size and duration."""
    run_task(c, "backup", "backup", _flags(no_timestamp), env_file, lambda run, s: flows.backup_now(run, s, full=full))


@task(help={**COMMON_HELP, "json_": "Print the backups and the recoverable window as JSON."})
def backups(c, json_=False, env_file=None, no_timestamp=False):
    """List the database's backups (label, type, times, size, WAL range) and the window a restore can reach."""
    run_task(c, "backups", "list", _flags(no_timestamp), env_file,
             lambda run, s: flows.list_backups(run, s, as_json=json_))


@task(help={**COMMON_HELP,
            "latest": "Restore up to the newest archived transaction.",
            "backup": "Restore the backup with this label (`inv backups` lists them), to its end.",
            "to": "Restore up to this moment (ISO 8601 with a zone: '2026-12-06 03:00:00+00' or 2026-12-06T03:00:00Z); "
                  "transactions committed before it are kept, none after.",
            "yes": "Do not ask for the droplet's name (needed without a terminal)."})
def restore(c, latest=False, backup=None, to=None, yes=False, env_file=None, no_timestamp=False):
    """Replace the database with a backup or a point in time, after backing up the current state; then verify.

    The services that write stop while it runs; the run names the backup that undoes it."""
    run_task(c, "restore", "restore", _flags(no_timestamp), env_file,
             lambda run, s: flows.restore(run, s, flows.RestoreTarget.of(latest, backup, to), yes=yes))


@task(help={**COMMON_HELP, "dry_run": "List what would be removed (release folders, images, build cache) and "
                                      "remove nothing."})
def prune(c, dry_run=False, env_file=None, no_timestamp=False):
    """Remove old releases, their images, dangling images and old build cache, on every node.

    The pruning each healthy release ends with: the live release and the rollback targets
    (RELEASES_KEEP) stay with their images, and no volume is ever touched."""
    run_task(c, "prune", "dry-run" if dry_run else "remove", _flags(no_timestamp), env_file,
             lambda run, s: flows.prune(run, s, dry_run=dry_run))


@task(help={**COMMON_HELP,
            "yes": "Do not ask for the droplet's name: remove what the listing shows (for scripts).",
            "include_data": "Also remove the data: the stack's DigitalOcean volumes and snapshots, and the "
                            "droplets' backups (backups in Spaces are never removed)."})
def destroy(c, yes=False, include_data=False, env_file=None, no_timestamp=False):
    """Remove what this stack created: droplets, firewall, DNS records, SSH key, known_hosts pins.

    Lists it all first, then asks for the droplet's name (or --yes); volumes and snapshots stay
    without --include-data. Another stack in the account is never touched."""
    run_task(c, "destroy", "with-data" if include_data else "keep-data", _flags(no_timestamp), env_file,
             lambda run, s: flows.destroy(run, s, yes=yes, include_data=include_data))


@task(name="status", help=COMMON_HELP)
def lock_status(c, env_file=None, no_timestamp=False):
    """Show who holds the deploy lock (one per cluster, on node 1), if anyone."""
    run_task(c, "lock-status", "lock", _flags(no_timestamp), env_file, flows.lock_status)


@task(name="release", help={**COMMON_HELP,
                             "if_stale": "Release only a lock whose holder is gone (its process on this machine "
                                         "ended, or older than LOCK_TTL); a live lock is refused, naming its holder."})
def lock_release(c, if_stale=False, env_file=None, no_timestamp=False):
    """Release the deploy lock (without --if-stale: force it, only when its holder is known to be gone)."""
    run_task(c, "lock-release", "lock", _flags(no_timestamp), env_file,
             lambda run, s: flows.lock_release(run, s, if_stale=if_stale))


@task(help={**COMMON_HELP, "json": "Print one JSON document (its schema: docs/day2.md) instead of the screen."})
def status(c, json=False, env_file=None, no_timestamp=False):
    """Show in one screen how the stack is: droplets, live release, services, last deploy, certificate, disk.

    Exit 0 healthy, 1 degraded (a service unhealthy, stopped or restarting), 2 could not tell."""
    run_task(c, "status", "status", _flags(no_timestamp), env_file,
             lambda run, s: flows.status(run, s, as_json=json), quiet=True)


@task(name="logs", iterable=["service"],
      help={**COMMON_HELP, "service": "A service to show (repeat it, or a,b; or names after --); default: all.",
            "follow": "Keep showing new lines until Ctrl-C.",
            "since": "Only lines since then: a duration (10m, 2h) or a UTC time (2026-12-06T13:00:00Z).",
            "tail": f"Lines per container to start with (default {DEFAULT_TAIL} without --since).",
            "grep": "Only lines matching this regular expression (matched after redaction)."})
def logs_(c, service=None, follow=False, since=None, tail=None, grep=None, env_file=None, no_timestamp=False):
    """Show the services' logs interleaved in time, secrets redacted; every node's on a swarm.

    inv logs -s api -s worker --since 10m, or inv logs --follow -- api worker."""
    services = [name for entry in (service or []) for name in entry.split(",") if name] + _after_dashes()
    run_task(c, "logs", "follow" if follow else "read", _flags(no_timestamp), env_file,
             lambda run, s: flows.logs(run, s, services=services, follow=follow, since=since, tail=tail, grep=grep),
             quiet=True)


@task(name="exec", positional=["service"], help={**COMMON_HELP, "service": "The service whose running container runs it."})
def exec_(c, service, env_file=None, no_timestamp=False):
    """Run a command in a running container of a service: inv exec SERVICE -- CMD ...

    A terminal when stdin is one; the command's exit status is the task's."""
    if service.startswith("-"):   # Invoke hands `inv exec --help` to the positional
        from invoke.exceptions import Exit
        raise Exit(message="usage: inv exec SERVICE -- CMD ...; `inv --help exec` shows the options",
                   code=0 if service in ("--help", "-h") else 2)
    argv = _after_dashes()
    run_task(c, "exec", "exec", _flags(no_timestamp), env_file,
             lambda run, s: flows.exec_in(run, s, service=service, argv=argv, tty=sys.stdin.isatty()), quiet=True)


@task(help=COMMON_HELP)
def manage(c, env_file=None, no_timestamp=False):
    """Run Django's manage.py in a one-off container of the live release: inv manage -- ARGS ...

    E.g. inv manage -- showmigrations, inv manage -- createsuperuser; its exit status is the task's."""
    argv = _after_dashes()
    run_task(c, "manage", "manage", _flags(no_timestamp), env_file,
             lambda run, s: flows.manage(run, s, argv=argv, tty=sys.stdin.isatty()), quiet=True)


@task(help=COMMON_HELP)
def shell(c, env_file=None, no_timestamp=False):
    """Open Django's shell in a one-off container of the live release."""
    run_task(c, "shell", "shell", _flags(no_timestamp), env_file,
             lambda run, s: flows.django_shell(run, s, tty=sys.stdin.isatty()), quiet=True)


@task(name="list", default=True)
def runs_list(c):
    """List past runs: time, task, mode, outcome, duration."""
    from deploy.report.runs import list_runs
    from deploy.taskrun import logs_dir

    for r in list_runs(logs_dir(c)):
        duration = f"{r.duration:.1f}s" if r.duration is not None else "-"
        print(f"{r.folder.name:45} {r.outcome:13} {duration:>9}")


@task(name="diff", help={"a": "Older run: folder name, unique prefix, path, 'previous' or 'latest'",
                         "b": "Newer run, same forms, as --b=REF (default: latest)"})
def runs_diff(c, a, b="latest"):
    """Show what changed between two runs' artifacts (Traefik config, containers, headers, checks)."""
    from invoke.exceptions import Exit

    from deploy.report.runs import diff_runs, resolve_run
    from deploy.taskrun import logs_dir

    try:
        print(diff_runs(resolve_run(logs_dir(c), a), resolve_run(logs_dir(c), b)), end="")
    except LookupError as exc:
        raise Exit(message=str(exc), code=2) from None


@task(name="rotate-ssh-key",
      help={**COMMON_HELP, "new_key": "The new key pair's private key (its .pub beside it), made with ssh-keygen."})
def rotate_ssh_key(c, new_key="", env_file=None, no_timestamp=False):
    """Replace the deploy SSH key on every node and in DigitalOcean, never without a working key.

    The new key is authorized and tried before the old one is removed (on the droplets and in
    the account); afterwards set SSH_KEY_PATH to the new key. Running it again finishes a
    rotation that was cut short."""
    run_task(c, "rotate-ssh-key", "rotate", _flags(no_timestamp), env_file,
             lambda run, s: flows.rotate_ssh_key(run, s, new_key=new_key))


lock = Collection("lock", lock_status, lock_release)
runs = Collection("runs", runs_list, runs_diff)
ns = Collection(deploy, provision, push, up, verify, collect, rollback, releases, backup, backups, restore, prune, destroy,
                status, logs_, exec_, manage, shell, rotate_ssh_key, lock, runs)
try:
    from lab.tasks import ns as lab_ns
except ImportError:  # the lab is optional for a cloud-only install
    lab_ns = None
if lab_ns is not None:
    ns.add_collection(lab_ns, "lab")
