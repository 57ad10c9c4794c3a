"""`partage fsck`: is every registered document's content present, is every blob used, and
is the registry whole?

A crash can leave a blob without a registration (written, then the transaction never
committed) or a temporary file; it can never leave a registration without its blob,
because the blob is renamed into place before the registry transaction begins. This
command proves that on a real data directory, and cleans the leftovers with --repair.
It also checks the registry: members of no submission set, associations with a missing end,
uniqueIds without their claim, derived rows of removed documents, and on a sharded registry
what a commit without two-phase commit can leave (docs/deployment.md, "Commit without
two-phase commit, and the recovery").
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TextIO

from .config import Settings
from .registry import consistency, derived, lineages, patients, shard_recovery, sharding, updates
from .repository.store import CHUNK
from .services import Services


@dataclass
class FsckReport:
    missing_blobs: list[tuple[str, str]] = field(default_factory=list)   # (entry_uuid, address)
    # (entry_uuid, address) of blobs present whose bytes are not the document's (changed,
    # truncated, a symlink or a directory in their place): readers refuse them
    corrupt_blobs: list[tuple[str, str]] = field(default_factory=list)
    min_age_seconds: float = 300.0
    unreferenced_blobs: list[str] = field(default_factory=list)
    temp_files: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)            # entry_uuid of no submission set
    dangling_associations: list[str] = field(default_factory=list)   # an end is missing
    derived_orphans: dict[str, list[str]] = field(default_factory=dict)  # table -> lids of no document / bytes
    # A sharded registry: objects on a shard whose submission's coordinator half never
    # committed (absent from the global index; postgres_fdw has no two-phase commit).
    lost: list[str] = field(default_factory=list)
    restored: list[str] = field(default_factory=list)   # --repair: statuses the lost ones had changed, set back
    # A sharded registry: entryUUIDs in the global index that are on no shard (a lost removal's).
    indexed_only: list[str] = field(default_factory=list)
    # A sharded registry: what a merge across shards left (registry.shard_recovery.MergeLeftovers).
    merges: shard_recovery.MergeLeftovers = field(default_factory=shard_recovery.MergeLeftovers)
    # (entry_uuid, uniqueId) of objects registered without their uniqueId's claim.
    unclaimed_ids: list[tuple[str, str]] = field(default_factory=list)
    # Logical ids with an older version not Deprecated (an update across shards, second step not run).
    unsettled: list[str] = field(default_factory=list)
    # Lineages of several versions whose patients registry.lineages does not all name.
    unrecorded: dict[str, set[int]] = field(default_factory=dict)
    # An unsharded registry: objects filed under a merged patient, which no query reaches
    # (merged patient pk -> entryUUIDs; registry.patients.stranded).
    stranded: dict[int, list[str]] = field(default_factory=dict)
    registered_documents: int = 0
    blobs: int = 0

    @property
    def consistent(self) -> bool:
        return not (self.missing_blobs or self.corrupt_blobs or self.orphans or self.dangling_associations
                    or self.derived_orphans or self.lost or self.indexed_only or self.unclaimed_ids or self.merges.stale or self.merges.copies
                    or self.merges.misplaced or self.unsettled or self.unrecorded or self.stranded)


Progress = Callable[[int, int], None]   # (documents checked, documents registered)


def check(services: Services, *, min_age_seconds: float = 300.0, progress: Progress | None = None) -> FsckReport:
    """Inspect; blobs younger than min_age may belong to a submission still in flight.
    `progress` is told as each registered document's blob is read (every byte of the store)."""
    report = FsckReport(min_age_seconds=min_age_seconds)
    with services.registry.read() as conn:
        rows = consistency.document_blobs(conn)
        referenced = consistency.tombstone_blobs(conn)   # kept for the audited purge
    verdicts: dict[str, str] = {}   # address -> "ok", "missing" or "corrupt" (each blob read once)
    for row in rows:
        report.registered_documents += 1
        if progress is not None:
            progress(report.registered_documents, len(rows))
        referenced.add(row.blob_address)
        if row.blob_address not in verdicts:
            verdicts[row.blob_address] = _verify(services, row.blob_address)
        verdict = verdicts[row.blob_address]
        if verdict == "missing":
            report.missing_blobs.append((row.entry_uuid, row.blob_address))
        elif verdict == "corrupt":
            report.corrupt_blobs.append((row.entry_uuid, row.blob_address))
    for address in services.blobs.addresses():
        report.blobs += 1
        if address not in referenced and services.blobs.age(address) >= min_age_seconds:
            report.unreferenced_blobs.append(address)
    _check_registry(services, report)
    with services.registry.read() as conn:
        if sharding.is_sharded(conn):
            report.lost = shard_recovery.lost_submissions(conn, min_age_seconds=min_age_seconds)
            report.merges = shard_recovery.merge_leftovers(conn)
            report.indexed_only = shard_recovery.indexed_only(conn)
        lost = set(report.lost)   # removed by --repair, not claimed
        report.unclaimed_ids = [(row.entry_uuid, row.unique_id) for row in consistency.unclaimed_unique_ids(
            conn, before=consistency.registered_before(min_age_seconds)) if row.entry_uuid not in lost]
        report.unsettled = consistency.unsettled_versions(conn, before=consistency.registered_before(min_age_seconds),
                                                          ignoring=lost, merged=set(report.merges.stale))
        report.stranded = patients.stranded(conn)
        report.unrecorded = consistency.unrecorded_lineages(conn, ignoring=lost, merged=set(report.merges.stale))
    with services.registry.read() as conn:
        report.derived_orphans = derived.orphans(conn)
    report.temp_files = services.blobs.leftovers(min_age_seconds)   # temp files, S3 uploads under incoming/
    return report


def _verify(services: Services, address: str) -> str:
    """Read the blob to its end: its SHA-256 must be its address (VerifiedStream)."""
    if not services.blobs.exists(address):
        return "missing"
    try:
        with services.blobs.open(address) as stream:
            while stream.read(CHUNK):
                pass
    except FileNotFoundError:
        return "missing"
    except OSError:   # BlobCorrupted, a directory, a symlink refused
        return "corrupt"
    return "ok"


def _referenced(services: Services) -> set[str]:
    with services.registry.read() as conn:
        return {row.blob_address for row in consistency.document_blobs(conn)} | consistency.tombstone_blobs(conn)


def _check_registry(services: Services, report: FsckReport) -> None:
    """Registry-internal consistency: every document and folder belongs to a submission set
    (a HasMember from one), and every association's two ends exist. A half-done
    submission would show here; one transaction per submission means none should."""
    with services.registry.read() as conn:
        report.orphans = consistency.orphans(conn)
        report.dangling_associations = consistency.dangling_associations(conn)


def remove_leftovers(services: Services, report: FsckReport) -> None:
    if report.lost:   # first: removing them may make derived rows orphans
        with services.registry.write() as conn:
            report.restored = shard_recovery.remove_lost(conn, report.lost)
        report.lost = []
    if report.indexed_only:   # a removal's coordinator half, finished
        with services.registry.write() as conn:
            shard_recovery.remove_index_rows(conn, report.indexed_only)
        report.indexed_only = []
    if report.merges.stale:   # a merge's originals, their copies on the survivor's shard
        with services.registry.write() as conn:
            shard_recovery.remove_stale(conn, sorted(report.merges.stale))
        report.merges.stale = {}
    if report.stranded:   # filed under a merged patient: the survivor's, as the merge would have made them
        with services.registry.write() as conn:
            for gone in report.stranded:
                patients.rehome(conn, gone)
        report.stranded = {}
    if report.unsettled:   # an update across shards: the versions it succeeded, deprecated
        with services.registry.write() as conn:
            updates.settle_versions(conn, report.unsettled)
        report.unsettled = []
    if report.unrecorded:   # the view reads these lineages' newest versions once they are named
        with services.registry.write() as conn:
            for lineage, pks in report.unrecorded.items():
                lineages.record(conn, lineage, pks)
        report.unrecorded = {}
    if report.unclaimed_ids:   # registered and kept: their uniqueIds are claimed, as registering does
        wanted = {entry_uuid for entry_uuid, _ in report.unclaimed_ids}
        with services.registry.write() as conn:
            consistency.claim_unclaimed(conn, [row for row in consistency.unclaimed_unique_ids(
                conn, before=consistency.registered_before(0)) if row.entry_uuid in wanted])
        report.unclaimed_ids = []
    if report.derived_orphans:   # facts and text of documents gone: derived data follows its document
        with services.registry.write() as conn:
            derived.delete_orphans(conn)
    if report.unreferenced_blobs:
        # Looked at again just before: a submission may have reused one of them (same bytes,
        # content addressing) since the check; its put made it young again (FilesystemBlobStore).
        report.unreferenced_blobs = [address for address in report.unreferenced_blobs
                                     if services.blobs.age(address) >= report.min_age_seconds]
        referenced = _referenced(services)
        report.unreferenced_blobs = [address for address in report.unreferenced_blobs if address not in referenced]
    for address in report.unreferenced_blobs:
        services.blobs.delete(address)
    for name in report.temp_files:
        services.blobs.remove_leftover(name)


def _progress_on(err: TextIO, every_s: float = 1.0) -> Progress:
    """A progress line on `err` at most once a second, and the last one at the end; a check
    shorter than a second says nothing."""
    state = {"last": time.monotonic(), "said": False}

    def say(done: int, total: int) -> None:
        now = time.monotonic()
        if now - float(state["last"]) >= every_s or (done == total and state["said"]):
            err.write(f"[{done}/{total}] documents' content read\n")
            err.flush()
            state.update(last=now, said=True)
    return say


def run_fsck(settings: Settings, *, repair: bool, min_age_seconds: float = 300.0) -> int:
    services = Services.open(settings, migrate=False)
    try:
        report = check(services, min_age_seconds=min_age_seconds, progress=_progress_on(sys.stderr))
        out = sys.stdout
        out.write(f"{report.registered_documents} registered documents with content, "
                  f"{report.blobs} blobs\n")
        for entry_uuid, address in report.missing_blobs:
            out.write(f"MISSING  {entry_uuid} -> blob {address} is absent\n")
        for entry_uuid, address in report.corrupt_blobs:
            out.write(f"CORRUPT  {entry_uuid} -> blob {address} does not hold the registered bytes\n")
        for address in report.unreferenced_blobs:
            out.write(f"UNUSED   blob {address} is referenced by no registry entry\n")
        for name in report.temp_files:
            out.write(f"TEMP     {name}\n")
        for entry_uuid in report.orphans:
            out.write(f"ORPHAN   {entry_uuid} is a member of no submission set\n")
        for entry_uuid in report.dangling_associations:
            out.write(f"DANGLING association {entry_uuid} has a missing end\n")
        for entry_uuid in report.lost:
            out.write(f"LOST     {entry_uuid} is on a shard, its submission's coordinator transaction never "
                      "committed\n")
        for entry_uuid in report.indexed_only:
            out.write(f"INDEXED  {entry_uuid} is in the global index and on no shard (a removal's coordinator "
                      "half was lost)\n")
        for gone, uuids in report.merges.stale.items():
            for entry_uuid in uuids:
                out.write(f"STALE    {entry_uuid} of merged patient {gone}: its copy is on the survivor's shard\n")
        for entry_uuid in report.merges.copies:
            out.write(f"COPY     {entry_uuid}: copied by a merge that did not commit (send the A40 again)\n")
        for entry_uuid in report.merges.misplaced:
            out.write(f"MISPLACED {entry_uuid}: the global index names a patient that does not hold it\n")
        for entry_uuid, unique_id in report.unclaimed_ids:
            out.write(f"NOCLAIM  {entry_uuid}: its uniqueId {unique_id} is not claimed (a later submission "
                      "could reuse it)\n")
        for gone, uuids in sorted(report.stranded.items()):
            for entry_uuid in uuids:
                out.write(f"STRANDED {entry_uuid} is filed under merged patient {gone}: no identifier leads to it "
                          "(--repair gives it to the surviving patient)\n")
        for lid in report.unsettled:
            out.write(f"UNSETTLED {lid}: an older version is not Deprecated (an update moved it to another "
                      "shard and its second step did not run)\n")
        for lineage, pks in sorted(report.unrecorded.items()):
            out.write(f"UNRECORDED lineage {lineage}: several versions, patients {sorted(pks)} not in "
                      "lineage_patients (their newest versions would not hide the older ones)\n")
        for table, lids in report.derived_orphans.items():
            for lid in lids:
                out.write(f"DERIVED  {table} rows of {lid}: no version of that document (or of its bytes) "
                          "remains\n")
        if repair:
            lost, unclaimed = len(report.lost), len(report.unclaimed_ids)
            stale = sum(len(v) for v in report.merges.stale.values())
            indexed_only, unsettled = len(report.indexed_only), len(report.unsettled)
            unrecorded = len(report.unrecorded)
            stranded = sum(len(v) for v in report.stranded.values())
            remove_leftovers(services, report)
            if stranded:
                out.write(f"repaired: gave {stranded} objects filed under merged patients to the survivors\n")
            if lost:
                out.write(f"repaired: removed {lost} objects of lost submissions from the shards, and set back "
                          f"the status of {len(report.restored)} objects they had changed\n")
            if unclaimed:
                out.write(f"repaired: claimed the uniqueIds of {unclaimed} objects\n")
            if indexed_only:
                out.write(f"repaired: removed {indexed_only} global index rows of removed objects\n")
            if unsettled:
                out.write(f"repaired: deprecated the older versions of {unsettled} documents or folders\n")
            if unrecorded:
                out.write(f"repaired: recorded the patients of {unrecorded} lineages of several versions\n")
            if stale:
                out.write(f"repaired: removed {stale} objects merges left on their shards\n")
            out.write(f"repaired: removed {len(report.unreferenced_blobs)} blobs, "
                      f"{len(report.temp_files)} temporary files and the derived rows of "
                      f"{len({lid for lids in report.derived_orphans.values() for lid in lids})} removed documents\n")
            report.derived_orphans = {}   # repaired
        out.write("consistent\n" if report.consistent else "INCONSISTENT\n")
        return 0 if report.consistent else 1
    finally:
        services.close()
