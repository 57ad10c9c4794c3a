"""partage.registry.sharding: the registry sharded by patient over two more PostgreSQL servers
(postgres_fdw foreign partitions), driven through a real `partage serve` with authentication on.

A patient's rows are on the shard its hash chooses and its FindDocuments reads that shard
only; the access policy holds; a patient merge moves rows across shards; a stopped shard is
an XDS error (no 500) and loses nothing; a coordinator that dies between the shards' commit
and its own leaves shard rows the coordinator never indexed, which `partage fsck --repair` removes."""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import re
import subprocess
import sys
import threading
import time

import psycopg
import pytest
from lxml import etree
from sqlalchemy import create_engine, select

from partage.access import saml
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.access.credentials import sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.fsck import check, remove_leftovers
from partage.hl7.patient_feed import handle_message
from partage.ingest import IngestService
from partage.lifecycle import remove_metadata, update_document_set
from partage.metadata.datatypes import XCN
from partage.metadata.er7 import Er7Message
from partage.metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    Code,
    SubmissionRequest,
)
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import queries as Q
from partage.registry import schema, shard_recovery, sharding, updates
from partage.registry.access_state import Records
from partage.registry.bulk import BulkLoader
from partage.registry.register import set_status
from partage.registry.store import Registry
from partage.services import Services
from tests import factories as F
from tests.conftest import PROJECT_ROOT, corpus_path
from tests.pg_shards import sharded_database, sharded_services
from tests.s3_support import blob_store_environment
from tests.support import LiveServer, postgres_database, run_nist_testkit
from tests.xdsclient import XdsClient, objects_of

pytestmark = pytest.mark.postgres

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
CONF = "1.2.250.1.213.1.1.4.13"
SOAP = "{http://www.w3.org/2003/05/soap-envelope}"


@dataclasses.dataclass
class Layout:
    server: LiveServer
    services: Services
    clusters: list
    shards: list[sharding.Shard]
    url: str


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, authority, pg_shard_clusters):
    """The coordinator (a database on the main PostgreSQL), two shards, documents in SeaweedFS
    (S3), `partage serve` with authentication on, and the same services in this process."""
    root = tmp_path_factory.mktemp("sharded")
    with contextlib.ExitStack() as stack:
        env = blob_store_environment(stack, root / "s3", "sharded")
        url, services, shards = sharded_services(stack, root, pg_shard_clusters, "partage_sharded", env)
        # `partage serve` on the sharded coordinator (it migrates: at head, nothing to do)
        server = stack.enter_context(LiveServer(root / "data", database_url=url, insecure_dev=False, mllp=False,
                                                env=env,
                                                extra_args=["--trust", str(authority.directory / "ca.pem")]))
        yield Layout(server, services, pg_shard_clusters, shards, url)


def _soap(layout, authority, name, pid) -> XdsClient:
    actor = sample_actors(pid)[name]
    return XdsClient(layout.server.base_url,
                     security=lambda: saml.security_header(authority.saml_assertion(actor)))


def _patient(layout, *, on_shard: int | None = None):
    """A new patient with a record open (the sample GP as médecin traitant), on the given shard."""
    while True:
        pid = F.patient_id()
        with layout.services.registry.write() as conn:
            pk = layout.services.registry.upsert_patient(conn, [pid])
        if on_shard is None or _shard_of(layout, pk) == on_shard:
            Records(layout.services.registry).open(pid, medecin_traitant="810001234567")
            return pid, pk


def _partition_of(layout, pk: int) -> int:
    count = sum(len(s.partitions) for s in layout.shards)
    with layout.services.registry.read() as conn:
        for i in range(count):
            if conn.exec_driver_sql("SELECT satisfies_hash_partition('registry_objects'::regclass, %(n)s, %(i)s, "
                                    "%(pk)s::integer)", {"n": count, "i": i, "pk": pk}).scalar():
                return i
    raise AssertionError("no partition")


def _shard_of(layout, pk: int) -> int:
    part = _partition_of(layout, pk)
    return next(k for k, s in enumerate(layout.shards) if part in s.partitions)


def _on_shard(layout, k: int, sql: str, params: dict | None = None) -> list[tuple]:
    """Read a shard's database directly, not through the coordinator."""
    engine = create_engine(layout.shards[k].url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.exec_driver_sql(sql, params or {})]
    finally:
        engine.dispose()


def _doc(pid, entry_id, author_id, conf=None):
    doc = F.document(pid, entry_id)
    doc.authors[0].person = XCN.parse(f"{author_id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    if conf:
        doc.confidentiality_codes = [Code("N", "2.16.840.1.113883.5.25", "Normal"), Code(conf, CONF, conf)]
    return doc


def _find(client, pid):
    return client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                 "$XDSDocumentEntryStatus": [APPROVED]})


def _uids(reply) -> set[str]:
    assert reply.status == "Success", reply.error_codes
    return {o.unique_id for o in objects_of(reply)}


def _submit(layout, authority, pid, docs):
    reply = _soap(layout, authority, "doctor", pid).provide_and_register(
        F.submission(pid, docs, contents=False), {d.entry_uuid: f"<doc>{d.entry_uuid}</doc>".encode() for d in docs})
    assert reply.status == "Success", reply.error_codes


# ------------------------------------------------------------------ flows
def test_submit_find_retrieve_on_both_shards(sharded, authority):
    doctor = sample_actors(F.patient_id())["doctor"].id
    for k in range(2):
        pid, pk = _patient(sharded, on_shard=k)
        normal, masked = _doc(pid, "normal", doctor), _doc(pid, "masked", doctor, conf="MASQUE_PS")
        _submit(sharded, authority, pid, [normal, masked])

        assert _uids(_find(_soap(sharded, authority, "doctor", pid), pid)) == {normal.unique_id, masked.unique_id}
        nurse = _soap(sharded, authority, "nurse", pid)     # MASQUE_PS is not for the nurse
        assert _uids(_find(nurse, pid)) == {normal.unique_id}
        retrieved, documents = nurse.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [masked.unique_id])
        assert retrieved.status == "Failure" and not documents
        retrieved, documents = _soap(sharded, authority, "gp", pid).retrieve(
            DEFAULT_REPOSITORY_UNIQUE_ID, [normal.unique_id])
        assert retrieved.status == "Success" and documents[normal.unique_id].read() == b"<doc>normal</doc>"
        assert not list(sharded.server.data_dir.glob("blobs/??/??/*"))   # the bytes are in SeaweedFS

        # the rows are on the shard the hash chose, and only there
        part = _partition_of(sharded, pk)
        here = _on_shard(sharded, k, f"SELECT kind, count(*) FROM registry_objects_p{part} "
                                     "WHERE patient_pk = %(pk)s GROUP BY kind ORDER BY kind", {"pk": pk})
        assert dict(here) == {"A": 2, "D": 2, "S": 1}   # two HasMember associations
        assert _on_shard(sharded, k, f"SELECT count(*) FROM object_codes_p{part} WHERE patient_pk = %(pk)s",
                         {"pk": pk})[0][0] > 0
        other = 1 - k
        for i in sharded.shards[other].partitions:
            assert _on_shard(sharded, other, f"SELECT count(*) FROM registry_objects_p{i} "
                                             "WHERE patient_pk = %(pk)s", {"pk": pk}) == [(0,)]
        with sharded.services.registry.read() as conn:   # the global index is on the coordinator
            claims = conn.exec_driver_sql("SELECT count(*) FROM unique_ids WHERE unique_id IN (%(a)s, %(b)s)",
                                          {"a": normal.unique_id, "b": masked.unique_id}).scalar()
        assert claims == 2


def _plan(layout, statement) -> str:
    sql = str(statement.compile(layout.services.registry.engine, compile_kwargs={"literal_binds": True}))
    with layout.services.registry.read() as conn:
        return "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql.replace("%", "%%")))


def test_a_patients_query_reads_one_shard(sharded, authority):
    pid, pk = _patient(sharded)
    _submit(sharded, authority, pid, [_doc(pid, "d", "810000000002")])
    part = _partition_of(sharded, pk)
    with sharded.services.registry.write() as conn:   # statistics for the foreign partitions
        assert len(sharding.analyze(conn)) == 6
    # FindDocuments as the registry sends it (registry.queries), a status filter
    plan = _plan(sharded, select(*Q.COLUMNS).where(Q.OBJ.c.patient_pk == pk,
                                                   *Q.document_clauses(DocumentFilter(statuses=["Approved"]))))
    scans = re.findall(r"Foreign Scan on (\w+)", plan)
    assert scans == [f"registry_objects_p{part}"], plan          # one foreign partition, on one shard
    # with a class code and an author filter: their subqueries name the patient too (sharded)
    wanted = DocumentFilter(statuses=["Approved"], codes={"class": [[Code("10", "1.2.250.1.213.1.1.4.1")]]},
                            author_persons=["%AUTEUR%"])
    with sharded.services.registry.read() as conn:
        clauses = Q.document_clauses(wanted, Q._sharded_pk(conn, pk))
    plan = _plan(sharded, select(*Q.COLUMNS).where(Q.OBJ.c.patient_pk == pk, *clauses))
    assert sorted(re.findall(r"Foreign Scan on (\w+)", plan)) == [
        f"object_authors_p{part}", f"object_codes_p{part}", f"registry_objects_p{part}"], plan
    with sharded.services.registry.read() as conn:
        assert len(Q.find_documents(conn, pk, wanted)) == 1
    found = QueryService(sharded.services, INSECURE_DEV_ACTOR).find_documents(
        pid, DocumentFilter(statuses=["Approved"])).objects
    assert len(found) == 1


def _a40(keep, gone) -> Er7Message:
    return Er7Message.parse("\r".join([
        "MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^A40^ADT_A39|m1|P|2.5", "EVN|A40|20240101120000",
        f"PID|||{keep.format()}||DUPONT^JEANNE||19700101|F", f"MRG|{gone.format()}"]) + "\r")


def test_merge_moves_a_patients_rows_to_the_survivors_shard(sharded, authority):
    """ITI-8 A40 across shards: the rows are copied in the merge's transaction, the originals
    deleted in a second one; nothing is left behind, nothing is read twice."""
    keep, keep_pk = _patient(sharded, on_shard=0)
    gone, gone_pk = _patient(sharded, on_shard=1)
    _submit(sharded, authority, keep, [_doc(keep, "k", "810000000002")])
    _submit(sharded, authority, gone, [_doc(gone, "g", "810000000002")])
    assert handle_message(sharded.services, _a40(keep, gone)).code == "AA"
    assert len(_uids(_find(_soap(sharded, authority, "doctor", keep), keep))) == 2
    for i in sharded.shards[1].partitions:
        assert _on_shard(sharded, 1, f"SELECT count(*) FROM registry_objects_p{i} WHERE patient_pk = %(pk)s",
                         {"pk": gone_pk}) == [(0,)]
        assert _on_shard(sharded, 1, f"SELECT count(*) FROM object_codes_p{i} WHERE patient_pk = %(pk)s",
                         {"pk": gone_pk}) == [(0,)]
    part = _partition_of(sharded, keep_pk)
    assert _on_shard(sharded, 0, f"SELECT count(*) FROM registry_objects_p{part} WHERE patient_pk = %(pk)s",
                     {"pk": keep_pk}) == [(6,)]   # two submissions: S, D, A each
    report = check(sharded.services, min_age_seconds=0)
    assert report.merges == shard_recovery.MergeLeftovers() and not report.lost


def test_a_merge_whose_second_step_did_not_run_loses_nothing_and_fsck_finishes_it(sharded, authority):
    """The merge committed (rows copied to the survivor's shard), its second step never ran:
    the survivor's documents are read once, the merged patient's originals are read by no
    query; fsck names them STALE and --repair deletes them, copies kept."""
    keep, keep_pk = _patient(sharded, on_shard=0)
    gone, gone_pk = _patient(sharded, on_shard=1)
    _submit(sharded, authority, gone, [_doc(gone, "g", "810000000002")])
    with sharded.services.registry.write() as conn:
        sharded.services.registry.merge_patients(conn, keep, gone)   # no settle_merge: as if it crashed
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(keep, DocumentFilter(statuses=["Approved"])).objects
    assert [o.entry_uuid for o in query.get_objects(schema.KIND_DOCUMENT, entry_uuids=[doc.entry_uuid]).objects] == [
        doc.entry_uuid]
    assert len(query.find_documents(gone, DocumentFilter(statuses=["Approved"])).objects) == 1   # the survivor's
    # a new version of the survivor's copy: the original is no older version of it
    update_document_set(sharded.services, INSECURE_DEV_ACTOR, F.new_version(doc, keep))
    report = check(sharded.services, min_age_seconds=0)
    assert list(report.merges.stale) == [gone_pk] and len(report.merges.stale[gone_pk]) == 3
    assert report.unsettled == []
    assert not report.merges.copies and not report.merges.misplaced and not report.consistent
    remove_leftovers(sharded.services, report)
    assert check(sharded.services, min_age_seconds=0).consistent
    assert sum(_on_shard(sharded, 1, f"SELECT count(*) FROM registry_objects_p{i} WHERE patient_pk = %(pk)s",
                         {"pk": gone_pk})[0][0] for i in sharded.shards[1].partitions) == 0
    assert len(query.find_documents(keep, DocumentFilter(statuses=["Approved"])).objects) == 1


def test_a_merge_whose_coordinator_died_after_the_copy_is_completed_when_sent_again(sharded, authority):
    """The survivor's shard committed the copies, the coordinator's commit was lost (no merge):
    fsck names the copies, nothing of the merged patient is lost, and the A40 sent again
    completes the merge without copying anything twice."""
    keep, keep_pk = _patient(sharded, on_shard=0)
    gone, gone_pk = _patient(sharded, on_shard=1)
    _submit(sharded, authority, keep, [_doc(keep, "k", "810000000002")])
    _submit(sharded, authority, gone, [_doc(gone, "g", "810000000002")])

    def merge() -> None:
        with sharded.services.registry.write() as conn:
            sharded.services.registry.merge_patients(conn, keep, gone)

    _coordinator_dies_at_commit(sharded, keep_pk, "S", merge)
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    assert len(query.find_documents(gone, DocumentFilter(statuses=["Approved"])).objects) == 1   # still there
    report = check(sharded.services, min_age_seconds=0)
    assert len(report.merges.copies) == 3 and not report.merges.stale and not report.consistent
    assert handle_message(sharded.services, _a40(keep, gone)).code == "AA"   # sent again
    assert len(query.find_documents(keep, DocumentFilter(statuses=["Approved"])).objects) == 2
    part = _partition_of(sharded, keep_pk)
    assert _on_shard(sharded, 0, f"SELECT count(*) FROM registry_objects_p{part} WHERE patient_pk = %(pk)s",
                     {"pk": keep_pk}) == [(6,)]
    assert check(sharded.services, min_age_seconds=0).consistent


def test_a_write_racing_a_merge_across_shards_fails_instead_of_being_lost(sharded):
    """A status change that read the merged patient's row before the merge committed: the
    merge's transaction holds that row, the change fails once the merge commits (instead of
    changing an original the merge's second step then deletes); sent again, it applies to the
    survivor's copy."""
    keep, _ = _patient(sharded, on_shard=0)
    gone, _ = _patient(sharded, on_shard=1)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(gone))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(gone, DocumentFilter(statuses=["Approved"])).objects
    registry, outcome = sharded.services.registry, []

    def change() -> None:
        try:
            with registry.write() as conn:
                set_status(conn, [doc.entry_uuid], AvailabilityStatus.DEPRECATED)
            outcome.append("applied")
        except Exception as exc:   # the shard's serialization failure, as a database error
            outcome.append(type(exc).__name__)

    with registry.write() as conn:
        registry.merge_patients(conn, keep, gone)
        writer = threading.Thread(target=change)
        writer.start()
        with psycopg.connect(sharded.url.replace("+psycopg", ""), autocommit=True) as admin:
            deadline = time.monotonic() + 20
            while not admin.execute(   # the write has read the row and waits on the merge's hold
                    "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state = 'active' AND query ILIKE 'UPDATE registry_objects%%'"
            ).fetchone()[0]:
                assert time.monotonic() < deadline and writer.is_alive(), outcome
                time.sleep(0.1)
        assert writer.is_alive()   # held by the merge's transaction
    writer.join(30)
    registry.settle_merge(gone)
    assert outcome and outcome[0] != "applied", outcome
    assert len(query.find_documents(keep, DocumentFilter(statuses=["Approved"])).objects) == 1   # nothing half-done
    with registry.write() as conn:   # sent again
        set_status(conn, [doc.entry_uuid], AvailabilityStatus.DEPRECATED)
    assert [d.entry_uuid for d in query.find_documents(keep, DocumentFilter(statuses=["Deprecated"])).objects] == [
        doc.entry_uuid]
    assert check(sharded.services, min_age_seconds=0).consistent


def test_a_merge_chain_across_shards_whose_first_step_was_not_settled(sharded):
    """A merged into B (another shard), its second step not run; then B into C, on A's
    partition: A's originals are settled first, so the copies reach C (they would have hit
    A's rows, same keys, and been dropped); codes of a copy rewritten meanwhile go too."""
    a, a_pk = _patient(sharded, on_shard=1)
    b, _ = _patient(sharded, on_shard=0)
    while True:
        c, c_pk = _patient(sharded, on_shard=1)
        if _partition_of(sharded, c_pk) == _partition_of(sharded, a_pk):
            break
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(a))
    registry = sharded.services.registry
    with registry.write() as conn:
        registry.merge_patients(conn, b, a)   # its settle_merge did not run
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(b, DocumentFilter(statuses=["Approved"])).objects
    with registry.write() as conn:   # the copy rewritten: its code rows are new ones
        set_status(conn, [doc.entry_uuid], AvailabilityStatus.DEPRECATED)
        set_status(conn, [doc.entry_uuid], AvailabilityStatus.APPROVED)
    assert handle_message(sharded.services, _a40(c, b)).code == "AA"
    assert [d.entry_uuid for d in query.find_documents(c, DocumentFilter(statuses=["Approved"])).objects] == [
        doc.entry_uuid]
    assert check(sharded.services, min_age_seconds=0).consistent
    for table in ("registry_objects", "object_codes", "object_authors"):
        assert sum(_on_shard(sharded, 1, f"SELECT count(*) FROM {table}_p{i} WHERE patient_pk = %(pk)s",
                             {"pk": a_pk})[0][0] for i in sharded.shards[1].partitions) == 0, table


def _busy(reply) -> bool:
    """The answer to a dependency that is down (partage.failures): a 503 SOAP Fault, XDSRegistryBusy."""
    return (reply.http_status == 503 and reply.body.tag == f"{SOAP}Fault"
            and b"XDSRegistryBusy" in etree.tostring(reply.body))


def test_a_stopped_shard_is_an_xds_error_and_loses_nothing(sharded, authority):
    up, _ = _patient(sharded, on_shard=0)
    down, _ = _patient(sharded, on_shard=1)
    kept = _doc(down, "kept", "810000000002")
    _submit(sharded, authority, down, [kept])
    _submit(sharded, authority, up, [_doc(up, "fine", "810000000002")])
    sharded.clusters[1].stop()
    try:
        reply = _find(_soap(sharded, authority, "doctor", down), down)
        assert _busy(reply), (reply.http_status, etree.tostring(reply.body))
        refused = _soap(sharded, authority, "doctor", down).provide_and_register(
            F.submission(down, [_doc(down, "late", "810000000002")], contents=False), {"late": b"<doc/>"})
        assert _busy(refused), (refused.http_status, etree.tostring(refused.body))
        # the other shard's patients are still served: found, fetched by entryUUID (the global
        # entryUUID index names their shard) and written to
        found = objects_of(_find(_soap(sharded, authority, "doctor", up), up))
        assert len(found) == 1
        by_id = _soap(sharded, authority, "doctor", up).stored_query(
            "GetDocuments", {"$XDSDocumentEntryEntryUUID": [f"('{found[0].entry_uuid}')"]})
        assert [o.unique_id for o in objects_of(by_id)] == [found[0].unique_id], by_id.error_codes
        # ... and by uniqueId and by logical id (the global index names their patients: migration
        # 0009), retrieved by uniqueId (ITI-43): none of these asks the stopped shard
        doctor = _soap(sharded, authority, "doctor", up)
        for param, value in (("$XDSDocumentEntryUniqueId", found[0].unique_id),
                             ("$XDSDocumentEntryLogicalID", found[0].logical_id)):
            by_other = doctor.stored_query("GetDocuments", {param: [f"('{value}')"]})
            assert [o.unique_id for o in objects_of(by_other)] == [found[0].unique_id], (param, by_other.error_codes)
        retrieved, documents = doctor.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [found[0].unique_id])
        assert retrieved.status == "Success" and found[0].unique_id in documents, retrieved.error_codes
        # associations by source or target: they live with the objects they link (their patient)
        assocs = doctor.stored_query("GetAssociations", {"$uuid": [f"('{found[0].entry_uuid}')"]})
        assert [str(a.association_type).rsplit(":", 1)[-1] for a in objects_of(assocs)] == ["HasMember"], \
            assocs.error_codes
        package = doctor.stored_query("GetSubmissionSetAndContents", {
            "$XDSSubmissionSetEntryUUID": [f"('{objects_of(assocs)[0].source_uuid}')"]})
        assert found[0].unique_id in {getattr(o, "unique_id", "") for o in objects_of(package)}, package.error_codes
        during = _doc(up, "during", "810000000002")
        _submit(sharded, authority, up, [during])
        assert len(_uids(_find(_soap(sharded, authority, "doctor", up), up))) == 2
        # ITI-57 and ITI-62 on that patient: every look-up they make by entryUUID, logical id or
        # reference goes to the patient's shard (registry.updates with entry_index)
        query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
        change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                             source_uuid="ss", target_uuid=found[0].entry_uuid,
                             original_status=str(AvailabilityStatus.APPROVED),
                             new_status=str(AvailabilityStatus.DEPRECATED))
        update_document_set(sharded.services, INSECURE_DEV_ACTOR, SubmissionRequest(F.update_set(up), [], [], [change]))
        assert [d.availability_status.short for d in query.find_documents(
            up, DocumentFilter(statuses=["Deprecated"])).objects] == ["Deprecated"]
        later = next(d for d in query.find_documents(up, DocumentFilter(statuses=["Approved"])).objects
                     if d.unique_id == during.unique_id)
        links = query.get_associations([later.entry_uuid]).objects
        remove_metadata(sharded.services, INSECURE_DEV_ACTOR,
                        [later.entry_uuid, *[a.entry_uuid for a in links], *{a.source_uuid for a in links}])
        assert query.find_documents(up, DocumentFilter(statuses=["Approved"])).objects == []
    finally:
        sharded.clusters[1].start()
    assert _uids(_find(_soap(sharded, authority, "doctor", down), down)) == {kept.unique_id}


def test_migration_0009_indexes_the_ids_of_a_registry_sharded_before_it(sharded, authority):
    """A registry sharded at revision 0008 had entry_uuids (entryUUID, patient) only: the
    migration adds each object's uniqueId and logical id from the shards."""
    pid, pk = _patient(sharded)
    doc = _doc(pid, "old", "810000000002")
    _submit(sharded, authority, pid, [doc])
    registry = sharded.services.registry
    with registry.write() as conn:
        conn.exec_driver_sql("DROP INDEX ix_entry_uuids_lid")
        conn.exec_driver_sql("DROP INDEX ix_entry_uuids_unique_id")
        conn.exec_driver_sql("ALTER TABLE entry_uuids DROP COLUMN unique_id, DROP COLUMN lid")
        conn.exec_driver_sql("DROP TABLE durability_marks")   # what migration 0010 adds
        conn.exec_driver_sql("DROP TABLE lineage_patients")   # and 0011
        conn.exec_driver_sql("DROP TABLE hl7_answers")        # and 0015
        conn.exec_driver_sql("ALTER TABLE audit_events DROP COLUMN issuer")   # and 0017
        conn.exec_driver_sql("ALTER TABLE notification_outbox DROP COLUMN content_digest")   # and 0018
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0008'")
    registry.engine.dispose()
    registry.migrate()
    with registry.read() as conn:
        indexed = conn.exec_driver_sql(
            "SELECT e.unique_id, e.lid, o.unique_id, o.lid FROM entry_uuids e JOIN registry_objects o "
            "ON o.entry_uuid = e.entry_uuid AND o.patient_pk = e.patient_pk WHERE e.patient_pk = %(pk)s",
            {"pk": pk}).all()
    assert len(indexed) == 3   # the SubmissionSet, the document, the HasMember
    assert all((r[0], r[1]) == (r[2], r[3]) for r in indexed), indexed
    assert doc.unique_id in {r[0] for r in indexed}


# ------------------------------------------------------------------ no 2PC: the recovery
def test_a_bulk_load_copies_each_patients_rows_into_its_shard(sharded):
    """registry.shard_copy: a bulk load COPYs a patient's rows into the partition table its hash
    names, on that partition's shard, with keys from the coordinator's sequences; the claims and
    the global index stay on the coordinator; the rows are found, and ingest goes on after."""
    registry = sharded.services.registry
    pids = [F.patient_id() for _ in range(12)]
    loader = BulkLoader(registry, batch_size=7)      # several batches, each over both shards
    for pid in pids:
        loader.add(F.registered_ids(F.submission(pid, [F.document(pid, "d1"), F.document(pid, "d2")],
                                                 contents=False)))
    loader.close()
    assert loader.stats.documents == 24 and loader.stats.batches >= 3
    with registry.read() as conn:
        pks = {pid: registry.patient_pk(conn, pid) for pid in pids}
    assert {_shard_of(sharded, pk) for pk in pks.values()} == {0, 1}   # both shards had some
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    keys: dict[str, list[int]] = {"registry_objects": [], "object_codes": [], "object_authors": []}
    for pid, pk in pks.items():
        k, part = _shard_of(sharded, pk), _partition_of(sharded, pk)
        for table, found in keys.items():
            rows = _on_shard(sharded, k, f"SELECT pk FROM {table}_p{part} WHERE patient_pk = %(pk)s", {"pk": pk})
            assert rows, (table, pid)
            found += [r[0] for r in rows]
        assert len(_on_shard(sharded, k, f"SELECT 1 FROM registry_objects_p{part} "
                                         "WHERE patient_pk = %(pk)s", {"pk": pk})) == 5
        for i in (i for s in sharded.shards for i in s.partitions if i != part):   # nowhere else
            owner = next(n for n, s in enumerate(sharded.shards) if i in s.partitions)
            assert _on_shard(sharded, owner, f"SELECT count(*) FROM registry_objects_p{i} "
                                             "WHERE patient_pk = %(pk)s", {"pk": pk}) == [(0,)]
        assert len(query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects) == 2   # pruned read
    for table, found in keys.items():
        assert len(found) == len(set(found)), table      # keys unique over both shards
    with registry.read() as conn:
        indexed = conn.exec_driver_sql("SELECT count(*) FROM entry_uuids WHERE patient_pk = ANY(%(pks)s)",
                                       {"pks": list(pks.values())}).scalar()
    assert indexed == 12 * 5
    result = IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pids[0]))
    assert result.assigned_ids          # the sequences moved past the bulk load's keys
    assert len(query.find_documents(pids[0], DocumentFilter(statuses=["Approved"])).objects) == 3


def _coordinator_dies_at_commit(sharded, pk: int, kind: str, work, on: str = "INSERT") -> None:
    """Run `work` (one registry transaction) so that the shard of patient `pk` commits its half
    and the coordinator's session dies before committing its own: a deferred trigger on the
    shard's partition (an `on` of rows of `kind`) holds the shard's COMMIT while the
    coordinator's backend is terminated; the shard's commit completes after."""
    row = "OLD" if on == "DELETE" else "NEW"
    k, part = _shard_of(sharded, pk), _partition_of(sharded, pk)
    slow = (f"CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS "
            f"$$BEGIN PERFORM pg_sleep(3); RETURN NULL; END$$; "
            f"CREATE CONSTRAINT TRIGGER slow_commit AFTER {on} ON registry_objects_p{part} "
            f"DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN ({row}.kind = '{kind}') EXECUTE FUNCTION slow_commit()")
    shard_url = sharded.shards[k].url.render_as_string(hide_password=False).replace("+psycopg", "")
    with psycopg.connect(shard_url, autocommit=True) as shard_conn:
        shard_conn.execute(slow)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                work()
            except BaseException as exc:   # the coordinator's session dies under it
                failure.append(exc)

        worker = threading.Thread(target=run)
        worker.start()
        coordinator = sharded.url.replace("+psycopg", "")
        with psycopg.connect(coordinator, autocommit=True) as admin:
            deadline = time.monotonic() + 10
            killed = False
            while not killed and time.monotonic() < deadline:
                time.sleep(0.3)
                killed = bool(admin.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = current_database() "
                    "AND pid <> pg_backend_pid() AND state = 'active' AND query ILIKE 'COMMIT%%'").fetchone()[0])
        worker.join(30)
        time.sleep(3.5)   # the shard's commit completes after the coordinator's session is gone
        shard_conn.execute(f"DROP TRIGGER slow_commit ON registry_objects_p{part}; DROP FUNCTION slow_commit()")
    assert killed and failure, f"the coordinator was to die during COMMIT: {killed} {failure}"


def test_a_coordinator_lost_between_the_commits_leaves_rows_that_fsck_removes(sharded):
    """postgres_fdw commits the shard's transaction, then the coordinator's: kill the
    coordinator's session in between (a trigger on the shard holds its commit for a while)."""
    pid, pk = _patient(sharded)
    request = F.submission(pid, [F.document(pid, "lost")])
    _coordinator_dies_at_commit(sharded, pk, "S", lambda: IngestService(
        sharded.services, INSECURE_DEV_ACTOR).provide_and_register(request))

    with sharded.services.registry.read() as conn:
        lost = shard_recovery.lost_submissions(conn, min_age_seconds=0)
        claimed = conn.exec_driver_sql("SELECT count(*) FROM unique_ids WHERE unique_id = %(u)s",
                                       {"u": request.submission_set.unique_id}).scalar()
    assert claimed == 0 and len(lost) == 3, lost     # submission set, document, HasMember: on the shard only
    report = check(sharded.services, min_age_seconds=0)
    assert sorted(report.lost) == lost and not report.consistent
    assert report.unclaimed_ids == []   # removed, not claimed
    remove_leftovers(sharded.services, report)
    assert check(sharded.services, min_age_seconds=0).consistent
    assert QueryService(sharded.services, INSECURE_DEV_ACTOR).find_documents(
        pid, DocumentFilter(statuses=["Approved"])).objects == []
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(request)   # submitted again: accepted
    assert len(QueryService(sharded.services, INSECURE_DEV_ACTOR).find_documents(
        pid, DocumentFilter(statuses=["Approved"])).objects) == 1


def test_a_lost_update_is_removed_and_what_it_changed_set_back(sharded):
    """An ITI-57 new version whose coordinator half was lost: its shard half had deprecated the
    version it succeeds. fsck --repair removes the update and sets that version back to
    Approved, so that the update sent again is accepted (else: no Approved version to update)."""
    pid, pk = _patient(sharded)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects

    def update() -> SubmissionRequest:
        new = copy.deepcopy(doc)
        new.lid, new.entry_uuid, new.version, new.title = doc.entry_uuid, "newversion", "", "v2"
        member = Association(entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss",
                             target_uuid="newversion", submission_set_status="Original", previous_version="1")
        return SubmissionRequest(F.update_set(pid), [new], [], [member])

    lost = update()
    _coordinator_dies_at_commit(sharded, pk, "S", lambda: update_document_set(
        sharded.services, INSECURE_DEV_ACTOR, lost))
    assert [d.title for d in query.find_documents(pid, DocumentFilter(statuses=["Deprecated"])).objects] == [doc.title]
    report = check(sharded.services, min_age_seconds=0)
    assert len(report.lost) == 3 and not report.consistent   # SubmissionSet, new version, HasMember
    remove_leftovers(sharded.services, report)
    assert report.restored == [doc.entry_uuid]
    assert check(sharded.services, min_age_seconds=0).consistent
    assert [d.entry_uuid for d in query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects] == [
        doc.entry_uuid]
    update_document_set(sharded.services, INSECURE_DEV_ACTOR, update())   # sent again: accepted
    assert [d.title for d in query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects] == ["v2"]


def _lost_status_change(sharded):
    """A patient's document, then an ITI-57 status change of it (Approved -> Deprecated) whose
    coordinator half is lost: (patient, document, query service)."""
    pid, pk = _patient(sharded)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(pid))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=doc.entry_uuid,
                         original_status=str(AvailabilityStatus.APPROVED), new_status=str(AvailabilityStatus.DEPRECATED))
    _coordinator_dies_at_commit(sharded, pk, "S", lambda: update_document_set(
        sharded.services, INSECURE_DEV_ACTOR, SubmissionRequest(F.update_set(pid), [], [], [change])))
    return pid, doc, query


def test_a_lost_status_change_is_set_back(sharded):
    """An ITI-57 status change (Approved -> Deprecated) whose coordinator half was lost."""
    pid, doc, query = _lost_status_change(sharded)
    assert query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects == []
    report = check(sharded.services, min_age_seconds=0)
    remove_leftovers(sharded.services, report)
    assert report.restored == [doc.entry_uuid] and check(sharded.services, min_age_seconds=0).consistent
    assert len(query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects) == 1


def test_a_lost_removal_leaves_index_rows_that_fsck_removes(sharded):
    """ITI-62 whose shard half committed alone: the objects are gone, the global index and the
    uniqueId claims still name them; fsck reports them, --repair finishes the removal, and the
    uniqueId is free again."""
    pid, pk = _patient(sharded)
    request = F.submission(pid)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(request)
    with sharded.services.registry.read() as conn:
        uuids = [r.entry_uuid for r in conn.execute(select(schema.registry_objects.c.entry_uuid).where(
            schema.registry_objects.c.patient_pk == pk))]
    _coordinator_dies_at_commit(sharded, pk, "S", lambda: remove_metadata(
        sharded.services, INSECURE_DEV_ACTOR, uuids), on="DELETE")
    report = check(sharded.services, min_age_seconds=0)
    assert report.indexed_only == sorted(uuids) and not report.consistent
    remove_leftovers(sharded.services, report)
    assert check(sharded.services, min_age_seconds=0).consistent
    with sharded.services.registry.read() as conn:
        claims = conn.execute(select(schema.unique_ids.c.unique_id).where(schema.unique_ids.c.unique_id.in_(
            [request.submission_set.unique_id, request.documents[0].unique_id]))).all()
    assert claims == []
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(request)   # its uniqueIds free again


def test_a_lost_replacement_sets_back_the_document_and_its_addendum(sharded):
    """A lost RPLC had deprecated the replaced document and its Approved addendum: both come back."""
    pid, pk = _patient(sharded)
    ingest = IngestService(sharded.services, INSECURE_DEV_ACTOR)
    ingest.provide_and_register(F.submission(pid, [F.document(pid, "x")]))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [x] = query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects
    addendum = Association(entry_uuid="a1", association_type=AssociationType.APND, source_uuid="y",
                           target_uuid=x.entry_uuid)
    ingest.provide_and_register(F.submission(pid, [F.document(pid, "y")], extra_associations=[addendum]))
    rplc = Association(entry_uuid="r1", association_type=AssociationType.RPLC, source_uuid="n",
                       target_uuid=x.entry_uuid)
    _coordinator_dies_at_commit(sharded, pk, "S", lambda: ingest.provide_and_register(
        F.submission(pid, [F.document(pid, "n")], extra_associations=[rplc])))
    assert len(query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects) == 1   # the new one only
    report = check(sharded.services, min_age_seconds=0)
    remove_leftovers(sharded.services, report)
    assert len(report.restored) == 2 and check(sharded.services, min_age_seconds=0).consistent
    assert len(query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects) == 2


def test_a_lost_status_change_changed_again_since_is_left_as_it_is(sharded):
    """After the lost change (Approved -> Deprecated), committed ones set Approved then
    Deprecated again: the last committed status stands."""
    pid, doc, query = _lost_status_change(sharded)
    time.sleep(shard_recovery.LOST_CHANGE_WINDOW_S + 1.1)
    with sharded.services.registry.write() as conn:
        set_status(conn, [doc.entry_uuid], AvailabilityStatus.APPROVED)
        set_status(conn, [doc.entry_uuid], AvailabilityStatus.DEPRECATED)
    report = check(sharded.services, min_age_seconds=0)
    remove_leftovers(sharded.services, report)
    assert report.restored == [] and check(sharded.services, min_age_seconds=0).consistent
    assert query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects == []


def _statuses_on_shard(sharded, k: int, pk: int) -> list[tuple]:
    """(kind, status) of a patient's objects, read on its shard."""
    return sorted(row for i in sharded.shards[k].partitions for row in _on_shard(
        sharded, k, f"SELECT kind, status FROM registry_objects_p{i} WHERE patient_pk = %(pk)s", {"pk": pk}))


def test_an_update_moving_a_document_across_shards_changes_the_old_shard_after_it_commits(sharded, monkeypatch):
    """An ITI-57 new version naming a patient on another shard: its transaction writes the new
    patient's shard only (postgres_fdw has no two-phase commit: a deprecation committed alone
    would leave a document with no Approved version); the old version is deprecated in a
    second transaction. That step not run (as if the server died between): the old version is
    still Approved on its shard, fsck names the lineage UNSETTLED, --repair deprecates it."""
    a, a_pk = _patient(sharded, on_shard=0)
    b, b_pk = _patient(sharded, on_shard=1)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(a))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects

    def not_run(conn, lids):
        raise RuntimeError("the server died before the second step")

    with monkeypatch.context() as patch:
        patch.setattr(updates, "settle_versions", not_run)
        update_document_set(sharded.services, INSECURE_DEV_ACTOR, F.new_version(doc, b, title="moved"))   # committed
    assert ("D", "Approved") in _statuses_on_shard(sharded, 0, a_pk)   # the update did not write shard 0
    assert [d.title for d in query.find_documents(b, DocumentFilter(statuses=["Approved"])).objects] == ["moved"]
    report = check(sharded.services, min_age_seconds=0)
    assert report.unsettled == [doc.lid] and not report.consistent
    assert check(sharded.services, min_age_seconds=3600).unsettled == []   # an update in flight is not named
    remove_leftovers(sharded.services, report)
    assert check(sharded.services, min_age_seconds=0).consistent
    assert ("D", "Approved") not in _statuses_on_shard(sharded, 0, a_pk)
    assert query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects == []
    assert [d.entry_uuid for d in query.find_documents(a, DocumentFilter(statuses=["Deprecated"])).objects] == [
        doc.entry_uuid]
    assert [d.title for d in query.find_documents(b, DocumentFilter(statuses=["Approved"])).objects] == ["moved"]


def test_an_update_moving_a_document_across_shards_deprecates_the_old_version(sharded):
    """The whole flow: once the update has returned, the old version is Deprecated on its shard
    and the registry is consistent."""
    a, a_pk = _patient(sharded, on_shard=1)
    b, _ = _patient(sharded, on_shard=0)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(a))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects
    update_document_set(sharded.services, INSECURE_DEV_ACTOR, F.new_version(doc, b, title="moved"))
    assert ("D", "Deprecated") in _statuses_on_shard(sharded, 1, a_pk)
    assert query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects == []
    assert [d.title for d in query.find_documents(b, DocumentFilter(statuses=["Approved"])).objects] == ["moved"]
    assert check(sharded.services, min_age_seconds=0).consistent


def test_a_lost_update_moving_a_document_across_shards_leaves_the_old_version_approved(sharded):
    """The new patient's shard committed the update, the coordinator's commit was lost: the old
    version was never changed (nothing to set back); fsck removes the update's objects."""
    a, _ = _patient(sharded, on_shard=0)
    b, b_pk = _patient(sharded, on_shard=1)
    IngestService(sharded.services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(a))
    query = QueryService(sharded.services, INSECURE_DEV_ACTOR)
    [doc] = query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects
    _coordinator_dies_at_commit(sharded, b_pk, "S", lambda: update_document_set(
        sharded.services, INSECURE_DEV_ACTOR, F.new_version(doc, b, title="moved")))
    report = check(sharded.services, min_age_seconds=0)
    assert len(report.lost) == 3 and report.unsettled == []   # SubmissionSet, new version, HasMember
    remove_leftovers(sharded.services, report)
    assert report.restored == [] and check(sharded.services, min_age_seconds=0).consistent
    assert [d.entry_uuid for d in query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects] == [
        doc.entry_uuid]
    assert query.find_documents(b, DocumentFilter(statuses=["Approved"])).objects == []
    update_document_set(sharded.services, INSECURE_DEV_ACTOR, F.new_version(doc, b, title="moved"))   # sent again: accepted
    assert [d.title for d in query.find_documents(b, DocumentFilter(statuses=["Approved"])).objects] == ["moved"]


# ------------------------------------------------------------------ schema changes
def test_a_migration_reaches_the_shards_through_alter_partitions(sharded, authority):
    with sharded.services.registry.write() as conn:
        assert sharding.is_sharded(conn)
        sharding.alter_partitions(conn, "object_authors", "ADD COLUMN IF NOT EXISTS probe text")
    try:
        for k, target in enumerate(sharded.shards):
            for i in target.partitions:
                assert _on_shard(sharded, k, "SELECT count(*) FROM information_schema.columns WHERE "
                                             "table_name = %(t)s AND column_name = 'probe'",
                                 {"t": f"object_authors_p{i}"}) == [(1,)]
        pid, _ = _patient(sharded)
        _submit(sharded, authority, pid, [_doc(pid, "after", "810000000002")])
        with sharded.services.registry.read() as conn:   # the new column is readable through the coordinator
            assert conn.exec_driver_sql("SELECT count(probe) FROM object_authors").scalar() == 0
    finally:
        with sharded.services.registry.write() as conn:
            sharding.alter_partitions(conn, "object_authors", "DROP COLUMN IF EXISTS probe")
    with pytest.raises(ValueError, match="already partitioned or sharded"):
        sharding.shard(sharded.services.registry, [sharded.clusters[0].database()])
    sharded.services.registry.migrate()   # at head: nothing to do, no error


# ------------------------------------------------------------------ the NIST XDS collections
@pytest.mark.corpus
def test_nist_xds_collections_pass_on_the_sharded_registry(tmp_path, pg_shard_clusters, capsys):
    """docs/conformance.md's run (85 distinct tests of reg, R.b, SQ.b, rep, PR.b, reg_mu,
    reg_rm), against `partage serve` on a sharded registry."""
    testkit = corpus_path("nist", "testkit")
    codes = corpus_path("nist", "environment", "codes.xml")
    with sharded_database(pg_shard_clusters) as url, \
            LiveServer(tmp_path / "data", database_url=url, extra_args=["--codes", str(codes)]) as server:
        out = tmp_path / "nist.json"
        code = run_nist_testkit(server, testkit, codes, out, ["--collections", "reg,R.b,SQ.b,rep,PR.b,reg_mu,reg_rm"])
        registry = Registry(url)
        with registry.read() as conn:
            assert sharding.is_sharded(conn)
            per_shard = conn.exec_driver_sql("SELECT count(DISTINCT tableoid) FROM registry_objects").scalar()
        registry.dispose()
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert (report["passed"], report["failed"], report["not_run"]) == (85, 0, 0), printed
    assert code == 0
    assert per_shard == 2    # the kit's patients landed on both shards


# ------------------------------------------------------------------ adding a shard
def test_adding_a_shard_moves_a_partition_and_its_rows(tmp_path, pg_shard_clusters):
    """Four partitions over two shards; a third shard (another database) takes partition 1."""
    with postgres_database("partage_sharded") as url:
        services = Services.open(Settings(data_dir=tmp_path / "data", database_url=url, insecure_dev=True))
        try:
            sharding.shard(services.registry, [c.database() for c in pg_shard_clusters], partitions=4)
            ingest = IngestService(services, INSECURE_DEV_ACTOR)
            patients = {}
            while len({_hash_partition(services, pk, 4) for pk in patients.values()}) < 4:
                pid = F.patient_id()
                with services.registry.write() as conn:
                    patients[pid] = services.registry.upsert_patient(conn, [pid])
                ingest.provide_and_register(F.submission(pid))
            moved = [pid for pid, pk in patients.items() if _hash_partition(services, pk, 4) == 1]
            new_shard = pg_shard_clusters[0].database("partage_shard_new")
            placed = sharding.move_partition(services.registry, 1, new_shard)
            assert placed.partitions == (1,) and placed.name == "partage_shard_2"
            with services.registry.read() as conn:
                layout = {s.name: s.partitions for s in sharding.shards(conn)}
            assert layout == {"partage_shard_0": (0, 2), "partage_shard_1": (3,), "partage_shard_2": (1,)}
            engine = create_engine(placed.url)
            with engine.connect() as conn:   # the rows are on the new shard
                assert conn.exec_driver_sql("SELECT count(DISTINCT patient_pk) FROM registry_objects_p1").scalar() \
                    == len(moved)
            engine.dispose()
            query = QueryService(services, INSECURE_DEV_ACTOR)
            for pid in patients:                                  # every patient still found, moved or not
                assert len(query.find_documents(pid, DocumentFilter(statuses=["Approved"])).objects) == 1
            ingest.provide_and_register(F.submission(moved[0]))   # and written to the new shard
            assert len(query.find_documents(moved[0], DocumentFilter(statuses=["Approved"])).objects) == 2
            with pytest.raises(ValueError, match="already on"):
                sharding.move_partition(services.registry, 1, new_shard)
        finally:
            services.close()


def _hash_partition(services, pk: int, count: int) -> int:
    with services.registry.read() as conn:
        return next(i for i in range(count) if conn.exec_driver_sql(
            "SELECT satisfies_hash_partition('registry_objects'::regclass, %(n)s, %(i)s, %(pk)s::integer)",
            {"n": count, "i": i, "pk": pk}).scalar())


def test_the_command(tmp_path, pg_shard_clusters):
    with postgres_database("partage_sharded") as url:
        command = [sys.executable, "-m", "partage.registry.sharding", "--database", url]
        urls = [c.database() for c in pg_shard_clusters]
        done = subprocess.run([*command, "--shard", urls[0], "--shard", urls[1], "--partitions", "4"],
                              capture_output=True, text=True, timeout=120, cwd=PROJECT_ROOT)
        assert done.returncode == 0, done.stderr
        assert [line.split(":")[0] for line in done.stdout.splitlines()] == ["partage_shard_0", "partage_shard_1"]
        assert done.stdout.splitlines()[0].endswith("partitions 0, 2")
        again = subprocess.run([*command, "--shard", urls[0]], capture_output=True, text=True, timeout=120,
                               cwd=PROJECT_ROOT)
        assert again.returncode == 2 and "already partitioned or sharded" in again.stderr
        moved = subprocess.run([*command, "--move-partition", "3", "--shard", urls[0]], capture_output=True,
                               text=True, timeout=120, cwd=PROJECT_ROOT)
        assert moved.returncode == 0 and moved.stdout.startswith("partage_shard_0:"), moved.stderr
        assert moved.stdout.rstrip().endswith("partitions 0, 2, 3")
