"""`inv status`'s report: what runs (remote/status.py's Snapshot), what the cloud says of each
droplet, the last deploy from this machine, the certificate, and whether the stack is healthy,
degraded or could not be told. Two renderings of the same facts: one screen for a person, one
JSON document for a script (its schema: docs/status.schema.json, explained in docs/day2.md).
Pure: no I/O."""
from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from core.errors import EXIT_CONFIG, EXIT_FAILED, EXIT_OK
from deploy.report.runs import RunInfo
from deploy.tls import CertificateInfo
from remote.status import Disk, Snapshot

SCHEMA = "stackdeploy.status/1"
HEALTHY, DEGRADED, UNKNOWN = "healthy", "degraded", "unknown"
EXIT_FOR = {HEALTHY: EXIT_OK, DEGRADED: EXIT_FAILED, UNKNOWN: EXIT_CONFIG}


@dataclass(frozen=True)
class DropletRow:
    name: str
    ip: str
    region: str
    status: str                 # DigitalOcean's: new, active, off, archive ("" unknown: DROPLET_IP)
    role: str                   # leader | worker
    reachable: bool | None      # SSH answered (None: not tried)
    disk: Disk | None = None


@dataclass
class StatusReport:
    project: str
    runtime: str                               # compose | swarm
    checked_at: datetime
    droplets: list[DropletRow] = field(default_factory=list)
    snapshot: Snapshot | None = None           # None: the leader could not be read
    last_deploy: RunInfo | None = None
    certificate: CertificateInfo | None = None
    errors: list[str] = field(default_factory=list)   # what could not be read, each with its reason

    @property
    def problems(self) -> list[str]:
        if self.snapshot is None:
            return []
        out = self.snapshot.problems()
        if self.certificate is not None and self.certificate.expired(self.checked_at):
            out.append(f"the certificate expired on {self.certificate.not_after[:10]}")
        return out

    @property
    def health(self) -> str:
        if self.snapshot is None:
            return UNKNOWN
        return DEGRADED if self.problems else HEALTHY

    @property
    def exit_code(self) -> int:
        return EXIT_FOR[self.health]

    # -- JSON --------------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        snap = self.snapshot
        return {
            "schema": SCHEMA,
            "checked_at": _iso(self.checked_at),
            "project": self.project,
            "runtime": self.runtime,
            "health": self.health,
            "problems": self.problems,
            "errors": list(self.errors),
            "droplets": [{"name": d.name, "ip": d.ip or None, "region": d.region or None, "status": d.status or None,
                          "role": d.role, "reachable": d.reachable, "disk": _disk(d.disk)} for d in self.droplets],
            "release": self._release(),
            "services": [] if snap is None else [{
                "name": s.name, "state": s.state, "running": len(s.running), "desired": s.desired,
                "health": s.health or None, "uptime_seconds": _whole(s.uptime_s), "restarts": s.restarts,
                "image": s.image or None, "nodes": s.nodes, "problem": s.problem} for s in snap.services],
            "last_deploy": None if self.last_deploy is None else {
                "task": self.last_deploy.task, "mode": self.last_deploy.mode, "outcome": self.last_deploy.outcome,
                "started": self.last_deploy.start or None, "age_seconds": _whole(self._age(self.last_deploy.start)),
                "run_folder": self.last_deploy.folder.name},
            "certificate": None if self.certificate is None else {
                "not_after": self.certificate.not_after, "days_left": self.certificate.days_left(self.checked_at),
                "issuer": self.certificate.issuer_cn or self.certificate.issuer},
            "last_backup": None if snap is None or snap.last_backup is None else {
                "at": snap.last_backup, "age_seconds": _whole(self._age(snap.last_backup))},
        }

    def _release(self) -> dict[str, Any] | None:
        snap = self.snapshot
        if snap is None or snap.release is None:
            return None
        meta = snap.release_meta
        since = meta.get("outcome_at") or meta.get("created")   # when it went live; else when it was pushed
        return {"id": snap.release, "live_since": since, "age_seconds": _whole(self._age(since)),
                "outcome": meta.get("outcome"), "by": meta.get("by")}

    def _age(self, when: str | None) -> float | None:
        if not when:
            return None
        try:
            moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError:
            return None
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=timezone.utc)
        return max(0.0, (self.checked_at - moment).total_seconds())

    # -- the screen --------------------------------------------------------------------------------
    def render(self) -> str:
        data = self.to_json()
        nodes = len(self.droplets)
        lines = [f"{self.project}: {self.health.upper()} ({nodes} droplet{'s' if nodes != 1 else ''}, "
                 f"{'Docker Swarm' if self.runtime == 'swarm' else 'Docker Compose'})"]
        lines += [f"  ! {p}" for p in self.problems] + [f"  ? {e}" for e in self.errors]
        lines.append("")
        for d in self.droplets:
            ssh = {True: "", False: "  (SSH: no answer)", None: ""}[d.reachable]
            lines.append(_row("droplet", f"{d.name}  {d.ip or '-'}  {d.region or '-'}  {d.status or '?'}"
                                         f"  {_disk_text(d.disk)}{ssh}"))
        release = data["release"]
        if self.snapshot is not None:
            lines.append(_row("release", "nothing is live" if release is None else
                              f"{release['id']}  live for {duration(release['age_seconds'])}"
                              + (f"  (by {release['by']})" if release["by"] else "")))
        last = data["last_deploy"]
        lines.append(_row("last deploy", "none from this machine" if last is None else
                          f"{last['task']} ({last['mode']}): {last['outcome']}, {duration(last['age_seconds'])} ago"
                          f"  ({last['run_folder']})"))
        cert = data["certificate"]
        if cert is not None:
            lines.append(_row("certificate", f"{cert['days_left']} days left (until {cert['not_after'][:10]}, "
                                             f"{cert['issuer']})"))
        backup = data["last_backup"]
        if self.snapshot is not None:
            lines.append(_row("last backup", "none found (`inv backups` tells why)" if backup is None else
                              f"{backup['at']}, {duration(backup['age_seconds'])} ago"))
        if self.snapshot is not None and self.snapshot.services:
            table = [("service", "state", "health", "up", "restarts", "image")] + [
                (s["name"], s["state"] if self.runtime == "compose" else f"{s['state']} {s['running']}/{s['desired']}",
                 s["health"] or "-", duration(s["uptime_seconds"]), str(s["restarts"]), s["image"] or "-")
                for s in data["services"]]
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]) - 1)]
            lines.append("")
            lines += ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1] for row in table]
        return "\n".join(lines) + "\n"


def _row(label: str, text: str) -> str:
    return f"{label:<12} {text}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def _whole(seconds: float | None) -> int | None:
    return None if seconds is None else int(seconds)


def _disk(disk: Disk | None) -> dict[str, int] | None:
    if disk is None:
        return None
    return {"free_bytes": disk.free_kb * 1024, "total_bytes": disk.total_kb * 1024,
            "free_percent": round(100 * disk.free_kb / disk.total_kb) if disk.total_kb else 0}


def _disk_text(disk: Disk | None) -> str:
    if disk is None:
        return "disk ?"
    gb = 1024 * 1024
    return (f"disk {disk.free_kb / gb:.1f} GB free of {disk.total_kb / gb:.1f} GB "
            f"({round(100 * disk.free_kb / disk.total_kb) if disk.total_kb else 0}%)")


def duration(seconds: float | int | None) -> str:
    """A person's reading of a duration: 45 s, 12 min, 3 h 5 min, 4 d 2 h."""
    if seconds is None:
        return "-"
    s = int(seconds)
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min"
    if s < 86400:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"
