"""The journal of the document feed's messages not processed, kept until a replay succeeds.

One pair of files per distinct message (named by the SHA-256 of its text) under
`<data dir>/hl7/not-processed/`: `<hash>.hl7` (the message, as received) and `<hash>.json`
(acknowledgement code, reason, rule ids, attempts, last attempt). A message that is later
accepted, by `partage hl7 replay` or by the sender retransmitting it, is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..services import Services
from .outcome import FeedOutcome


class Journal:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @classmethod
    def of(cls, services: Services) -> Journal:
        return cls.in_data_dir(services.settings.data_dir)

    @classmethod
    def in_data_dir(cls, data_dir: Path) -> Journal:
        return cls(Path(data_dir) / "hl7" / "not-processed")

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def keep(self, text: str, outcome: FeedOutcome) -> Path:
        """Keep `text` (once) and its latest reason, counting the attempts."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.key(text)
        meta_path = self.directory / f"{key}.json"
        message_path = self.directory / f"{key}.hl7"
        if not message_path.exists():
            write_atomically(message_path, text.encode("utf-8"))
        reason = {"control_id": outcome.control_id, "ack": outcome.code, "reason": outcome.text,
                  "rules": [p.rule for p in outcome.problems], "attempts": _attempts(meta_path) + 1,
                  "last_attempt": datetime.now(UTC).isoformat(timespec="seconds")}
        write_atomically(meta_path, json.dumps(reason, ensure_ascii=False, indent=1).encode("utf-8"))
        return message_path

    def forget(self, text: str) -> None:
        key = self.key(text)
        for suffix in (".json", ".hl7"):
            (self.directory / f"{key}{suffix}").unlink(missing_ok=True)

    def entries(self) -> list[tuple[Path, dict[str, Any]]]:
        """The kept messages, oldest first, with their reasons ({} when unreadable)."""
        if not self.directory.is_dir():
            return []
        out: list[tuple[Path, dict[str, Any]]] = []
        for message_path in sorted(self.directory.glob("*.hl7"), key=lambda p: p.stat().st_mtime):
            try:
                meta = json.loads(message_path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                meta = {}
            out.append((message_path, meta if isinstance(meta, dict) else {}))
        return out


def _attempts(meta_path: Path) -> int:
    """Attempts recorded so far (0 when none or unreadable)."""
    if not meta_path.exists():
        return 0
    try:
        return int(json.loads(meta_path.read_text(encoding="utf-8")).get("attempts", 0))
    except (ValueError, OSError, AttributeError, TypeError):
        return 0


def write_atomically(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
