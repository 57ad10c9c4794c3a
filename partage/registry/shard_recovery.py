"""What a sharded registry's commits without two-phase commit can leave, found and repaired
(`partage fsck`; docs/deployment.md, "Commit without two-phase commit, and the recovery").

postgres_fdw commits each shard's transaction, then the coordinator's. A coordinator lost
between the two leaves a submission's shard half (`lost_submissions`, whose in-place changes
`undo_lost` sets back), a removal's coordinator half undone (`indexed_only`), and a merge
across shards its copies or its originals (`merge_leftovers`). The global index
(registry.entry_index), written in the coordinator's transaction, is the witness of what
committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import Connection, select

from ..metadata.kinds import KIND_ASSOCIATION, KIND_DOCUMENT, KIND_FOLDER, KIND_SUBMISSION_SET
from ..metadata.model import Association, AssociationType, AvailabilityStatus, DocumentEntry, Folder
from . import consistency, entry_index, patients, schema
from .batches import chunks
from .indexing import object_from_row, status_short
from .register import dependents, release_unique_ids, set_status
from .updates import STATUS_BY_SHORT

OBJ = schema.registry_objects
HAS_MEMBER = AssociationType.HAS_MEMBER.value

def lost_submissions(conn: Connection, *, min_age_seconds: float = 300.0) -> list[str]:
    """entryUUIDs of the objects of submissions whose coordinator transaction did not commit.

    A registered submission set always has its row in the global index (`entry_index`, on the
    coordinator, written in the submission's transaction with its uniqueId claims); one without
    is the shard half of a submission whose coordinator half was lost. (The index, not the
    claims, is the witness: an ITI-57 update made by an earlier Partage did not claim its
    SubmissionSet's uniqueId, yet it committed; `consistency.unclaimed_unique_ids` finds
    those.) Its members (documents and folders no other submission set has) and the
    associations of that submission go with it. Only submission
    sets registered at least `min_age_seconds` ago are judged: a submission in flight
    commits its shard half a moment before the coordinator's."""
    indexed = entry_index.entry_uuids
    cutoff = consistency.registered_before(min_age_seconds)
    sets = {row.entry_uuid: row.patient_pk for row in conn.execute(
        select(OBJ.c.entry_uuid, OBJ.c.patient_pk).where(
            OBJ.c.kind == KIND_SUBMISSION_SET, OBJ.c.registered_at <= cutoff,
            ~select(indexed.c.entry_uuid).where(indexed.c.entry_uuid == OBJ.c.entry_uuid).exists()))}
    if not sets:
        return []
    found: set[str] = set(sets)
    for patient in set(sets.values()):
        rows = conn.execute(select(OBJ.c.entry_uuid, OBJ.c.kind, OBJ.c.source_uuid, OBJ.c.target_uuid,
                                   OBJ.c.assoc_type, OBJ.c.registered_at)
                            .where(OBJ.c.patient_pk == patient)).all()
        kinds = {r.entry_uuid: r.kind for r in rows}
        owners: dict[str, set[str]] = {}
        for r in rows:
            if r.kind == KIND_ASSOCIATION and r.assoc_type == HAS_MEMBER and kinds.get(r.source_uuid) == \
                    KIND_SUBMISSION_SET:
                owners.setdefault(r.target_uuid, set()).add(r.source_uuid)
        found |= {uuid for uuid, by in owners.items()
                  if kinds.get(uuid) in (KIND_DOCUMENT, KIND_FOLDER) and by <= found}
        changed = True
        while changed:   # associations with an end gone, and HasMembers of a set gone
            more = {r.entry_uuid for r in rows if r.kind == KIND_ASSOCIATION and r.entry_uuid not in found
                    and (r.source_uuid in found or r.target_uuid in found)}
            changed = bool(more)
            found |= more
    return sorted(found)


# A lost submission's changes to registered objects are set back only where the object was
# changed last within this long of the submission (registered_at and updated_at are seconds).
LOST_CHANGE_WINDOW_S = 2


@dataclass
class MergeLeftovers:
    """Rows whose patient is not the one the global index names: what a merge across shards
    leaves when its second step did not run (`stale`, the merged patient's originals, their
    copies on the survivor's shard) or when its coordinator commit failed after the copy
    (`copies`, the survivor's copies of a merge that did not happen: send the A40 again)."""

    stale: dict[int, list[str]] = field(default_factory=dict)    # merged patient pk -> entryUUIDs
    copies: list[str] = field(default_factory=list)
    misplaced: list[str] = field(default_factory=list)   # the index names a patient without the row


def merge_leftovers(conn: Connection) -> MergeLeftovers:
    """Compare every object's patient with the global index's (a full scan, as fsck is)."""
    indexed = entry_index.entry_uuids
    rows = conn.execute(select(OBJ.c.pk, OBJ.c.patient_pk, OBJ.c.entry_uuid, indexed.c.patient_pk.label("indexed"))
                        .join(indexed, indexed.c.entry_uuid == OBJ.c.entry_uuid)
                        .where(OBJ.c.patient_pk != indexed.c.patient_pk)).all()
    out = MergeLeftovers()
    if not rows:
        return out
    pks = sorted({r.patient_pk for r in rows} | {r.indexed for r in rows})
    merged = dict(conn.execute(select(schema.patients.c.pk, schema.patients.c.merged_into)
                               .where(schema.patients.c.pk.in_(pks))).all())
    held = {(r.patient_pk, r.pk) for r in conn.execute(select(OBJ.c.patient_pk, OBJ.c.pk).where(
        OBJ.c.patient_pk.in_(sorted({r.indexed for r in rows})), OBJ.c.pk.in_(sorted({r.pk for r in rows}))))}
    for r in rows:
        if (r.indexed, r.pk) not in held:
            out.misplaced.append(r.entry_uuid)
        elif merged.get(r.patient_pk) is not None:
            out.stale.setdefault(r.patient_pk, []).append(r.entry_uuid)
        else:
            out.copies.append(r.entry_uuid)
    return out


def remove_stale(conn: Connection, merged_patients: list[int]) -> int:
    """Delete what merges of these patients left on their shards (their rows copied to the survivor's)."""
    return sum(patients.drop_copied(conn, gone, patients.surviving(conn, gone)) for gone in merged_patients)


def remove_lost(conn: Connection, entry_uuids: list[str]) -> list[str]:
    """Delete those objects and their index rows (codes, authors), on their shards, once what
    the lost submission changed in place is undone (`undo_lost`); returns the objects restored."""
    restored = undo_lost(conn, entry_uuids)
    for chunk in chunks(entry_uuids):
        rows = conn.execute(select(OBJ.c.pk, OBJ.c.patient_pk).where(OBJ.c.entry_uuid.in_(chunk))).all()
        for row in rows:
            for table in (schema.object_codes, schema.object_authors):
                conn.execute(table.delete().where(table.c.patient_pk == row.patient_pk, table.c.object_pk == row.pk))
            conn.execute(OBJ.delete().where(OBJ.c.patient_pk == row.patient_pk, OBJ.c.pk == row.pk))
        entry_index.removed(conn, chunk)
    return restored


def indexed_only(conn: Connection) -> list[str]:
    """entryUUIDs the global index holds that are on no shard: what a removal (ITI-62, a purge)
    leaves when its shards committed and its coordinator half was lost."""
    indexed = entry_index.entry_uuids
    return sorted(conn.execute(select(indexed.c.entry_uuid).where(
        ~select(OBJ.c.pk).where(OBJ.c.entry_uuid == indexed.c.entry_uuid).exists())).scalars())


def remove_index_rows(conn: Connection, entry_uuids: list[str]) -> None:
    """Finish such a removal on the coordinator: the uniqueIds no object holds any more are
    released, then the index rows are deleted (as the removal's own transaction does)."""
    indexed = entry_index.entry_uuids
    for chunk in chunks(entry_uuids):
        release_unique_ids(conn, [u for u in conn.execute(select(indexed.c.unique_id).where(
            indexed.c.entry_uuid.in_(chunk))).scalars() if u])
        entry_index.removed(conn, chunk)


def undo_lost(conn: Connection, entry_uuids: list[str]) -> list[str]:
    """The statuses a lost submission or update changed on registered objects, set back.

    Its shard half committed what it changed in place: the version it succeeded deprecated
    (ITI-57), the document it replaced deprecated with its addenda and transforms (RPLC,
    XFRM_RPLC), the objects it changed the status of (UpdateAvailabilityStatus). Removing only
    its own objects would leave those changes with nothing behind them (a document with no
    Approved version, which the submission sent again cannot update). A version it succeeded
    or replaced is set back to Approved (the status an update or a replacement requires; an
    Archived one too, a status the registry does not keep apart); a status change is set back
    to its OriginalStatus. Only an object still in the status the lost submission gave it and
    changed last while it ran (from its registration time to `LOST_CHANGE_WINDOW_S` after): an
    earlier deprecation was not its doing, a later change committed and stands."""
    lost = set(entry_uuids)
    rows = [r for chunk in chunks(entry_uuids) for r in conn.execute(
        select(OBJ.c.entry_uuid, OBJ.c.body, OBJ.c.registered_at).where(OBJ.c.entry_uuid.in_(chunk))).all()]
    if not rows:
        return []
    since = min(r.registered_at for r in rows)[:14]
    at = datetime.strptime(max(r.registered_at for r in rows)[:14], "%Y%m%d%H%M%S")
    until = (at + timedelta(seconds=LOST_CHANGE_WINDOW_S)).strftime("%Y%m%d%H%M%S")
    back: dict[str, tuple[str, str]] = {}   # entryUUID -> (status it has now, status to set back)
    deprecated, approved = AvailabilityStatus.DEPRECATED.short, AvailabilityStatus.APPROVED.short
    for row in rows:
        obj = object_from_row(row.body)
        if isinstance(obj, Association) and obj.target_uuid not in lost:
            if obj.association_type in (AssociationType.RPLC, AssociationType.XFRM_RPLC):
                for replaced in [obj.target_uuid, *dependents(conn, obj.target_uuid, status="Deprecated")]:
                    back[replaced] = (deprecated, approved)
            elif obj.association_type == AssociationType.UPDATE_AVAILABILITY_STATUS:
                back[obj.target_uuid] = (status_short(obj.new_status), status_short(obj.original_status))
        elif isinstance(obj, DocumentEntry | Folder) and obj.lid and obj.lid != obj.entry_uuid:
            prior = conn.execute(select(OBJ.c.entry_uuid).where(
                OBJ.c.lid == obj.lid, OBJ.c.entry_uuid.not_in(sorted(lost)), *entry_index.route(conn, lids=[obj.lid]))
                .order_by(OBJ.c.version.desc())).first()
            if prior is not None:
                back[prior.entry_uuid] = (deprecated, approved)
    restored = []
    for entry_uuid, (now, before) in back.items():
        current = conn.execute(select(OBJ.c.status, OBJ.c.updated_at).where(
            OBJ.c.entry_uuid == entry_uuid, *entry_index.route(conn, [entry_uuid]))).first()
        status = STATUS_BY_SHORT.get(before)
        if status is None or current is None or current.status != now or now == before:
            continue
        if not current.updated_at or not since <= current.updated_at[:14] <= until:
            continue   # not changed by the lost submission, or changed again since by one that committed
        set_status(conn, [entry_uuid], status)
        restored.append(entry_uuid)
    return sorted(restored)
