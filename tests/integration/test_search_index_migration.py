"""Migration 0006 (FHIR search indexes) on SQLite and PostgreSQL: it creates what the schema
declares, and a database that lived before it (downgraded to 0005, so the index columns and
the patients' index are gone) comes back re-indexed exactly as new rows are indexed."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import select

from partage.config import Settings
from partage.metadata.datatypes import CX, DTM, XCN, XPN
from partage.metadata.model import Author
from partage.registry import schema
from partage.registry.bulk import BulkLoader
from partage.registry.store import MIGRATIONS_DIR
from partage.services import Services
from tests import factories as F
from tests.conftest import BACKENDS, require_postgres
from tests.support import postgres_database

NEW = {"hash_sys_value", "hash_value", "hash_sys", "family_norm", "given_norm", "creation_high",
       "service_start_high", "service_stop_high", "revision", "updated_at", "patient_index",
       "ix_codes_patient_hash", "ix_patient_identifiers_value", "ix_objects_patient_kind_registered"}


@pytest.fixture(params=BACKENDS)
def services(request, tmp_path):
    if request.param == "postgresql":
        require_postgres()
        with postgres_database() as url:
            services = Services.open(Settings(data_dir=tmp_path, database_url=url))
            yield services
            services.close()
        return
    services = Services.open(Settings(data_dir=tmp_path))
    yield services
    services.close()


def _alembic(services: Services, target: str, downgrade: bool = False) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with services.registry.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        (command.downgrade if downgrade else command.upgrade)(cfg, target)


def _snapshot(services: Services) -> dict:
    o, c, a, p = schema.registry_objects, schema.object_codes, schema.object_authors, schema.patient_index
    with services.registry.read() as conn:
        return {
            "objects": sorted(conn.execute(select(o.c.entry_uuid, o.c.creation_high, o.c.service_start_high,
                                                  o.c.service_stop_high, o.c.revision)).all()),
            "codes": sorted(conn.execute(select(c.c.object_pk, c.c.attribute, c.c.code, c.c.scheme,
                                                c.c.hash_sys_value, c.c.hash_value, c.c.hash_sys)).all()),
            "authors": sorted(conn.execute(select(a.c.object_pk, a.c.person, a.c.family_norm,
                                                  a.c.given_norm)).all()),
            "patients": sorted(conn.execute(select(p.c.patient_pk, p.c.attribute, p.c.value_norm, p.c.value_exact,
                                                   p.c.low, p.c.high)).all()),
        }


def test_the_migration_creates_what_the_schema_declares(services):
    with services.registry.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), schema.metadata)
    assert [d for d in diff if any(name in repr(d) for name in NEW)] == []


def test_an_older_database_is_reindexed_as_new_rows_are(services):
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid], {"name": XPN("Lévêque", "Éloïse Marie").format(),
                                                       "birth_date": "197005"})
    docs = [F.document(pid, f"m{i}", creation_time=DTM("2024"), service_stop_time=DTM(f"202403{10 + i}"),
                       reference_ids=[CX.parse_reference_id(f"ACC{i}^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:accession")],
                       authors=[Author(person=XCN.parse(f"8{i}^Dürer^Albrecht^Ænne^^^^^&1.2.250.1.71.4.2.1&ISO"))])
            for i in range(3)]
    loader = BulkLoader(services.registry)
    loader.add(F.submission(pid, docs, contents=False))
    loader.flush()
    before = _snapshot(services)
    assert before["patients"] and any(row.hash_sys_value for row in before["codes"])
    assert {row.family_norm for row in before["authors"]} == {"durer", "martin"}   # + the SubmissionSet's
    assert {row.given_norm for row in before["authors"] if row.family_norm == "durer"} == {"albrecht aenne"}
    assert ("birthdate", "19700501000000", "19700601000000") in {(r.attribute, r.low, r.high)
                                                                 for r in before["patients"]}
    _alembic(services, "0005", downgrade=True)
    with services.registry.engine.connect() as conn:
        columns = {c["name"] for c in services.registry.engine.dialect.get_columns(conn, "object_codes")}
        assert "hash_value" not in columns
    _alembic(services, "head")
    after = _snapshot(services)
    assert after["objects"] == before["objects"] and after["authors"] == before["authors"]
    assert after["patients"] == before["patients"] and after["codes"] == before["codes"]


def test_migration_0013_indexes_the_stored_text_again_with_normalised_words(tmp_path):
    """SQLite's full-text keys of text stored before 0013 (a decomposed accent cut the word in
    two, "œ" was a letter of its own) are rewritten, so "oedème" and a composed "thyroïdite"
    find them; the rows' text is unchanged."""
    from sqlalchemy import text

    from partage.registry import text_search
    from partage.registry.text_search import search_keys

    services = Services.open(Settings(data_dir=tmp_path))
    try:
        body = "Œdème des membres. Thyroi\u0308dite."
        old_keys = " ".join(text_search._fold(text_search._STEMMER.stemWord(w.lower()))
                            for w in text_search._WORD.findall(body))   # the keys before 0013
        assert old_keys != search_keys(body)
        with services.registry.write() as conn:
            text_search.put_text(conn, patient_pk=1, lid="lid-1", entry_uuid="urn:uuid:1", body=body)
            conn.execute(text("UPDATE document_text_fts SET stems = :k"), {"k": old_keys})
        _alembic(services, "0012", downgrade=True)
        _alembic(services, "head")
        with services.registry.read() as conn:
            assert conn.execute(text("SELECT stems FROM document_text_fts")).scalar_one() == search_keys(body)
            hits = text_search.full_text(conn, ["lid-1"], "oedème thyroïdite")
        assert [h.doc_lid for h in hits] == ["lid-1"]
    finally:
        services.close()
