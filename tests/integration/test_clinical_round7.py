"""Clinical reading, review round 7 (issues 8, 20): derived data as a leak channel.

"Never leak a masked document" covers everything derived from it. Two doors still let derived
data say what the reader may not see or what was removed:

- ITI-86 (Remove Documents) took a document's bytes out of the repository's answers but left
  what was read from them: its clinical facts were still served (FHIR Observation /
  Immunization..., `$summary`, the page) and its words still found, with excerpts of the removed
  text (`_content`, the page's search box). Derived data follows its document's content: the
  facts, the text and a pending text job leave with the bytes, in the ITI-86 transaction.
- SQLite ranked keyword hits with FTS5's `bm25()`, which weighs each word by its rarity in the
  whole index: every patient's documents, masked ones included. So the order of a professional's
  visible hits, and their `search.score`, changed when documents they may not see (masked
  MASQUE_PS in this record, or another patient's) held the searched words: a probe of what
  hidden documents say. The rank is now computed from the visible hits alone (PostgreSQL's
  `ts_rank` reads the document alone already).

(Checked and holding, so not tested again here: French stems and accents — "hémoglobine" finds
"HEMOGLOBINE" and "hémoglobines" on both engines —, a query of stop words only, a merged-away
patient's id, a transform of a masked document through the facts and `Observation/<id>`.)
"""

from __future__ import annotations

import hashlib
import io

import pytest
from sqlalchemy import func, select

from partage import fsck
from partage.access.actor import INSECURE_DEV_ACTOR, PROFESSIONAL, Actor
from partage.clinical.queue import backlog
from partage.config import Settings
from partage.ingest import IngestService
from partage.lifecycle import remove_documents
from partage.metadata.model import Code, DocumentContent
from partage.query.clinical import ClinicalReader, FactQuery
from partage.registry import derived, schema, text_search
from partage.registry.access_state import Records
from partage.server.app import create_app
from partage.services import Services
from tests import clinical_support as C
from tests import factories as F
from tests.conftest import corpus_path
from tests.integration.test_lineages import _down_and_up

pytestmark = pytest.mark.corpus

NIR = "279035121518989"
PID = C.patient_cx(NIR)
OTHER_NIR = "179035121518977"
OTHER = C.patient_cx(OTHER_NIR)
NURSE = Actor(id="860000000002", name="Inf Test", kind=PROFESSIONAL, role="60", auth_method="jwt")
DOCTOR = Actor(id="810000000001", name="Dr Test", kind=PROFESSIONAL, role="10", auth_method="jwt")
TEXT = Code("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3")


def _open(services, *pids) -> None:
    for pid in pids:   # one patient each (a list names one patient's identifiers)
        with services.registry.write() as conn:
            services.registry.upsert_patient(conn, [pid])
        Records(services.registry).open(pid)


def _ingest(services, request):
    return IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)


def _note(body: str, entry: str, pid=PID, **fields):
    """A plain-text note: exactly the words under test (class 11, which every profession reads)."""
    data = body.encode("utf-8")
    request = F.submission(pid, [F.document(pid, entry, mime_type="text/plain", title=f"Note {entry}",
                                            format_code=TEXT, **fields)], contents=False)
    request.contents[entry] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                              sha1=hashlib.sha1(data).hexdigest())
    return request


def _count(services, table) -> int:
    with services.registry.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


# ============================================================ 1. ITI-86 removed the bytes, not what was read
def test_what_was_read_from_a_document_leaves_with_its_bytes_removed_by_iti86(services):
    _open(services, PID)
    vac = C.submission(C.for_patient(corpus_path("cda", "valid", "VAC_2023.01.xml").read_bytes(), NIR))
    _ingest(services, vac)
    pdf = C.pdf_submission(PID, C.make_pdf("Phéochromocytome surrenalien"), "pdf")
    _ingest(services, pdf)
    assert backlog(services.registry)["waiting"] == 1    # the PDF's text job, not done yet
    doctor = ClinicalReader(services, DOCTOR)
    assert doctor.facts(PID) and doctor.search(PID, "tétanique")
    with services.registry.read() as conn:
        fact_pks = list(conn.execute(select(schema.clinical_facts.c.pk)).scalars())
    assert doctor.fact(fact_pks[0]) is not None

    repository = services.settings.repository_unique_id
    removed = remove_documents(services, INSECURE_DEV_ACTOR, [(repository, vac.documents[0].unique_id),
                                                              (repository, pdf.documents[0].unique_id)])
    assert removed.removed == 2 and not removed.errors
    doctor = ClinicalReader(services, DOCTOR)
    assert doctor.documents(PID), "ITI-86 leaves the metadata (ITI-62 removes it)"
    assert doctor.facts(PID) == [], "the facts read from bytes ITI-86 removed are still served"
    assert all(doctor.fact(pk) is None for pk in fact_pks)
    hits = doctor.search(PID, "tétanique")
    assert hits == [], f"the removed document's words are still found, with excerpts: {hits[0].excerpt_text!r}"
    assert doctor.search(PID, "vaccination") == []
    # nothing is left behind to be served later, nor a text job to read the removed bytes
    assert _count(services, schema.clinical_facts) == 0
    assert _count(services, schema.document_text) == 0
    assert backlog(services.registry) == {"waiting": 0, "failed": 0}


def test_the_fhir_views_and_the_page_serve_nothing_of_a_document_whose_bytes_were_removed(tmp_path):
    services = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True))
    try:
        _open(services, PID)
        vac = C.submission(C.for_patient(corpus_path("cda", "valid", "VAC_2023.01.xml").read_bytes(), NIR))
        _ingest(services, vac)
        client = create_app(services=services).test_client()
        fhir = {"Accept": "application/fhir+json"}
        who = {"patient.identifier": F.token(PID)}
        assert client.get("/fhir/Immunization", query_string=who, headers=fhir).get_json()["total"] > 0
        remove_documents(services, INSECURE_DEV_ACTOR, [(services.settings.repository_unique_id,
                                                         vac.documents[0].unique_id)])
        immunizations = client.get("/fhir/Immunization", query_string=who, headers=fhir).get_json()
        assert immunizations["total"] == 0, "Immunizations read from removed bytes are still served"
        found = client.get("/fhir/DocumentReference", query_string={**who, "_content": "tétanique"},
                           headers=fhir).get_json()
        assert found.get("total") == 0 and not found.get("entry"), found
        page = client.get(f"/dossier/{C.public_id(services, PID)}", query_string={"q": "tétanique"})
        assert page.status_code == 200
        assert "<mark>" not in page.get_data(as_text=True), "the page shows excerpts of the removed text"
    finally:
        services.close()


def test_what_an_earlier_iti86_left_is_reported_by_fsck_and_dropped_by_the_migration(services):
    """Removals made before the fix left their facts and text: `partage fsck` reports them as
    DERIVED (no version of their document holds bytes), migration 0020 drops them."""
    _open(services, PID)
    vac = C.submission(C.for_patient(corpus_path("cda", "valid", "VAC_2023.01.xml").read_bytes(), NIR))
    _ingest(services, vac)
    kept = C.submission(C.for_patient(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(),
                                      NIR), "kept")
    _ingest(services, kept)
    [lid] = [lid for lid, d in ClinicalReader(services, DOCTOR).documents(PID).items()
             if d.unique_id == vac.documents[0].unique_id]
    with services.registry.read() as conn:   # what the removal forgets, as an earlier ITI-86 left it
        facts = [dict(r._mapping) for r in conn.execute(select(schema.clinical_facts)
                                                         .where(schema.clinical_facts.c.doc_lid == lid))]
    assert facts
    remove_documents(services, INSECURE_DEV_ACTOR, [(services.settings.repository_unique_id,
                                                     vac.documents[0].unique_id)])
    with services.registry.write() as conn:
        derived.forget(conn, lid)
        conn.execute(schema.clinical_facts.insert(), facts)
        text_search.put_text(conn, patient_pk=facts[0]["patient_pk"], lid=lid, entry_uuid=lid,
                             body="Vaccination antitétanique")
    assert ClinicalReader(services, DOCTOR).facts(PID, FactQuery(kinds=["immunization"]))
    assert fsck.check(services, min_age_seconds=0).derived_orphans == {
        "clinical_facts": [lid], "document_text": [lid]}
    _down_and_up(services, "0019")
    doctor = ClinicalReader(services, DOCTOR)
    assert doctor.facts(PID, FactQuery(kinds=["immunization"])) == [] and doctor.search(PID, "tétanique") == []
    assert doctor.latest(PID, "2.16.840.1.113883.6.1", "3016-3") is not None, "a document with its bytes keeps its facts"
    assert fsck.check(services, min_age_seconds=0).derived_orphans == {}


# ============================================================ 2. ranking: what hidden documents hold
def _ranking(services, actor, query: str) -> list[tuple[str, float]]:
    return [(h.document.title, round(h.rank, 9)) for h in ClinicalReader(services, actor).search(PID, query)]


def test_the_ranking_of_visible_hits_says_nothing_of_documents_the_reader_may_not_see(services):
    _open(services, PID, OTHER)
    _ingest(services, _note("anémie anémie anémie ferritine", "a"))
    _ingest(services, _note("anémie ferritine ferritine ferritine", "b"))
    before = _ranking(services, NURSE, "anémie ferritine")
    assert {title for title, _ in before} == {"Note a", "Note b"}
    # documents the nurse may not see hold one of the words: masked in this record, and another
    # patient's (their words weighed in FTS5's bm25, which reads the whole index)
    for i in range(8):
        _ingest(services, _note(f"ferritine masquée {i}", f"m{i}", confidentiality_codes=[C.MASQUE_PS]))
        _ingest(services, _note(f"ferritine basse {i}", f"o{i}", pid=OTHER))
    assert {title for title, _ in _ranking(services, DOCTOR, "ferritine")} == {"Note a", "Note b"}
    after = _ranking(services, NURSE, "anémie ferritine")
    assert after == before, f"hidden documents changed the visible hits' order and scores: {before} -> {after}"


def test_the_fhir_score_of_a_hit_does_not_move_with_other_patients_documents(tmp_path):
    """`search.score` (relevance relative to the best hit) over the FHIR door: another patient's
    documents, outside this search whoever asks, moved it."""
    services = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True))
    try:
        _open(services, PID, OTHER)
        _ingest(services, _note("anémie anémie anémie ferritine", "a"))
        _ingest(services, _note("anémie ferritine ferritine ferritine", "b"))
        client = create_app(services=services).test_client()

        def scores() -> list[float]:
            found = client.get("/fhir/DocumentReference", headers={"Accept": "application/fhir+json"},
                               query_string={"patient.identifier": F.token(PID), "_content": "anémie ferritine"})
            return [e["search"]["score"] for e in found.get_json()["entry"]]
        before = scores()
        for i in range(8):
            _ingest(services, _note(f"ferritine {i}", f"o{i}", pid=OTHER))
        assert scores() == before, "another patient's words moved this record's scores"
    finally:
        services.close()
