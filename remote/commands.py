"""Shell command builders for the droplet (pure: they only return strings).

Like Kamal's ``lib/kamal/commands``: nothing here talks to a server, so every
command is unit-tested as a plain string. The runner modules (sync, compose,
lock, collect) send these over one Fabric connection.

Secrets never appear here: they travel only in the env file uploaded by sftp,
and compose reads them from that file (``--env-file``).
"""
from __future__ import annotations

import posixpath
import shlex
from dataclasses import dataclass
from typing import Iterable, Sequence

from remote.layout import RELEASE_META, ReleaseLayout



def q(value: str) -> str:
    """Quote one argument for a POSIX shell."""
    return shlex.quote(str(value))


def join(argv: Iterable[str]) -> str:
    return " ".join(q(a) for a in argv)


@dataclass(frozen=True)
class ComposeProject:
    """What pins every compose call to one project: a fixed name, files and env file.

    A fixed ``-p`` keeps the project name independent of the release folder, and a
    fixed ``--project-directory`` (the ``current`` symlink, not the release path)
    keeps the config hash stable across releases, so unchanged services are not
    recreated by a new release.
    """

    project: str
    compose_files: tuple[str, ...]
    env_file: str | None = None
    project_directory: str | None = None


def compose(project: str, compose_files: Sequence[str], env_file: str | None, *args: str,
            project_directory: str | None = None) -> str:
    """``docker compose -p PROJECT -f F... [--env-file E] ARGS``."""
    if not project:
        raise ValueError("compose project name is empty")
    if not compose_files:
        raise ValueError("at least one compose file is required")
    argv = ["docker", "compose", "-p", project]
    if project_directory:
        argv += ["--project-directory", project_directory]
    for path in compose_files:
        argv += ["-f", path]
    if env_file:
        argv += ["--env-file", env_file]
    return join([*argv, *args])


def _c(t: ComposeProject, *args: str) -> str:
    return compose(t.project, t.compose_files, t.env_file, *args,
                   project_directory=t.project_directory)


def build(t: ComposeProject, services: Iterable[str] | None = None, pull: bool = False) -> str:
    """Build all services, or only ``services`` (sorted for a stable command)."""
    args = ["build"]
    if pull:
        args.append("--pull")
    return _c(t, *args, *sorted(services or ()))


def run_once(t: ComposeProject, service: str, argv: Sequence[str]) -> str:
    """A one-off container of ``service`` (its image and env), removed afterwards; no deps started."""
    return _c(t, "run", "--rm", "--no-deps", "-T", service, *argv)


def scale_up(t: ComposeProject, service: str, count: int) -> str:
    """Start ``count`` containers of ``service`` without touching the running ones: the extra
    one runs the current config (the new release) beside the old (start-first)."""
    return _c(t, "up", "-d", "--no-build", "--no-deps", "--no-recreate", "--scale", f"{service}={int(count)}", service)


def service_containers(project: str, service: str) -> str:
    """Ids of a compose service's containers, running or not, one per line."""
    return join(["docker", "ps", "-aq", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", f"label=com.docker.compose.service={service}"])


def health_status(container: str) -> str:
    """``<state> <health>`` of one container (health is ``none`` without a healthcheck)."""
    fmt = "{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}}"
    return join(["docker", "inspect", "--format", fmt, container])


def healthcheck_tests(containers: Iterable[str]) -> str:
    """``<id> <name> <healthcheck as JSON>`` per container (``null`` without one)."""
    ids = sorted(containers)
    return join(["docker", "inspect", "--format", "{{.Id}} {{.Name}} {{json .Config.Healthcheck}}", *ids]) if ids else "true"


def probe_argv(test: Sequence[str] | None) -> list[str] | None:
    """The healthcheck's own command, to run in the container now (``docker exec``): Docker runs
    it only every ``interval`` (10 s in the stack), the deployer wants to know at once."""
    if not test or test[0] == "NONE":
        return None
    if test[0] == "CMD-SHELL":
        return ["/bin/sh", "-c", " ".join(test[1:])]
    return list(test[1:] if test[0] == "CMD" else test)


def probe(container: str, argv: Sequence[str] | None, timeout: int = 10) -> str:
    """One look at a new container: ``<state> <docker's health> <now>``, where ``now`` is ``ok``
    or ``no`` by its healthcheck command run at once while Docker still says ``starting`` (``-``
    otherwise). ``gone`` when it no longer exists."""
    look = health_status(container)
    if argv is None:
        return f"s=$({look} 2>/dev/null) || {{ echo gone; exit 0; }}; echo \"$s -\""
    check = "timeout " + str(int(timeout)) + " " + join(["docker", "exec", container, *argv]) + " >/dev/null 2>&1"
    return (f"s=$({look} 2>/dev/null) || {{ echo gone; exit 0; }}; "
            f"if [ \"$s\" = 'running starting' ]; then if {check}; then echo \"$s ok\"; else echo \"$s no\"; fi; "
            f"else echo \"$s -\"; fi")


def stop_and_remove(containers: Iterable[str], grace_seconds: int) -> str:
    """SIGTERM (or the image's stop signal), ``grace_seconds`` to finish in-flight work, then remove."""
    ids = sorted(containers)
    if not ids:
        return "true"
    return (join(["docker", "stop", "-t", str(int(grace_seconds)), *ids]) + " >/dev/null && "
            + join(["docker", "rm", *ids]) + " >/dev/null")


def container_logs(container: str, tail: int = 200) -> str:
    return join(["docker", "logs", "--timestamps", "--tail", str(int(tail)), container]) + " 2>&1"


def config_hashes(t: ComposeProject) -> str:
    """``<service> <hash>`` per service: the hash compose labels a container with, for the
    config the files describe now (a container whose label differs is out of date)."""
    return _c(t, "config", "--hash", "*")


def recreate_detached(t: ComposeProject, services: Iterable[str]) -> str:
    """New containers for ``services`` and nothing else, without waiting for Docker's health (the
    deployer runs each one's healthcheck itself, at once)."""
    return _c(t, "up", "-d", "--no-build", "--no-deps", "--force-recreate", *sorted(services))


def remove_now(containers: Iterable[str]) -> str:
    ids = sorted(containers)
    return join(["docker", "rm", "-f", *ids]) + " >/dev/null" if ids else "true"


def up(t: ComposeProject, wait_timeout: int, services: Iterable[str] | None = None,
       no_deps: bool = False, remove_orphans: bool = True, force_recreate: bool = False) -> str:
    """``up -d --wait``: returns only when every service is running/healthy or on timeout.

    Never ``--build`` (build is its own step so its failure is reported apart) and
    never anything that removes volumes.
    """
    if wait_timeout <= 0:
        raise ValueError("wait_timeout must be a positive number of seconds")
    args = ["up", "-d", "--wait", "--wait-timeout", str(int(wait_timeout)), "--no-build"]
    if remove_orphans:
        args.append("--remove-orphans")
    if no_deps:
        args.append("--no-deps")
    if force_recreate:
        args.append("--force-recreate")
    return _c(t, *args, *sorted(services or ()))


def ps(t: ComposeProject, all: bool = True) -> str:
    args = ["ps"]
    if all:
        args.append("--all")
    return _c(t, *args)


def logs(t: ComposeProject, service: str, tail: int = 200, timestamps: bool = True) -> str:
    args = ["logs", "--no-color", "--tail", str(int(tail))]
    if timestamps:
        args.append("--timestamps")
    return _c(t, *args, service)


def config(t: ComposeProject, json: bool = False) -> str:
    """The resolved compose config. Interpolated values may be secret: redact before saving."""
    return _c(t, "config", *(["--format", "json"] if json else []))


def images(t: ComposeProject) -> str:
    """Images used by the project's containers, as JSON (service -> image id)."""
    return _c(t, "images", "--format", "json")


def image_ids(refs: Iterable[str]) -> str:
    """Each present image as ``<id> <tag> <tag>...``; refs that are not on the host are absent."""
    refs = sorted(set(refs))
    if not refs:
        raise ValueError("no image refs to look up")
    return join(["docker", "image", "inspect", "--format", '{{.Id}}{{range .RepoTags}} {{.}}{{end}}', *refs]) + " 2>/dev/null || true"


def remove_images(refs: Iterable[str]) -> str:
    """Untag (and delete when unused) images; refs still used by a container are left alone."""
    refs = sorted(set(refs))
    return join(["docker", "image", "rm", *refs]) + " 2>&1 || true" if refs else "true"


# Build cache younger than this stays: the next deploy's build reuses it.
BUILDER_CACHE_KEEP_HOURS = 72


def prune_dangling_images() -> str:
    """Untagged images only (superseded builds): every release's images carry its tag, so the
    releases kept for rollback keep theirs."""
    return join(["docker", "image", "prune", "--force"])


def prune_builder_cache(keep_hours: int = BUILDER_CACHE_KEEP_HOURS) -> str:
    """Build cache not used for ``keep_hours``: without this, every build's layers pile up."""
    return join(["docker", "builder", "prune", "--force", "--filter", f"until={int(keep_hours)}h"])


def list_image_refs() -> str:
    """Every tagged image of the engine, one ``repository:tag`` a line (untagged: ``<none>:<none>``)."""
    return join(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"])


def list_dangling_images() -> str:
    """The untagged images `docker image prune` takes (less any a container still uses): id and size."""
    return join(["docker", "image", "ls", "--filter", "dangling=true", "--format", "{{.ID}} {{.Size}}"])


def disk_usage() -> str:
    """One ``<type>|<reclaimable>`` line per kind of disk use (Images, Containers, Local Volumes, Build Cache)."""
    return join(["docker", "system", "df", "--format", "{{.Type}}|{{.Reclaimable}}"])


def container_states(project: str) -> str:
    """``<id> <service> <docker's status text>`` per container of the project, newest first: a
    cheap read (no compose CLI) for a poller."""
    fmt = '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Status}}'
    return join(["docker", "ps", "-a", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", "label=com.docker.compose.oneoff=False", "--format", fmt])


def project_containers(project: str) -> str:
    """``<id> <service> <config hash>`` for every container of the project, running or not."""
    fmt = '{{.ID}} {{.Label "com.docker.compose.service"}} {{.Label "com.docker.compose.config-hash"}}'
    return join(["docker", "ps", "-a", "--no-trunc", "--filter", f"label=com.docker.compose.project={project}",
                 "--filter", "label=com.docker.compose.oneoff=False", "--format", fmt])


def health(container: str) -> str:
    """The healthcheck state and recent probe outputs of a container, as JSON."""
    return join(["docker", "inspect", "--format", "{{json .State.Health}}", container])


def container_ip(container: str, network: str) -> str:
    fmt = "{{(index .NetworkSettings.Networks %s).IPAddress}}" % _go_string(network)
    return join(["docker", "inspect", "--format", fmt, container])


def traefik_api_get(container: str, path: str, port: int = 8080, timeout: float = 10) -> str:
    """GET Traefik's API, which listens only on the loopback of Traefik's own network namespace
    (no other container and nothing off the host can connect). The request is sent from inside
    the Traefik container with bash's /dev/tcp (its image has no HTTP client): no root, no
    sudo, no extra image. Prints the raw HTTP/1.0 response; ``http_body`` checks and strips it."""
    if not path.startswith("/"):
        path = "/" + path
    script = ('exec 3<>"/dev/tcp/127.0.0.1/$1" && printf "GET %s HTTP/1.0\\r\\nHost: 127.0.0.1\\r\\n\\r\\n" "$2" >&3 '
              '&& cat <&3')
    return join(["docker", "exec", container, "timeout", str(int(timeout)), "bash", "-c", script, "api-get",
                 str(int(port)), path])


def http_body(raw: str) -> str:
    """The body of a raw HTTP response; ValueError naming the status unless it is 200."""
    head, sep, body = raw.partition("\r\n\r\n")
    if not sep:
        head, sep, body = raw.partition("\n\n")
    status = head.splitlines()[0] if head else ""
    parts = status.split(None, 2)
    if not sep or len(parts) < 2 or not parts[0].startswith("HTTP/"):
        raise ValueError(f"not an HTTP response: {raw[:120]!r}")
    if parts[1] != "200":
        raise ValueError(f"Traefik's API answered {status.strip()}")
    return body


def containers_env(containers: Iterable[str]) -> str:
    """``<id> <env as a JSON list>`` per container id, in one command (a container gone since it
    was listed is left out; the others still print). It holds secrets: redact before saving."""
    return join(["docker", "inspect", "--format", "{{.Id}} {{json .Config.Env}}", *sorted(containers)])


def container_cat(container: str, path: str) -> str:
    """A file from inside a running container (Traefik's configuration), without Compose's start-up."""
    return join(["docker", "exec", container, "cat", path])


def curl_headers(host: str, path: str = "/", timeout: float = 10) -> str:
    """Response headers of https://HOST/path fetched on the droplet itself via Traefik on :443."""
    if not path.startswith("/"):
        path = "/" + path
    return join(["curl", "-sS", "-k", "-D", "-", "-o", "/dev/null",
                 "--max-time", _num(timeout),
                 "--resolve", f"{host}:443:127.0.0.1", f"https://{host}{path}"])


def docker_system_df() -> str:
    return "docker system df"


def free_m() -> str:
    return "free -m"


def readlink_current(layout: ReleaseLayout) -> str:
    """Prints the release the ``current`` symlink points to (empty output if none)."""
    return f"readlink {q(layout.current)} || true"


# --- releases -------------------------------------------------------------------

def prepare_layout(layout: ReleaseLayout) -> str:
    return join(["mkdir", "-p", layout.releases])


STATE_RELEASES = "--- releases"
STATE_META = "--- current meta"


def remove_push_leftovers(layout: ReleaseLayout) -> str:
    """Staging folders and uploads of pushes that died mid-way (a push runs under the deploy
    lock, so at the next push nobody is writing them any more)."""
    r = q(layout.releases)
    return f"rm -rf -- {r}/.staging-* {r}/.upload-*"


def release_state(layout: ReleaseLayout) -> str:
    """One round trip before a push: create the layout, drop an interrupted push's leftovers,
    then print the current release, the release folders and the current release's metadata,
    separated by marker lines."""
    return (f"{prepare_layout(layout)} && {remove_push_leftovers(layout)} && "
            f"echo \"current:$(readlink {q(layout.current)} || true)\" && "
            f"echo \"free_kb:$(df -Pk {q(layout.releases)} | awk 'NR==2 {{print $4}}')\" && "
            f"echo {q(STATE_RELEASES)} && ls -1 {q(layout.releases)} && "
            f"echo {q(STATE_META)} && (cat {q(layout.current_meta)} 2>/dev/null || true)")


def chain(*commands: str) -> str:
    """Run commands in order, stopping at the first failure."""
    return " && ".join(c for c in commands if c and c != "true") or "true"


def list_release_dirs(layout: ReleaseLayout) -> str:
    """Release folder names, one per line (hidden staging folders excluded)."""
    return f"ls -1 {q(layout.releases)} 2>/dev/null || true"


def cat_release_meta(layout: ReleaseLayout, release_id: str) -> str:
    return f"cat {q(layout.meta(release_id))}"


def read_all_release_meta(layout: ReleaseLayout) -> str:
    """Every release's metadata, each preceded by a marker line naming the release."""
    return (f"cd {q(layout.releases)} 2>/dev/null && for r in *; do [ -d \"$r\" ] || continue; "
            f"echo \"=== $r\"; cat \"$r/{RELEASE_META}\" 2>/dev/null; echo; done; true")


FINGERPRINT_MODES = "--- modes"
FINGERPRINT_LINKS = "--- links"


def release_fingerprint(layout: ReleaseLayout, release_id: str, own: Sequence[str]) -> str:
    """What is in a release folder now: sha256 of each file, then modes, then symlink targets;
    the deployer's own files (``own``: metadata, env, image pins) left out."""
    skip = " ".join(f"! -path {q('./' + name)}" for name in own)
    return (f"cd {q(layout.release(release_id))} && "
            f"find . -type f {skip} -print0 | xargs -0 -r sha256sum && echo {q(FINGERPRINT_MODES)} && "
            f"find . -type f {skip} -printf '%m %P\\n' && echo {q(FINGERPRINT_LINKS)} && "
            f"find . -type l {skip} -printf '%P\\t%l\\n'")


def hardlink_copy(src: str, dest: str) -> str:
    """``cp -al``: the new release shares unchanged files' inodes with the old one."""
    return join(["cp", "-al", src, dest])


def make_dir(path: str) -> str:
    return join(["mkdir", "-p", path])


def remove_paths(root: str, relpaths: Sequence[str]) -> str:
    """Unlink files under ``root``. Changed files are unlinked before extraction so the
    hard-linked previous release is never modified through a shared inode."""
    if not relpaths:
        return "true"
    return join(["rm", "-f", "--", *[posixpath.join(root, p) for p in relpaths]])


def prune_empty_dirs(root: str) -> str:
    return f"find {q(root)} -mindepth 1 -type d -empty -delete"


def extract_archive(archive: str, dest: str) -> str:
    """Unpack a tar.gz upload, keeping modes but not the uploader's uid/gid; then drop it."""
    return (join(["tar", "--no-same-owner", "-xpzf", archive, "-C", dest])
            + " && " + join(["rm", "-f", archive]))


def remove_tree(path: str) -> str:
    return join(["rm", "-rf", "--", path])


def make_files_read_only(root: str) -> str:
    """Every regular file under ``root`` loses its write bits: releases share unchanged files'
    inodes (``cp -al``), so a file written in place would change older releases too. Folders
    stay writable: the deployer replaces its metadata files by renaming over them."""
    return join(["find", root, "-type", "f", "-perm", "/222", "-exec", "chmod", "a-w", "{}", "+"])


def rename(src: str, dest: str) -> str:
    return join(["mv", "-T", src, dest])


def switch_current(layout: ReleaseLayout, release_id: str) -> str:
    """Atomically repoint ``current``: a symlink under a temp name, then rename over it."""
    target = posixpath.join("releases", release_id)
    return (join(["ln", "-sfn", target, layout.current_tmp]) + " && "
            + join(["mv", "-T", layout.current_tmp, layout.current]))


def remove_releases(layout: ReleaseLayout, release_ids: Sequence[str]) -> str:
    if not release_ids:
        return "true"
    return join(["rm", "-rf", "--", *[layout.release(r) for r in release_ids]])


# --- lock -----------------------------------------------------------------------

LOCK_STAGING_MAX_AGE_MIN = 60  # a lock attempt's staging folder older than this belongs to a dead run


def lock_prepare(layout: ReleaseLayout, staging: str) -> str:
    """Make the folder a lock is prepared in (its holder is then written over SFTP), after
    removing what dead attempts and interrupted releases left behind."""
    b = q(layout.base)
    return (f"mkdir -p {b} && {{ find {b} -maxdepth 1 -name '.lock-*' -mmin +{LOCK_STAGING_MAX_AGE_MIN} "
            f"-exec rm -rf -- {{}} + || true; }} && mkdir {q(staging)}")


def lock_acquire(layout: ReleaseLayout, staging: str) -> str:
    """Publish the prepared folder as the lock with one rename, so the lock never exists without
    its holder. ``mv -T`` onto an existing lock fails (rename(2) refuses a non-empty folder); a
    lock left empty by an older version is caught by the check before. Prints ``acquired`` or
    ``held``; any other failure is an error."""
    d, s = q(layout.lock_dir), q(staging)
    return (f"if [ -e {d} ]; then echo held; elif mv -T {s} {d} 2>/dev/null; then echo acquired; "
            f"elif [ -e {d} ]; then echo held; else mv -T {s} {d}; fi")


def lock_status(layout: ReleaseLayout) -> str:
    """Prints ``free``, or ``held <seconds since it was taken, by the droplet's clock>`` followed by
    the holder JSON."""
    d = q(layout.lock_dir)
    return (f"if m=$(stat -c %Y {d} 2>/dev/null); then echo \"held $(( $(date +%s) - m ))\"; "
            f"cat {q(layout.lock_holder)} 2>/dev/null || true; else echo free; fi")


def lock_release(layout: ReleaseLayout, trash: str) -> str:
    """Rename the lock away, then delete it: the lock disappears in one step, never half-removed
    while another deploy takes it."""
    d, t = q(layout.lock_dir), q(trash)
    return f"if mv -T {d} {t} 2>/dev/null || [ ! -e {d} ]; then rm -rf -- {t}; else mv -T {d} {t}; fi"


def _go_string(value: str) -> str:
    """A Go template string literal (docker --format), escaping quotes and backslashes."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


# --- bootstrap ------------------------------------------------------------------

def ensure_base_dir(layout: ReleaseLayout) -> str:
    """Fails unless the release root exists and the SSH user may write it. Never sudo: the
    deploy user has none; cloud-init creates the folder and hands it over (deploy/cloud/user_data.py)."""
    b = q(layout.base)
    return f"[ -d {b} ] && [ -w {b} ] && echo ready"


CLOUD_INIT_DONE = "/run/cloud-init/result.json"
CLOUD_INIT_FINISHED = "/var/lib/cloud/instance/boot-finished"


def cloud_init_state() -> str:
    """One line `state: done|running|absent`, then cloud-init's own JSON for that state.
    `cloud-init status` is not enough: 22.4 reports `error` as soon as one module failed, while
    the final stage (which installs Docker) still runs; result.json appears when it ends. A
    later boot of a set-up droplet has boot-finished from its first boot."""
    return (f"if [ -e {CLOUD_INIT_DONE} ]; then echo 'state: done'; cat {CLOUD_INIT_DONE}; "
            f"elif [ -e {CLOUD_INIT_FINISHED} ]; then echo 'state: done'; "
            "elif command -v cloud-init >/dev/null 2>&1; then echo 'state: running'; "
            "cat /run/cloud-init/status.json 2>/dev/null; "
            "else echo 'state: absent'; fi")


def docker_ready() -> str:
    """Fails unless the SSH user can talk to the Docker engine and has the Compose plugin."""
    return "docker info --format '{{.ServerVersion}}' && docker compose version --short"


# --- reads for a plan (they change nothing) --------------------------------------

def read_file(path: str) -> str:
    """The file's content, or nothing when it does not exist."""
    return f"cat -- {q(path)} 2>/dev/null || true"


def sha256_of(path: str) -> str:
    """``<sha256>  <path>``, or nothing when the file does not exist."""
    return f"sha256sum -- {q(path)} 2>/dev/null || true"
