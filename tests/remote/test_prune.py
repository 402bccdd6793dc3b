"""remote.prune for real: releases over the sshd, image tags on the host's Docker engine.

The engine is shared with whatever else runs on this machine, so the two engine-wide commands
(`docker image prune`, `docker builder prune`) are answered here instead of sent: everything
else (listing, the release folders, `docker image rm` of the tags made here) is real."""
from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import pytest

from remote import prune, sync
from remote.host import Host, Result, SshExecutor
from remote.layout import ReleaseLayout
from tests.conftest import need
from tests.remote.dockerlab import docker_ok, import_busybox
from tests.remote.stackfixture import make_stack

pytestmark = pytest.mark.docker
ENGINE_WIDE = ("docker image prune", "docker builder prune")


class SparingEngine:
    """The sshd's executor, but the engine-wide prunes are only recorded (see the module doc)."""

    def __init__(self, inner: SshExecutor) -> None:
        self.inner, self.host, self.spared = inner, inner.host, []

    def run(self, command: str, timeout: float | None = None) -> Result:
        if command.startswith(ENGINE_WIDE):
            self.spared.append(command)
            return Result(command, 0, "Total reclaimed space: 0B\n")
        return self.inner.run(command, timeout)

    def put(self, path: str, data: bytes, mode: int | None = None) -> None:
        self.inner.put(path, data, mode)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def tags():
    """Image tags made by the test, removed after it whatever happens."""
    made: list[str] = []
    yield made
    if made:
        subprocess.run(["docker", "image", "rm", *made], capture_output=True)


def refs_on_engine(prefix: str) -> set[str]:
    out = subprocess.run(["docker", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
                         capture_output=True, text=True, check=True).stdout
    return {line for line in out.split() if prefix in line}


def test_old_releases_and_their_images_and_registry_copies_go_the_rest_stays(conn, base, tmp_path, tags):
    need(docker_ok(), "a Docker engine", missing="is not reachable (start dockerd)")
    busybox = import_busybox()
    tags.append(busybox)
    engine = SparingEngine(SshExecutor(conn))
    host = Host(name="sshd", host=conn.host, layout=ReleaseLayout(base), connector=lambda quick: engine).open()
    stack = make_stack(tmp_path / "stack")
    repo = f"sdtest-prune-{uuid.uuid4().hex[:8]}-api"
    ids = []
    for n in range(4):      # four releases, each with its own api image, also pushed to a registry
        (stack / "api" / "main.py").write_text(f"print({n})\n")
        rid = sync.push(host, sync.LocalRelease.read(stack), "A=1\n").release_id
        ids.append(rid)
        meta = Path(base) / "releases" / rid / ".release.json"
        meta.write_text(json.dumps({**json.loads(meta.read_text()), "images": {"api": {"ref": f"{repo}:{rid}"}}}))
        for ref in (f"{repo}:{rid}", f"registry.example.test/acme/{repo}:{rid}"):
            subprocess.run(["docker", "tag", busybox, ref], check=True, capture_output=True)
            tags.append(ref)
    sync.switch(host, ids[3])

    gone = prune.doomed(host, keep=2)
    assert gone.releases == tuple(ids[:2]) and gone.live == ids[3] and gone.staying == tuple(ids[2:])
    node = prune.plan(host, gone, releases=True)
    assert node.images == tuple(sorted(f"{prefix}{repo}:{rid}" for rid in ids[:2]
                                       for prefix in ("", "registry.example.test/acme/")))
    assert node.build_cache                           # as `docker system df` reads it, e.g. "0B"
    assert all(len(line.split()) >= 2 for line in node.dangling)   # "<id> <size>"
    assert refs_on_engine(repo) == {f"{p}{repo}:{rid}" for rid in ids for p in ("", "registry.example.test/acme/")}

    done = prune.apply(host, node)
    assert sorted(p.name for p in (Path(base) / "releases").iterdir()) == ids[2:]
    assert refs_on_engine(repo) == {f"{p}{repo}:{rid}" for rid in ids[2:] for p in ("", "registry.example.test/acme/")}
    assert [c.split()[:3] for c in engine.spared] == [["docker", "image", "prune"], ["docker", "builder", "prune"]]
    assert done.reclaimed == {"dangling images": "Total reclaimed space: 0B", "build cache": "Total reclaimed space: 0B"}
    again = prune.plan(host, prune.doomed(host, keep=2), releases=True)
    assert not again.releases and not again.images    # (the engine's dangling images are not ours to count)
