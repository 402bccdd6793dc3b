"""The artifact writer: the only code that writes into a run folder, every byte redacted."""
from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from core.errors import OperatorError
from deploy.redact import REGISTRY, SecretRegistry, redact, redact_data

LOGS_HINT = ("free space on that disk, or set LOGS_DIR to a folder with room; the droplet's side is "
             "unaffected (`inv verify` shows what serves)")


class ArtifactError(OperatorError):
    """The run folder cannot be written (a full disk, say): the run's record is at stake."""

    def __init__(self, path: Path, exc: OSError) -> None:
        super().__init__(f"cannot write {path} ({exc.strerror or type(exc).__name__})", LOGS_HINT)


class ArtifactWriter:
    def __init__(self, root: Path, registry: SecretRegistry | None = None) -> None:
        self.root = root
        self.registry = registry or REGISTRY
        self._lock = threading.Lock()

    def _target(self, relpath: str) -> Path:
        rel = PurePosixPath(relpath)
        if rel.is_absolute() or ".." in rel.parts or not rel.parts:
            raise ValueError(f"artifact path must stay inside the run folder: {relpath!r}")
        path = self.root.joinpath(*rel.parts)
        path.parent.mkdir(parents=True, exist_ok=True)
        return path

    def write_text(self, relpath: str, text: str) -> Path:
        """Write ``text`` redacted; atomically, so a crash never leaves half a file."""
        return self._write(relpath, redact(text, self.registry))

    def write_json(self, relpath: str, data: Any) -> Path:
        """Redacted value by value (redact_data), so the file is always valid JSON."""
        plain = json.loads(json.dumps(data, default=str))
        return self._write(relpath, json.dumps(redact_data(plain, self.registry), indent=2) + "\n")

    def _write(self, relpath: str, clean: str) -> Path:
        path = self.root / relpath
        tmp = path.with_name(f".{path.name}.tmp")
        try:
            path = self._target(relpath)
            tmp.write_text(clean, encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)   # no half file left behind
            raise ArtifactError(path, exc) from None
        return path

    def append_text(self, relpath: str, text: str) -> None:
        try:
            path = self._target(relpath)
            with self._lock, path.open("a", encoding="utf-8") as fh:
                fh.write(redact(text, self.registry))
        except OSError as exc:
            raise ArtifactError(self.root / relpath, exc) from None

    def inventory(self, exclude: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        """Every file in the folder with its size and sha256, for run.json."""
        files = []
        for path in sorted(self.root.rglob("*")):
            if not path.is_file() or path.name.startswith("."):
                continue
            rel = path.relative_to(self.root).as_posix()
            if rel in exclude:
                continue
            data = path.read_bytes()
            files.append({"path": rel, "bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()})
        return files
