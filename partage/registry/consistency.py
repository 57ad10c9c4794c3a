"""The registry's side of `partage fsck`: which blobs registered documents point at, and the
objects a half-done submission would leave (documents and folders of no submission set,
associations with a missing end). One transaction per submission means there should be none."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Row, or_, select

from ..metadata.kinds import KIND_ASSOCIATION, KIND_DOCUMENT, KIND_FOLDER, KIND_SUBMISSION_SET
from ..metadata.model import AssociationType
from . import schema

OBJ = schema.registry_objects
HAS_MEMBER = AssociationType.HAS_MEMBER.value


def document_blobs(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """(entry_uuid, blob_address) of every registered object that has content."""
    return list(conn.execute(select(OBJ.c.entry_uuid, OBJ.c.blob_address)
                             .where(OBJ.c.blob_address.is_not(None))).all())


def orphans(conn: Connection) -> list[str]:
    """entryUUIDs of documents and folders no submission set has as a member."""
    members, owners = OBJ.alias("members"), OBJ.alias("owners")
    owned = (select(members.c.target_uuid)
             .join(owners, owners.c.entry_uuid == members.c.source_uuid)
             .where(members.c.kind == KIND_ASSOCIATION, members.c.assoc_type == HAS_MEMBER,
                    owners.c.kind == KIND_SUBMISSION_SET))
    return list(conn.execute(select(OBJ.c.entry_uuid).where(
        OBJ.c.kind.in_([KIND_DOCUMENT, KIND_FOLDER]), OBJ.c.entry_uuid.not_in(owned))).scalars())


def dangling_associations(conn: Connection) -> list[str]:
    """entryUUIDs of associations whose source or target is not in the registry."""
    ends = OBJ.alias("ends")
    return list(conn.execute(select(OBJ.c.entry_uuid).where(
        OBJ.c.kind == KIND_ASSOCIATION,
        or_(~select(ends.c.pk).where(ends.c.entry_uuid == OBJ.c.source_uuid).exists(),
            ~select(ends.c.pk).where(ends.c.entry_uuid == OBJ.c.target_uuid).exists()))).scalars())
