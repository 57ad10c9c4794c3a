"""The replay cache of single-use credentials (SAML assertion IDs, JWT jti), in the registry's
database so that every worker process sees every use."""

from __future__ import annotations

from sqlalchemy import bindparam
from sqlalchemy.exc import IntegrityError

from . import schema
from .store import Registry


class AlreadyUsed(Exception):
    """The credential id is in the cache: this is a replay."""


# Built once: run on every authenticated request.
_EXPIRED = schema.credential_uses.delete().where(schema.credential_uses.c.expires_at < bindparam("now"))
_USE = schema.credential_uses.insert()


def consume(registry: Registry, key: str, *, expires_at: int, now: int) -> None:
    """Record one use of `key` (kept until `expires_at`), dropping uses expired by `now`;
    AlreadyUsed if the key was recorded before."""
    try:
        with registry.write() as conn:
            conn.execute(_EXPIRED, {"now": now})
            conn.execute(_USE, {"credential_id": key, "expires_at": expires_at})
    except IntegrityError as exc:
        raise AlreadyUsed(key) from exc
