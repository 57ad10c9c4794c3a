"""The registry's side of `partage fsck`: which blobs registered documents point at, and the
objects a half-done submission would leave (documents and folders of no submission set,
associations with a missing end), uniqueIds registered without their claim, lineages
with more than one current version (an update across shards whose second step did not run),
and lineages of several versions that registry.lineages does not hold. One transaction per
submission means there should be none."""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, func, or_, select

from ..metadata.kinds import KIND_ASSOCIATION, KIND_DOCUMENT, KIND_FOLDER, KIND_SUBMISSION_SET
from ..metadata.model import AssociationType
from . import lineages, register, schema
from .batches import chunks

OBJ = schema.registry_objects
HAS_MEMBER = AssociationType.HAS_MEMBER.value


def document_blobs(conn: Connection) -> list[Row[*tuple[Any, ...]]]:
    """(entry_uuid, blob_address) of every registered object that has content."""
    return list(conn.execute(select(OBJ.c.entry_uuid, OBJ.c.blob_address)
                             .where(OBJ.c.blob_address.is_not(None))).all())


def tombstone_blobs(conn: Connection) -> set[str]:
    """Blob addresses removal tombstones keep (docs/access.md, "Removal leaves a tombstone"): the
    bytes stay until the administrator's `access purge --removed`, never fsck's."""
    t = schema.removed_objects
    return set(conn.execute(select(t.c.blob_address).where(t.c.blob_address.is_not(None))).scalars())


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


def registered_before(min_age_seconds: float) -> str:
    """registered_at (UTC DTM digits) of an object min_age_seconds old: what is younger may
    belong to a submission still in flight."""
    return (datetime.now(UTC) - timedelta(seconds=min_age_seconds)).strftime("%Y%m%d%H%M%S")


def unclaimed_unique_ids(conn: Connection, *, before: str) -> list[Row[*tuple[Any, ...]]]:
    """Documents, SubmissionSets and Folders registered before `before` whose uniqueId has no
    claim in `unique_ids`, oldest first, as (entry_uuid, unique_id, kind, lid, hash).

    Every submission and update claims its uniqueIds in its own transaction, and the claims
    are what XDSDuplicateUniqueIdInRegistry is checked against; an ITI-57 update made by an
    earlier Partage did not claim its SubmissionSet's (nor a new Folder's), so that uniqueId
    could be registered again."""
    claims = schema.unique_ids
    return list(conn.execute(
        select(OBJ.c.entry_uuid, OBJ.c.unique_id, OBJ.c.kind, OBJ.c.lid, OBJ.c.hash)
        .where(OBJ.c.kind.in_([KIND_DOCUMENT, KIND_SUBMISSION_SET, KIND_FOLDER]), OBJ.c.unique_id.is_not(None),
               OBJ.c.registered_at <= before,
               ~select(claims.c.unique_id).where(claims.c.unique_id == OBJ.c.unique_id).exists())
        .order_by(OBJ.c.registered_at, OBJ.c.pk)).all())


def claim_unclaimed(conn: Connection, rows: list[Row[*tuple[Any, ...]]]) -> int:
    """Claim those uniqueIds for their objects (`fsck --repair`): one claim per uniqueId, the
    oldest object's (its logical id), as its registration would have. Returns the claims made."""
    values: dict[str, dict[str, Any]] = {}
    for row in rows:
        values.setdefault(row.unique_id, {"unique_id": row.unique_id, "kind": row.kind, "lid": row.lid,
                                          "hash": row.hash if row.kind == KIND_DOCUMENT else None})
    register.restore_claims(conn, list(values.values()))
    return len(values)


def unsettled_versions(conn: Connection, *, before: str, ignoring: Collection[str] = (),
                       merged: Collection[int] = ()) -> list[str]:
    """Logical ids of DocumentEntries and Folders with a version older than the latest that is
    not Deprecated, the latest registered before `before`: an ITI-57 that moved them to a
    patient on another shard committed, its second step (`updates.settle_versions`) did not.
    Only lineages updated at least once can be one (version > 1: a small share, on each shard
    by its own condition), then their versions are compared; the objects `ignoring` names (a
    lost submission's) and the rows of `merged` patients (a merge's originals, whose copies are
    the survivor's) are left out: fsck removes those first."""
    kinds = [KIND_DOCUMENT, KIND_FOLDER]
    updated = sorted(set(conn.execute(select(OBJ.c.lid).where(OBJ.c.kind.in_(kinds), OBJ.c.version > 1)).scalars()))
    out = []
    for chunk in chunks(updated):
        rows = [r for r in conn.execute(select(
            OBJ.c.entry_uuid, OBJ.c.patient_pk, OBJ.c.lid, OBJ.c.version, OBJ.c.status, OBJ.c.registered_at).where(
                OBJ.c.kind.in_(kinds), OBJ.c.lid.in_(chunk)))
                if r.entry_uuid not in ignoring and r.patient_pk not in merged]
        latest = {r.lid: r for r in sorted(rows, key=lambda r: r.version)}   # the last one wins
        out += sorted({r.lid for r in older_current(rows) if latest[r.lid].registered_at[:14] <= before})
    return out


def older_current(rows: Iterable[Any]) -> list[Any]:
    """Of rows (lid, version, status) of DocumentEntry or Folder versions, those older than
    their lineage's latest that are not Deprecated: what one ITI-57 would have deprecated."""
    rows = list(rows)
    latest: dict[str, int] = {}
    for row in rows:
        latest[row.lid] = max(latest.get(row.lid, 0), row.version)
    return [r for r in rows if r.version < latest[r.lid] and r.status != "Deprecated"]


def unrecorded_lineages(conn: Connection, *, ignoring: Collection[str] = (),
                        merged: Collection[int] = ()) -> dict[str, set[int]]:
    """Lineages of more than one document version, and lineages of a transform (the source of
    an XFRM), each with the patients holding a version that `registry.lineages` does not name:
    the view would take such a version for its lineage's newest, or judge such a transform
    without the document it transforms. Written with every replacement, new version and
    transform, and filled by migrations 0012 and 0019, there should be none. `ignoring` and
    `merged` as in `unsettled_versions`."""
    several = list(conn.execute(select(OBJ.c.lineage).where(
        OBJ.c.kind == KIND_DOCUMENT, OBJ.c.lineage.is_not(None)).group_by(OBJ.c.lineage)
        .having(func.count() > 1)).scalars())
    out: dict[str, set[int]] = {}
    for chunk in chunks(sorted(several)):
        rows = [r for r in conn.execute(select(OBJ.c.entry_uuid, OBJ.c.lineage, OBJ.c.patient_pk).where(
            OBJ.c.kind == KIND_DOCUMENT, OBJ.c.lineage.in_(chunk)))
            if r.entry_uuid not in ignoring and r.patient_pk not in merged and r.patient_pk is not None]
        counts = Counter(r.lineage for r in rows)
        held = lineages.holders(conn, chunk)
        for r in rows:
            if counts[r.lineage] > 1 and r.patient_pk not in held.get(r.lineage, set()):
                out.setdefault(r.lineage, set()).add(r.patient_pk)
    source = OBJ.alias("transform")
    transforms = [r for r in conn.execute(
        select(source.c.entry_uuid, func.coalesce(source.c.lineage, source.c.lid).label("lineage"),
               source.c.patient_pk).distinct()
        .select_from(OBJ.join(source, source.c.entry_uuid == OBJ.c.source_uuid))
        .where(OBJ.c.kind == KIND_ASSOCIATION, OBJ.c.assoc_type == str(AssociationType.XFRM),
               source.c.kind == KIND_DOCUMENT))
        if r.entry_uuid not in ignoring and r.patient_pk not in merged and r.patient_pk is not None]
    for chunk in chunks(sorted({r.lineage for r in transforms})):
        held = lineages.holders(conn, chunk)
        for r in transforms:
            if r.lineage in chunk and r.patient_pk not in held.get(r.lineage, set()):
                out.setdefault(r.lineage, set()).add(r.patient_pk)
    return out
