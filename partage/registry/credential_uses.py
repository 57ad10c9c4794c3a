"""The replay cache of single-use credentials (SAML assertion IDs, JWT jti), in the registry's
database so that every worker process sees every use."""

from __future__ import annotations

from sqlalchemy.exc import IntegrityError

from . import schema
from .store import Registry


class AlreadyUsed(Exception):
    """The credential id is in the cache: this is a replay."""


def consume(registry: Registry, key: str, *, expires_at: int, now: int) -> None:
    """Record one use of `key` (kept until `expires_at`), dropping uses expired by `now`;
    AlreadyUsed if the key was recorded before."""
    t = schema.credential_uses
    try:
        with registry.write() as conn:
            conn.execute(t.delete().where(t.c.expires_at < now))
            conn.execute(t.insert(), dict(credential_id=key, expires_at=expires_at))
    except IntegrityError as exc:
        raise AlreadyUsed(key) from exc
