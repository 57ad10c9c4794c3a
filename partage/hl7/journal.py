"""The journal of the document feed's messages not processed, kept until a replay succeeds.

One pair of files per distinct message (named by the SHA-256 of its text) under
`<data dir>/hl7/not-processed/`: `<hash>.hl7` (the message, as received) and `<hash>.json`
(acknowledgement code, reason, rule ids, attempts, last attempt). A message that is later
accepted, by `partage hl7 replay` or by the sender retransmitting it, is removed. The message is
kept as bytes in the charset its MSH-18 declares, so that a replay is read as the original was.

Bounded: at most `max_messages` messages and `max_bytes` bytes (PARTAGE_HL7_JOURNAL_MAX_MESSAGES,
PARTAGE_HL7_JOURNAL_MAX_BYTES): any MLLP peer can send refused messages. Past the bounds a new
message is not kept (it is still answered AE / AR: its sender keeps it).
"""

from __future__ import annotations

import hashlib
import json
import os
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..metadata.er7 import encode
from ..services import Services
from .outcome import FeedOutcome


class Journal:
    def __init__(self, directory: Path, *, max_messages: int = 0, max_bytes: int = 0) -> None:
        self.directory = directory
        self.max_messages = max_messages   # 0: no bound (reading the journal: replay, list)
        self.max_bytes = max_bytes

    @classmethod
    def of(cls, services: Services) -> Journal:
        settings = services.settings
        return cls.in_data_dir(settings.data_dir, max_messages=settings.hl7_journal_max_messages,
                               max_bytes=settings.hl7_journal_max_bytes)

    @classmethod
    def in_data_dir(cls, data_dir: Path, *, max_messages: int = 0, max_bytes: int = 0) -> Journal:
        return cls(Path(data_dir) / "hl7" / "not-processed", max_messages=max_messages, max_bytes=max_bytes)

    @staticmethod
    def key(text: str) -> str:
        return hashlib.sha256(text.encode("utf-8")).hexdigest()

    def keep(self, text: str, outcome: FeedOutcome) -> Path | None:
        """Keep `text` (once) and its latest reason, counting the attempts; None when the journal
        is full and `text` was not already in it."""
        self.directory.mkdir(parents=True, exist_ok=True)
        key = self.key(text)
        meta_path = self.directory / f"{key}.json"
        message_path = self.directory / f"{key}.hl7"
        if not message_path.exists():
            data = encode(text)
            if not self._room_for(len(data)):
                return None
            write_atomically(message_path, data)
        reason = {"control_id": outcome.control_id, "ack": outcome.code, "reason": outcome.text,
                  "rules": [p.rule for p in outcome.problems], "attempts": _attempts(meta_path) + 1,
                  "last_attempt": datetime.now(UTC).isoformat(timespec="seconds")}
        write_atomically(meta_path, json.dumps(reason, ensure_ascii=False, indent=1).encode("utf-8"))
        return message_path

    def _room_for(self, size: int) -> bool:
        """Whether one more message of `size` bytes stays within the bounds."""
        if not (self.max_messages or self.max_bytes):
            return True
        kept = list(self.directory.glob("*.hl7"))
        if self.max_messages and len(kept) >= self.max_messages:
            return False
        if self.max_bytes:
            used = 0
            for path in kept:
                try:
                    used += path.stat().st_size
                except OSError:   # removed meanwhile (accepted by a replay)
                    continue
            return used + size <= self.max_bytes
        return True

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
