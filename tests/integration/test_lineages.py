"""Lineages of more than one version and their patients (registry.lineages, migrations 0011 and
0012): what a replacement, a new version and an ITI-57 that moves a document record, what a
merge does to it, what the migrations find in a registry that lived before them, and what
fsck reports and repairs. The access consequences (a masking of the moved document hides
the versions left behind; a replaced document stays hidden behind its replacement) are
tested in test_access_attacks.py."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, select

from partage import fsck
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.lifecycle import update_document_set
from partage.metadata.model import Association, AssociationType
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.registry import lineages, schema
from partage.registry.store import MIGRATIONS_DIR
from tests import factories as F

LP = schema.lineage_patients


def _patient(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        pk = services.registry.upsert_patient(conn, [pid])
    return pid, pk


def _down_and_up(services, revision: str) -> None:
    """The schema downgraded to `revision`, then upgraded to head (alembic, as Registry.migrate)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    for target, step in ((revision, command.downgrade), ("head", command.upgrade)):
        with services.registry.engine.connect() as conn:   # a transaction per migration, as migrate()
            cfg.attributes["connection"] = conn
            step(cfg, target)


def _moved(services):
    """A document of patient a moved to patient b by an ITI-57 new version: (a, b, lineage)."""
    (a, a_pk), (b, b_pk) = _patient(services), _patient(services)
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(F.submission(a))
    [doc] = QueryService(services, INSECURE_DEV_ACTOR).find_documents(a, DocumentFilter(statuses=["Approved"])).objects
    update_document_set(services, INSECURE_DEV_ACTOR, F.new_version(doc, b))
    return a_pk, b_pk, doc.lid


def test_an_update_that_moves_a_document_records_both_patients(services):
    a_pk, b_pk, lineage = _moved(services)
    with services.registry.read() as conn:
        assert lineages.holders(conn, [lineage, "urn:uuid:never-moved"]) == {lineage: {a_pk, b_pk}}


def test_a_merge_gives_the_merged_patients_lineages_to_the_survivor(services):
    a_pk, b_pk, lineage = _moved(services)
    _, c_pk = _patient(services)
    with services.registry.write() as conn:
        lineages.record(conn, lineage, [c_pk])
        lineages.record(conn, "urn:uuid:other", [a_pk])
        lineages.merge(conn, a_pk, c_pk)   # c already holds `lineage`: one row, not a conflict
    with services.registry.read() as conn:
        rows = sorted(conn.execute(select(LP.c.lineage, LP.c.patient_pk).where(
            LP.c.lineage.in_([lineage, "urn:uuid:other"]))).all())
    assert rows == sorted([(lineage, b_pk), (lineage, c_pk), ("urn:uuid:other", c_pk)])


def test_the_migration_finds_the_lineages_moved_before_it(services):
    """A registry that lived before migration 0011 (downgraded to 0010, the table gone) comes
    back with the lineages its updates had moved."""
    a_pk, b_pk, lineage = _moved(services)
    other = _moved(services)
    with services.registry.write() as conn:
        conn.execute(delete(LP))
    _down_and_up(services, "0010")
    with services.registry.read() as conn:
        assert lineages.holders(conn, [lineage, other[2]]) == {lineage: {a_pk, b_pk}, other[2]: {other[0], other[1]}}
        assert len(conn.execute(select(LP)).all()) == 4   # the documents never updated are not there


def _versioned(services):
    """Patient a's document with a second version by ITI-57, and another replaced by RPLC, and
    a third alone: (a_pk, updated lineage, replaced lineage, lone lineage)."""
    a, a_pk = _patient(services)
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    for _ in range(3):
        ingest.provide_and_register(F.submission(a))
    query = QueryService(services, INSECURE_DEV_ACTOR)
    updated, replaced, alone = query.find_documents(a, DocumentFilter(statuses=["Approved"])).objects
    update_document_set(services, INSECURE_DEV_ACTOR, F.new_version(updated, a))
    rplc = Association(entry_uuid="rplc", association_type=AssociationType.RPLC, source_uuid="replacement",
                       target_uuid=replaced.entry_uuid)
    ingest.provide_and_register(F.submission(a, [F.document(a, "replacement")], extra_associations=[rplc]))
    return a_pk, updated.lid, replaced.lid, alone.lid


def test_a_new_version_and_a_replacement_record_their_lineage_and_a_lone_document_does_not(services):
    a_pk, updated, replaced, alone = _versioned(services)
    with services.registry.read() as conn:
        assert lineages.holders(conn, [updated, replaced, alone]) == {updated: {a_pk}, replaced: {a_pk}}


def test_migration_0012_records_the_lineages_of_several_versions_registered_before_it(services):
    a_pk, updated, replaced, alone = _versioned(services)
    moved = _moved(services)
    with services.registry.write() as conn:
        conn.execute(delete(LP))
        lineages.record(conn, moved[2], [moved[0], moved[1]])   # what 0011 had
    _down_and_up(services, "0011")
    with services.registry.read() as conn:
        assert lineages.holders(conn, [updated, replaced, alone, moved[2]]) == {
            updated: {a_pk}, replaced: {a_pk}, moved[2]: {moved[0], moved[1]}}


def test_fsck_reports_and_repairs_a_lineage_of_several_versions_not_recorded(services):
    a_pk, updated, replaced, alone = _versioned(services)
    with services.registry.write() as conn:
        conn.execute(delete(LP).where(LP.c.lineage == replaced))
    report = fsck.check(services, min_age_seconds=0)
    assert report.unrecorded == {replaced: {a_pk}}
    assert not report.consistent
    fsck.remove_leftovers(services, report)
    assert fsck.check(services, min_age_seconds=0).unrecorded == {}
    with services.registry.read() as conn:
        assert lineages.holders(conn, [replaced]) == {replaced: {a_pk}}
