"""Every path of a deployment on the droplet, in one place.

    <base>/releases/<id>/                      one folder per release: the stack's files, and
        .release.json                          its metadata (outcome, who, the image ids built for it)
        .env                                   the env file it runs with (0600, uploaded by sftp only)
        compose.release.yml                    the image each service runs (tagged with a release id)
    <base>/releases/.staging-<id>/             a release being assembled (renamed into place when complete)
    <base>/current -> releases/<id>            the release that is live and healthy; switched atomically
    <base>/lock/holder.json                    the deploy lock and who holds it
    <base>/.lock-<nonce>/                      a lock being taken (renamed to lock/) or released
"""
from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import PurePosixPath

from core.errors import ConfigError

RELEASE_META = ".release.json"
RELEASE_ENV = ".env"
RELEASE_IMAGES = "compose.release.yml"
RELEASE_STACK = "stack.yml"          # the Swarm stack file a NODES > 1 deploy writes into its release
LOCK_HOLDER = "holder.json"


@dataclass(frozen=True)
class ReleaseLayout:
    base: str

    def __post_init__(self) -> None:
        if not PurePosixPath(self.base).is_absolute() or "\n" in self.base:
            raise ConfigError("REMOTE_BASE_DIR", f"is {self.base!r}, which is not an absolute path",
                              "set REMOTE_BASE_DIR to an absolute path such as /opt/<project>, or unset it")

    @property
    def releases(self) -> str:
        return posixpath.join(self.base, "releases")

    def release(self, release_id: str) -> str:
        return posixpath.join(self.releases, release_id)

    def meta(self, release_id: str) -> str:
        return posixpath.join(self.release(release_id), RELEASE_META)

    def staging(self, release_id: str) -> str:
        return posixpath.join(self.releases, f".staging-{release_id}")

    def upload(self, release_id: str) -> str:
        return posixpath.join(self.releases, f".upload-{release_id}.tar.gz")

    @property
    def current(self) -> str:
        return posixpath.join(self.base, "current")

    @property
    def current_tmp(self) -> str:
        return posixpath.join(self.base, ".current.tmp")

    @property
    def current_meta(self) -> str:
        return posixpath.join(self.current, RELEASE_META)

    @property
    def current_env(self) -> str:
        return posixpath.join(self.current, RELEASE_ENV)

    def env_file(self, release_id: str) -> str:
        return posixpath.join(self.release(release_id), RELEASE_ENV)

    def images_file(self, release_id: str) -> str:
        return posixpath.join(self.release(release_id), RELEASE_IMAGES)

    @property
    def lock_dir(self) -> str:
        return posixpath.join(self.base, "lock")

    @property
    def lock_holder(self) -> str:
        return posixpath.join(self.lock_dir, LOCK_HOLDER)

    def lock_staging(self, nonce: str) -> str:
        """A lock being prepared (its holder written) before one rename makes it the lock; the
        same prefix marks a released lock on its way out."""
        return posixpath.join(self.base, f".lock-{nonce}")
