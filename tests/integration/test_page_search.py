"""Keyword search in French on both databases (SQLite: Snowball French stems in FTS5, migration
0006; PostgreSQL: the `partage_french` configuration): stemming and accent folding both ways,
ranked, with highlighted excerpts; the engines' query syntax cannot be used or broken; an old
SQLite index is re-read by the migration."""

from __future__ import annotations

import re

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.query.clinical import ClinicalReader
from partage.registry import text_search
from partage.registry.store import MIGRATIONS_DIR, Registry
from tests import clinical_support as C
from tests.conftest import corpus_path

pytestmark = pytest.mark.corpus

NIR = "279035121517777"
PID = C.patient_cx(NIR)
FILED = {"tsh": "BIO-CR-BIO_2024.01_TSH_1.xml", "ips": "IPS-FR_2024.01_DLU.xml",
         "glycemie": "BIO-CR-BIO_2024.01_Glycemie_mole.xml", "vac": "VAC_2023.01.xml"}


@pytest.fixture
def record(services):
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    lids = {}
    for key, name in FILED.items():
        request = C.submission(C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR), key)
        ingest.provide_and_register(request)
        lids[request.documents[0].unique_id] = key
    reader = ClinicalReader(services, INSECURE_DEV_ACTOR)
    docs = reader.documents(PID)
    return reader, {lid: lids[d.unique_id] for lid, d in docs.items()}


def found(record, query: str) -> list[str]:
    reader, names = record
    return [names[h.doc_lid] for h in reader.search(PID, query)]


@pytest.mark.parametrize("query, expected", [
    ("thyroïde", {"tsh", "ips"}),          # "thyroïdien(ne)" in the lab report, "Thyroïdite" in the IPS
    ("THYROIDE", {"tsh", "ips"}),          # case and accents folded
    ("diabete", {"ips"}),                  # "Diabète insulino-dépendant"
    ("diabètes", {"ips"}),                 # a plural, stemmed
    ("glycémies", {"glycemie"}),           # "Glycémie à jeun"
    ("glycemie jeun", {"glycemie"}),       # every word must occur
    ("thyroïde glycémie", set()),
    ("vaccinations", {"vac", "ips"}),
])
def test_french_words_find_their_forms(record, query, expected):
    assert set(found(record, query)) == expected


def test_hits_are_ranked_with_highlighted_excerpts(record):
    reader, names = record
    hits = reader.search(PID, "thyroïde")
    assert [h.rank for h in hits] == sorted((h.rank for h in hits), reverse=True)
    tsh = next(h for h in hits if names[h.doc_lid] == "tsh")
    assert "<mark>" in tsh.excerpt_html
    marked = [m.lower() for m in re.findall(r"<mark>(.*?)</mark>", tsh.excerpt_html)]
    assert marked and all(m.startswith("thyro") for m in marked), marked
    assert tsh.excerpt_text and "<mark>" not in tsh.excerpt_text


@pytest.mark.parametrize("query", ['thyroïde" OR *', "'); DROP TABLE document_text; --", "NEAR(a b)",
                                   "thyro* -diab", "&|!:*()", "x" * 5000, "é" * 300])
def test_the_engines_syntax_can_neither_be_used_nor_broken(record, query):
    reader, _names = record
    reader.search(PID, query)          # no error
    assert set(found(record, "thyroïde")) == {"tsh", "ips"}   # and nothing was harmed


def test_the_excerpt_marks_the_words_whose_stem_matches():
    body = "Bilan THYROIDIEN : la thyroïde est normale ; pas de thyroïdite. Diabète équilibré."
    out = text_search.excerpt(body, [text_search.search_key("thyroïde")])
    assert out.count(text_search.OPEN) == 3 and "⟦THYROIDIEN⟧" in out and "⟦thyroïdite⟧" in out
    assert text_search.search_key("Diabète") == text_search.search_key("diabete") == "diabet"
    long = " ".join(["mot"] * 200 + ["créatinine"] + ["mot"] * 200)
    cut = text_search.excerpt(long, [text_search.search_key("créatinines")])
    assert cut.startswith("…") and cut.endswith("…") and "⟦créatinine⟧" in cut and len(cut.split()) < 40


def test_the_migration_reindexes_an_old_sqlite_index(tmp_path):
    """A database at revision 0005 (FTS5 over the raw text, no stemming) opens at head with its
    existing text searchable in French."""
    url = f"sqlite:///{tmp_path / 'old.sqlite3'}"
    registry = Registry(url)
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    with registry.engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0005")
    with registry.engine.begin() as conn:
        conn.execute(text("INSERT INTO document_text (pk, patient_pk, doc_lid, doc_entry_uuid, body) "
                          "VALUES (1, 1, 'lid-1', 'urn:uuid:x', 'Bilan thyroïdien normal, glycémie équilibrée')"))
        conn.execute(text("INSERT INTO document_text_fts(rowid, body) VALUES (1, "
                          "'Bilan thyroïdien normal, glycémie équilibrée')"))
        assert conn.execute(text("SELECT count(*) FROM document_text_fts WHERE document_text_fts MATCH "
                                 "'\"glycemies\"*'")).scalar() == 0      # before: no stemming
    registry.migrate()
    with registry.read() as conn:
        assert [h.doc_lid for h in text_search.full_text(conn, ["lid-1"], "thyroïde")] == ["lid-1"]
        assert [h.doc_lid for h in text_search.full_text(conn, ["lid-1"], "glycémies")] == ["lid-1"]
    with registry.write() as conn:
        text_search.delete_text(conn, "lid-1")
        assert conn.execute(text("SELECT count(*) FROM document_text_fts")).scalar() == 0
    registry.dispose()
