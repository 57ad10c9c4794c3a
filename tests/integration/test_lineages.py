"""Lineages that span patients (registry.lineages, migration 0011): what an ITI-57 that moves a
document records, what a merge does to it, and what the migration finds in a registry that
lived before it. The access consequence (a masking of the moved document hides the versions
left behind) is tested in test_access_attacks.py."""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from sqlalchemy import delete, select

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.lifecycle import update_document_set
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
        assert lineages.patients_of(conn, [lineage]) == {a_pk, b_pk}
        assert lineages.patients_of(conn, ["urn:uuid:never-moved"]) == set()


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
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    for target, step in (("0010", command.downgrade), ("head", command.upgrade)):
        with services.registry.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            step(cfg, target)
    with services.registry.read() as conn:
        assert lineages.patients_of(conn, [lineage]) == {a_pk, b_pk}
        assert lineages.patients_of(conn, [other[2]]) == {other[0], other[1]}
        assert len(conn.execute(select(LP)).all()) == 4   # the documents never moved are not there
