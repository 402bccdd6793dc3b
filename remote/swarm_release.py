"""A release on a swarm, from its leader: images to the registry, the stack file, `stack deploy`.

The images are built once, on the leader, exactly as on one droplet (remote/compose.py); here
they are tagged with their registry refs and pushed, so every node pulls the same bytes. The
stack file is made from compose's own normalized model of the live release (``current``: bind
mounts name the link, not a release folder, so an unchanged service's spec stays the same and
Swarm leaves it alone) and written 0600 into the release folder (it holds interpolated
secrets, as the release's .env does). ``docker stack deploy --with-registry-auth`` hands the
deploy's registry login to the nodes for their pulls; Swarm then rolls each changed service
start-first and rolls it back by itself when its new tasks fail (remote/swarm.py waits).
"""
from __future__ import annotations

import json
import posixpath
import shlex
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Mapping

from remote import commands as cmd
from remote import registry_cmds, stackfile
from remote.compose import ComposeSpec
from remote.errors import RemoteError
from remote.layout import RELEASE_STACK
from remote.swarm import clock_command
from remote.host import Host

STACK_FILE = RELEASE_STACK
PUSHES_AT_ONCE = 4   # of the connection's five channels (remote/host.py MAX_CHANNELS)
HINT = ("check the registry login (DIGITALOCEAN_TOKEN with registry read/write) and the leader's disk; "
        "the run folder's swarm-tasks.txt says why a task did not start")


def registry_refs(local: Mapping[str, str], remote_ref: Callable[[str, str], str]) -> dict[str, str]:
    """service -> the registry ref of its local image ``repository:tag`` (same repository and tag)."""
    out = {}
    for service, ref in local.items():
        repository, _, tag = ref.rpartition(":")
        if not repository or "/" in tag:
            raise ValueError(f"the image of {service} ({ref!r}) has no tag: every release image is tagged")
        out[service] = remote_ref(repository, tag)
    return out


def publish(target: Host, config_dir: str, local: Mapping[str, str], remote: Mapping[str, str]) -> list[str]:
    """Tag and push each service's image under its registry ref; returns the refs pushed (an
    image pushed by an earlier release is pushed again: the registry answers "layer exists").
    The pushes go side by side, each on its own channel: a push to a registry across the
    internet waits on round trips per layer, which side by side overlap (dockerd uploads a layer
    the images share once). In the lab, where pushing is bound by the 2 cores compressing the
    layers, a first release's five images took 38 s side by side and 41 s one at a time. The
    first failure raises once every push has ended."""
    refs = sorted(set(remote.values()))
    for ref in refs:
        source = sorted({local[s] for s, r in remote.items() if r == ref})[0]
        target.run(registry_cmds.tag_command(source, ref), f"tagging {source} as {ref}", hint=HINT)
    with ThreadPoolExecutor(max_workers=min(PUSHES_AT_ONCE, len(refs)) or 1,
                            thread_name_prefix="push") as pool:
        pushes = [pool.submit(target.run, registry_cmds.push_command(config_dir, ref), f"pushing {ref}",
                              timeout=1800, hint=HINT) for ref in refs]
    for push in pushes:
        push.result()
    return refs


def normalized_config(target: Host, spec: ComposeSpec) -> dict:
    """Compose's model of the live release (held in memory only: it carries secrets)."""
    res = target.run(cmd.config(spec.on(target.layout), json=True), "reading the live release's compose model",
                     hint="run `docker compose config` in the release folder to see what compose refuses")
    try:
        return json.loads(res.stdout)
    except json.JSONDecodeError as exc:
        raise RemoteError(f"compose printed no readable model of the release ({exc})",
                          "run `docker compose config --format json` in the release folder") from None


def write_stack(target: Host, release_id: str, stack: Mapping) -> str:
    path = posixpath.join(target.layout.release(release_id), STACK_FILE)
    target.put(path, stackfile.dump(stack).encode(), mode=0o600)
    return path


def deploy_command(config_dir: str, stack_path: str, project: str) -> str:
    return (f"{registry_cmds.docker(config_dir)} stack deploy --with-registry-auth --prune "
            f"-c {shlex.quote(stack_path)} {shlex.quote(project)}")


def deploy(target: Host, config_dir: str, stack_path: str, project: str) -> str:
    """`stack deploy` the file; returns the leader's clock just before (updates started after it
    are this deploy's)."""
    since = target.run(clock_command(), "reading the leader's clock").stdout.strip()
    target.run(deploy_command(config_dir, stack_path, project), "deploying the stack to the swarm",
               timeout=600, hint=HINT)
    return since
