"""Sessions of the professional's page: opened at sign-in, checked on every request, ended
at sign-out (the signed cookie alone could not be taken back). Keyed by the SHA-256 of the
session id, so that the table opens no session."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection, select

from . import schema

T = schema.page_sessions


def key(sid: str) -> str:
    return hashlib.sha256(sid.encode("utf-8")).hexdigest()


def open_session(conn: Connection, sid: str, actor_id: str, now: int, expires_at: int) -> None:
    conn.execute(T.delete().where(T.c.expires_at < now))   # forget the expired ones as we go
    conn.execute(T.insert().values(sid_hash=key(sid), actor_id=actor_id[:128], created_at=now,
                                   expires_at=expires_at))


def is_live(conn: Connection, sid: str, now: int) -> bool:
    row = conn.execute(select(T.c.expires_at, T.c.ended_at).where(T.c.sid_hash == key(sid))).first()
    return row is not None and row.ended_at is None and row.expires_at > now


def end(conn: Connection, sid: str, now: int) -> None:
    conn.execute(T.update().where(T.c.sid_hash == key(sid), T.c.ended_at.is_(None)).values(ended_at=now))
