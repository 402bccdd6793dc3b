"""`inv destroy`: remove exactly what this stack made, once it is listed and confirmed.

    token -> inventory (GET only) -> the listing -> the deploy lock on node 1 (when it answers SSH)
    -> the droplet's name typed (or --yes) -> remove: DNS records, droplets, firewall, SSH key,
    tags (and with --include-data the volumes and snapshots) -> forget the known_hosts pins

What counts as this stack's is deploy/cloud/teardown.py's; what is left, and why, is listed too.
A second destroy finds nothing and says so (exit 0); one that stopped half-way is finished by the
next. Refusals change nothing: no terminal and no --yes, or a wrong name typed (exit 2), droplet
backups without --include-data (exit 2), a deploy holding the lock (exit 5, naming it).
"""
from __future__ import annotations

import dataclasses
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from core.errors import EXIT_CONFIG, EXIT_LOCKED, ConfigError, OperatorError
from deploy import backup_config, cloud, hostkey, steps, wiring
from deploy.cluster import Node
from deploy.report.run import Run
from deploy.settings import Settings
from deploy.wiring import REAL_EDGES, Edges
from remote import lock
from remote.connection import host_entry
from remote.host import Host

Ask = Callable[[str], str]
REFUSED = "config-error"    # exit 2's outcome (docs/exit-codes.md): an input refused, nothing changed


def ask_terminal(prompt: str) -> str:
    """The operator's answer typed on this terminal; EOFError when stdin is not one (a pipe, CI)."""
    if not sys.stdin.isatty():
        raise EOFError
    return input(prompt)


def backup_repository(settings: Settings) -> str | None:
    """Where this stack's backups are kept off the droplet (a path of its own in SPACES_BUCKET).
    A destroy never deletes them, with or without --include-data; the listing names them as
    data kept. None when they are on the droplet: they go with it (the listing says so)."""
    return backup_config.location(settings, settings.stack_env)


@dataclasses.dataclass(frozen=True)
class _Local:
    """This machine's part: known_hosts pins and kept host keys of the stack's droplets."""

    entries: tuple[str, ...]        # known_hosts host names to unpin
    names: tuple[str, ...]          # nodes whose kept host key goes (and every pin of it)

    def listed(self, known_hosts: str) -> list[str]:
        pins = f"pins of {', '.join(self.entries)}" if self.entries else ""
        keys = f"the host keys kept for {', '.join(self.names)}" if self.names else ""
        return [f"{known_hosts}: " + " and ".join(p for p in (pins, keys) if p)] if pins or keys else []


def destroy(run: Run, settings: Settings, edges: Edges = REAL_EDGES, yes: bool = False, include_data: bool = False,
            ask: Ask = ask_terminal, backups: Callable[[Settings], str | None] = backup_repository) -> None:
    """List what goes and what stays, then (confirmed, under the deploy lock) remove it. ``ask``:
    where the droplet's name is typed (EOFError: nobody can); ``backups``: the backup repository
    hook, named in the listing as data kept."""
    spec = _spec(run, settings)
    steps.token_check(run, edges.cloud, spec)
    known_hosts = settings.known_hosts_path
    kept_here = hostkey.kept_names(known_hosts, settings.droplet_name)
    with run.step("inventory") as step:
        past = [_address(e) for e in hostkey.pinned_with(known_hosts, kept_here)]
        found = edges.cloud.stack_inventory(spec, past, on_event=steps.cloud_events(run))
        removals = found.removals(include_data)
        kept = len(found.kept) + (0 if include_data else len(found.data))
        step.note(f"{len(removals)} to remove, {kept} kept"
                  + (f"; droplets {', '.join(found.names)}" if found.names else "; no droplet"))
    local = _local(settings, found, kept_here)
    repository = backups(settings)
    lines = listing(settings, found, include_data, local, repository)
    run.artifacts.write_text("destroy-plan.txt", "\n".join(lines) + "\n")
    run.record("destroy", {"include_data": include_data, "remove": [_plain(i) for i in removals],
                           "kept": [dataclasses.asdict(k) for k in found.kept],
                           "data": [_plain(i) for i in found.data], "backup_repository": repository,
                           "local": dataclasses.asdict(local)})
    for line in lines:
        run.console.print(line, markup=False, highlight=False)
    if not removals:
        _forget(run, known_hosts, local)
        run.log(f"nothing of stack {settings.droplet_name} is left in this DigitalOcean account")
        return
    if found.backups and not include_data:
        raise OperatorError(f"nothing was removed: DigitalOcean deletes a droplet's backups with it ({'; '.join(found.backups)})",
                            "turn the backups you need into snapshots in the control panel (snapshots stay), or "
                            "pass --include-data to delete them too", exit_code=EXIT_CONFIG, outcome=REFUSED)
    with _deploy_lock(run, settings, edges, found):
        _confirm(run, settings.droplet_name, yes, ask)
        with run.step("remove") as step:
            gone = edges.cloud.remove_stack(spec, removals, on_event=steps.cloud_events(run))
            step.note(f"{len(gone)} removed: " + ", ".join(f"{i.kind} {i.name}" for i in gone))
    _forget(run, known_hosts, local)
    run.log(f"stack {settings.droplet_name} is removed" + (f"; {kept} kept (listed above)" if kept else ""))


def _spec(run: Run, settings: Settings) -> cloud.CloudSpec:
    """The cloud spec, with SSH_KEY_PATH's public key when it is here: without it the account's key
    cannot be told ours (it stays), which must not stop the rest from going."""
    spec = wiring.cloud_spec(settings, need_key=False)
    if settings.droplet_ip:
        run.log(f"DROPLET_IP={settings.droplet_ip} is not used: destroy finds the stack through the API")
    try:
        return dataclasses.replace(spec, ssh_public_key=wiring.public_key(settings))
    except ConfigError:
        return spec


def _address(entry: str) -> str:
    """The address of a known_hosts host name: "203.0.113.5" or "[203.0.113.5]:2222"."""
    return entry[1:].partition("]")[0] if entry.startswith("[") else entry


def _local(settings: Settings, found: cloud.StackInventory, kept_here: list[str]) -> _Local:
    """Node 1's name and the droplets found are this stack's; a numbered name kept here is not
    when a droplet of another stack carries it (a stack may be called <name>-2)."""
    names = {settings.droplet_name, *found.names} | (set(kept_here) - found.foreign_names)
    known_hosts = settings.known_hosts_path
    names = {n for n in names if hostkey.load_public(known_hosts, n)}
    entries = {host_entry(a, settings.ssh_port) for a in found.addresses}
    entries = {e for e in entries if hostkey.is_pinned(known_hosts, e)} | set(hostkey.pinned_with(known_hosts, names))
    return _Local(tuple(sorted(entries)), tuple(sorted(names)))


def _plain(item: cloud.Item) -> dict[str, str]:
    return {"kind": item.kind, "name": item.name, "detail": item.detail}


def listing(settings: Settings, found: cloud.StackInventory, include_data: bool, local: _Local,
            repository: str | None) -> list[str]:
    """What goes and what stays, one line each, before anything is asked."""
    removals = found.removals(include_data)
    lines = [f"stack {settings.droplet_name} in this DigitalOcean account "
             f"(found by its name, the tag {settings.droplet_tags[0] if settings.droplet_tags else '-'} and "
             f"the cluster tag {cloud.cluster_tag(settings.droplet_name)}):"]
    lines += [f"  remove  {i.kind:9} {i.name}  ({i.detail})" for i in removals]
    lines += [f"  remove  {'local':9} {line}" for line in local.listed(str(settings.known_hosts_path))]
    if found.droplets:
        lines.append(f"  goes with the droplet{'s' if len(found.droplets) > 1 else ''}: the stack's data in its "
                     "Docker volumes (PostgreSQL, Redis, the certificates)"
                     + ("" if repository else " and the database's backups, kept on the droplet while SPACES_BUCKET is unset")
                     + "; copy it off first if you need it")
        if found.backups:
            lines.append(f"  goes with the droplets: their DigitalOcean backups ({'; '.join(found.backups)})")
    if not include_data:
        lines += [f"  keep    {i.kind:9} {i.name}  ({i.detail}): data, --include-data removes it" for i in found.data]
    lines += [f"  keep    {k.what}: {k.why}" for k in found.kept]
    if not settings.domain:
        lines.append("  keep    DNS records: DOMAIN is not set, so none were looked for")
    if repository:
        lines.append(f"  data kept: the backup repository {repository} (destroy never deletes backups)")
    if not removals:
        lines.append("  nothing to remove")
    return lines


@contextmanager
def _deploy_lock(run: Run, settings: Settings, edges: Edges, found: cloud.StackInventory) -> Iterator[None]:
    """Node 1's deploy lock for the block, so a destroy never runs under a deploy. A node 1 that
    does not answer SSH gives no lock: nothing can deploy to it either (said in the run). Once node
    1 is deleted its lock is gone with it; a block that fails before releases it."""
    if not found.leader_ip:
        run.skip_step("lock", "node 1 is gone (or has no public IPv4): there is no deploy lock to take")
        yield
        return
    inventory = wiring.inventory(settings, (Node(settings.droplet_name, found.leader_ip),), edges)
    target = inventory.targets[0]
    holder = lock.LockHolder.here("(destroy)", run.command)
    try:
        with run.step("lock") as step:
            try:
                target.open(quick=True)
            except OperatorError as exc:
                step.warn(f"{settings.droplet_name} does not answer SSH ({exc.message}): no deploy lock taken, as "
                          "no deploy can reach it either")
            else:
                try:
                    lock.acquire(target, holder)
                except lock.LockHeld as exc:
                    raise OperatorError(f"nothing was removed: {exc.message}",
                                        "wait for that run to end, then run `inv destroy` again (if it died, "
                                        "`inv lock.release --if-stale` releases its lock)",
                                        exit_code=EXIT_LOCKED) from None
                step.note(f"taken by {holder.who} on {settings.droplet_name}")
        try:
            yield
        except BaseException:
            if target.connected:
                _release(run, target, holder)
            raise
    finally:
        inventory.close()


def _release(run: Run, target: Host, holder: lock.LockHolder) -> None:
    try:
        if lock.release_if_ours(target, holder):
            run.log("deploy lock released")
    except OperatorError as exc:   # node 1 deleted meanwhile, or the connection lost: the run's error is the one
        run.warn(f"the deploy lock on {target.name} could not be released ({exc.message}); if node 1 is still there, "
                 "`inv lock.release --if-stale` releases it")


def _confirm(run: Run, name: str, yes: bool, ask: Ask) -> None:
    """The droplet's name typed, as Heroku and GitHub ask before deleting; --yes for scripts."""
    if yes:
        run.log("--yes: removing without asking")
        return
    try:
        typed = ask(f"Type the droplet's name ({name}) to remove all that is listed above: ").strip()
    except EOFError:
        raise OperatorError("nothing was removed: there is no terminal to type the droplet's name on",
                            "run `inv destroy` in a terminal, or pass --yes to confirm in a script",
                            exit_code=EXIT_CONFIG, outcome=REFUSED) from None
    if typed != name:
        raise OperatorError(f"nothing was removed: {typed!r} is not the droplet's name {name!r}",
                            f"run `inv destroy` again and type {name} exactly", exit_code=EXIT_CONFIG, outcome=REFUSED)
    run.log(f"{name} typed: removing")


def _forget(run: Run, known_hosts: Path, local: _Local) -> None:
    if not local.entries and not local.names:
        return
    with run.step("forget") as step:
        removed = hostkey.forget(known_hosts, set(local.entries), local.names)
        step.note(f"{len(removed)} removed from {known_hosts} and beside it")
