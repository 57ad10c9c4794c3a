"""What the HL7 v2 feeds answered, by sender and message control id (HL7 v2.5 2.10, 2.11: MSH-10
identifies a message; a sender that gets no ACK sends it again). The door (`partage.hl7`) keeps
the answer of each message it accepted in the transaction of the message's effect, and answers a
retransmission from here instead of processing it again.

Bounded: rows older than `max_age` seconds, and all but (at most) the newest `max_messages`, are
deleted as new ones are written (PARTAGE_HL7_ANSWERS_MAX_AGE, PARTAGE_HL7_ANSWERS_MAX_MESSAGES).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, bindparam, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from ..textsafe import without_nul
from . import schema

T = schema.hl7_answers
_KEEP = {"postgresql": pg_insert(T).on_conflict_do_nothing(index_elements=["message_key"]),
         "sqlite": sqlite_insert(T).on_conflict_do_nothing(index_elements=["message_key"])}
_RECALL = select(T.c.digest, T.c.code, T.c.text, T.c.answered_at).where(T.c.message_key == bindparam("key"))
_EXPIRED = T.delete().where(T.c.answered_at < bindparam("cutoff"))
# Keys grow with each row kept: every row more than `keep` keys below the newest goes (one
# index probe; a key drawn by a transaction rolled back leaves a gap, so at most `keep` stay).
_OVER_COUNT = T.delete().where(T.c.pk <= select(func.max(T.c.pk)).scalar_subquery() - bindparam("keep"))


@dataclass(frozen=True)
class Answer:
    """A remembered answer: the message's content digest, MSA-1, MSA-3, when (epoch seconds)."""

    digest: str
    code: str
    text: str
    answered_at: int


def recall(conn: Connection, key: str) -> Answer | None:
    """The answer kept for this message key, if any."""
    row = conn.execute(_RECALL, {"key": key}).first()
    return Answer(row.digest, row.code, row.text, row.answered_at) if row is not None else None


def keep(conn: Connection, key: str, *, sender: str, control_id: str, answer: Answer) -> bool:
    """Keep `answer` for this key; False (nothing written) when one is already kept for it, by a
    transaction committed before this one (PostgreSQL: the insert waits for a concurrent one
    holding the key, and then finds it; SQLite's writers take turns)."""
    inserted = conn.execute(_KEEP[conn.dialect.name], {
        "message_key": key, "sender": without_nul(sender), "control_id": without_nul(control_id),
        "digest": answer.digest, "code": answer.code, "text": without_nul(answer.text),
        "answered_at": answer.answered_at})
    return bool(inserted.rowcount)


def prune(conn: Connection, *, now: int, max_age: int, max_messages: int) -> None:
    """Forget the answers older than `max_age` seconds and all but the newest `max_messages`."""
    conn.execute(_EXPIRED, {"cutoff": now - max_age})
    conn.execute(_OVER_COUNT, {"keep": max_messages})
