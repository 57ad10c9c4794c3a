"""On-disk cache of compiled schematrons, keyed by a hash of their sources.

What is cached is what Partage's compiler produces from a .sch and its includes (the XSLT
and the assert metadata kept beside it, `Generated`): reading 59 schematrons with their
672 included files and generating their stylesheets is work a restart need not redo.
Saxon-HE cannot save its own compiled form (SEF export needs Saxon-EE), so the Saxon
compilation itself happens when a model is first used, lazily.

The key hashes the compiler version, the .sch's path and the bytes of every file it
includes (transitively): editing any of them, or upgrading Partage's compiler, makes a new
entry. Entries are JSON files written atomically; an unreadable entry is ignored (and
rewritten). A cache directory that cannot be written is not an error: compilation then
simply happens every time, and a warning says so once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path

from .schematron_compile import COMPILER_VERSION, Generated, generate, include_closure

log = logging.getLogger("partage.cda")


def default_cache_dir() -> Path:
    """$XDG_CACHE_HOME/partage (or ~/.cache/partage): per user, outside any data directory."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "partage"


def source_key(sch_path: Path) -> str:
    digest = hashlib.sha256(f"partage-schematron {COMPILER_VERSION}\n{sch_path.resolve()}\n".encode())
    root = sch_path.resolve().parent
    for path in include_closure(sch_path):
        digest.update(os.path.relpath(path, root).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


class SchematronCache:
    """Generated stylesheets by source hash, under `directory/schematron/` (None: no cache)."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory / "schematron" if directory is not None else None
        self._warned = False
        self.hits = 0
        self.misses = 0

    def _path(self, key: str) -> Path | None:
        return self.directory / f"{key}.json" if self.directory is not None else None

    def load(self, sch_path: Path) -> Generated:
        """The compiled form of a .sch: from the cache when its sources are unchanged."""
        key = source_key(sch_path)
        path = self._path(key)
        if path is not None and path.is_file():
            try:
                generated = Generated.from_json(json.loads(path.read_text(encoding="utf-8")))
                self.hits += 1
                return generated
            except (OSError, ValueError, KeyError, TypeError) as exc:
                log.warning("schematron cache entry %s unreadable (%s); compiling again", path, exc)
        self.misses += 1
        generated = generate(sch_path)
        if path is not None:
            self._store(path, generated)
        return generated

    def _store(self, path: Path, generated: Generated) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=".json")
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                json.dump(generated.to_json(), out, ensure_ascii=False)
            os.replace(tmp, path)
        except OSError as exc:
            if not self._warned:
                log.warning("schematron cache %s not writable (%s): schematrons are compiled at each start",
                            path.parent, exc)
                self._warned = True
