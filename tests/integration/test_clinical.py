"""Clinical reading in the flows (SQLite and PostgreSQL): facts and text are indexed in the
registration's transaction, follow the document's lifecycle, and are read through the
access policy; keyword search is ranked, highlighted and filtered."""

from __future__ import annotations

import copy

import pytest
from sqlalchemy import func, select

from partage.access.actor import INSECURE_DEV_ACTOR, PROFESSIONAL, Actor
from partage.cda.header import read_header
from partage.clinical.queue import drain
from partage.ingest import IngestService
from partage.lifecycle import update_document_set
from partage.metadata.datatypes import DTM
from partage.metadata.errors import XdsErrors
from partage.metadata.model import (
    Association,
    AssociationType,
    Code,
    SubmissionRequest,
    SubmissionSet,
)
from partage.metadata.query import DocumentFilter, TimeRange
from partage.query import QueryService
from partage.query.clinical import ClinicalReader, FactQuery
from partage.registry import schema
from partage.registry.access_state import Records
from tests import clinical_support as C
from tests import factories as F
from tests.conftest import corpus_path

pytestmark = pytest.mark.corpus

NIR = "279035121518989"
PID = C.patient_cx(NIR)
DOCTOR = Actor(id="810000000001", name="Dr Test", kind=PROFESSIONAL, role="10", auth_method="jwt")
NURSE = Actor(id="860000000002", name="Inf Test", kind=PROFESSIONAL, role="60", auth_method="jwt")
LOINC = "2.16.840.1.113883.6.1"


def _corpus(name: str) -> bytes:
    return C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR)


def _patient(services) -> None:
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [PID])
    Records(services.registry).open(PID)


def _ingest(services, request):
    return IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(request)


def _count(services, table) -> int:
    with services.registry.read() as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar()


def _reader(services, actor=INSECURE_DEV_ACTOR) -> ClinicalReader:
    return ClinicalReader(services, actor)


def test_facts_appear_with_their_document_and_point_to_it(services):
    _patient(services)
    ids = _ingest(services, C.submission(_corpus("BIO-CR-BIO_2024.01_TSH_1.xml"))).assigned_ids
    _ingest(services, C.submission(_corpus("IPS-FR_2024.01_DLU.xml")))
    reader = _reader(services)
    tsh = reader.latest(PID, LOINC, "3016-3")
    assert tsh is not None and tsh.value_num == pytest.approx(1.95)
    assert tsh.document.entry_uuid == ids["doc1"]
    kinds = {f.kind for f in reader.facts(PID)}
    assert kinds >= {"lab", "allergy", "problem", "medication", "immunization", "vital"}
    allergies = reader.facts(PID, FactQuery(kinds=["allergy"]))
    assert [a.display for a in allergies] == ["PARACETAMOL"]


def test_a_refused_submission_leaves_no_facts_and_no_text(services):
    _patient(services)
    data = _corpus("IPS-FR_2024.01_DLU.xml")
    with pytest.raises(XdsErrors):   # the CDA cross-check refuses a uniqueId that is not the CDA id
        _ingest(services, C.submission(data, unique_id="1.2.250.1.999.1.42"))
    assert _count(services, schema.clinical_facts) == 0
    assert _count(services, schema.document_text) == 0
    assert _reader(services).facts(PID) == []


def test_a_replaced_document_stops_being_current(services):
    _patient(services)
    first = _ingest(services, C.submission(_corpus("BIO-CR-BIO_2024.01_TSH_1.xml"))).assigned_ids["doc1"]
    assert _reader(services).latest(PID, LOINC, "3016-3") is not None
    replacement = C.submission(_corpus("BIO-CR-BIO_2024.01_Glycemie_mole.xml"), "doc2")
    replacement.associations.append(Association(entry_uuid="rplc", association_type=AssociationType.RPLC,
                                                source_uuid="doc2", target_uuid=first))
    _ingest(services, replacement)
    reader = _reader(services)
    assert reader.latest(PID, LOINC, "3016-3") is None          # TSH was in the replaced report
    assert reader.latest(PID, LOINC, "40193-5") is not None     # glycaemia is in the new one
    assert reader.search(PID, "Thyréostimuline") == []


def _update_set(*objects) -> SubmissionRequest:
    ss = SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=PID,
                       submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))
    assocs = [Association(entry_uuid=f"hm-{o.entry_uuid}", association_type=AssociationType.HAS_MEMBER,
                          source_uuid="ss", target_uuid=o.entry_uuid, submission_set_status="Original",
                          previous_version="1") for o in objects]
    return SubmissionRequest(ss, list(objects), [], assocs)


def test_masking_by_metadata_update_hides_facts_and_text_from_professionals(services):
    _patient(services)
    _ingest(services, C.submission(_corpus("IPS-FR_2024.01_DLU.xml")))
    assert _reader(services, DOCTOR).facts(PID, FactQuery(kinds=["allergy"]))
    assert _reader(services, DOCTOR).search(PID, "thyroïdite")
    [doc] = QueryService(services, INSECURE_DEV_ACTOR).find_documents(PID, DocumentFilter(statuses=["Approved"])).objects
    masked = copy.deepcopy(doc)
    masked.lid, masked.entry_uuid, masked.version = doc.entry_uuid, "v2", ""
    masked.confidentiality_codes = [*doc.confidentiality_codes, C.MASQUE_PS]
    update_document_set(services, INSECURE_DEV_ACTOR, _update_set(masked))
    doctor = _reader(services, DOCTOR)
    assert doctor.facts(PID) == []
    assert doctor.search(PID, "thyroïdite") == []
    # the metadata update kept the document's facts current for whom may see it
    facts = _reader(services).facts(PID, FactQuery(kinds=["allergy"]))
    assert [f.display for f in facts] == ["PARACETAMOL"]
    assert facts[0].document.version == "2"


def test_a_masked_documents_facts_are_never_counted(services):
    _patient(services)
    _ingest(services, C.submission(_corpus("BIO-CR-BIO_2024.01_TSH_1.xml"),
                                   extra_confidentiality=[C.MASQUE_PS]))
    _ingest(services, C.submission(_corpus("BIO-CR-BIO_2024.01_Glycemie_mole.xml"), "doc9"))
    doctor = _reader(services, DOCTOR)
    assert doctor.latest(PID, LOINC, "3016-3") is None
    assert [f.code for f in doctor.facts(PID, FactQuery(kinds=["lab"]))] == ["40193-5"]
    assert doctor.search(PID, "thyréostimuline") == []
    assert _reader(services).latest(PID, LOINC, "3016-3") is not None


def test_a_profession_sees_the_facts_of_the_classes_it_may_read_only(services):
    _patient(services)
    # class 31 (imagerie, the class of type 18748-4) is not readable by nurses (profession 60)
    _ingest(services, C.submission(C.retyped(_corpus("BIO-CR-BIO_2024.01_TSH_1.xml"),
                                             "18748-4", "CR d'imagerie médicale")))
    assert _reader(services, NURSE).facts(PID) == []
    assert _reader(services, DOCTOR).facts(PID)


def test_keyword_search_is_ranked_highlighted_and_filtered(services):
    _patient(services)
    _ingest(services, C.submission(_corpus("VAC_2023.01.xml")))   # class 52 (certificat); IPS-FR: 11
    _ingest(services, C.submission(_corpus("IPS-FR_2024.01_DLU.xml"), "doc2"))
    _ingest(services, C.pdf_submission(PID, C.make_pdf("Bilan renal: creatinine elevee, avis nephrologique"),
                                       "doc3", creation_time=DTM("20240601120000")))
    reader = _reader(services)
    assert reader.search(PID, "creatinine") == []   # a PDF's text is indexed in the background
    assert drain(services)["indexed"] == 2   # the PDF report, and the PDFs embedded in IPS-FR
    hits = reader.search(PID, "tétanique")
    assert len(hits) == 2
    assert hits[0].rank >= hits[1].rank
    assert all("<mark>" in h.excerpt_html for h in hits)
    assert [h.document.title for h in reader.search(PID, "creatinine")] == ["Compte rendu PDF"]
    assert reader.search(PID, "nephro")                            # prefix
    assert len(reader.search(PID, "TETANIQUE")) == 2               # case and accents folded
    only_certificates = DocumentFilter(codes={"class": [[Code("52", "1.2.250.1.213.1.1.4.1")]]})
    assert [h.document.title for h in reader.search(PID, "tétanique", only_certificates)] == [
        read_header(_corpus("VAC_2023.01.xml")).title]
    recent = DocumentFilter(creation_time=TimeRange(low="20240501000000"))
    assert [h.document.title for h in reader.search(PID, "creatinine", recent)] == ["Compte rendu PDF"]
    assert reader.search(PID, "tétanique", recent) == []
    by_author = DocumentFilter(author_persons=["801234567890^%"])   # the PDF's author (factories)
    assert [h.document.title for h in reader.search(PID, "creatinine bilan", by_author)] == ["Compte rendu PDF"]
    assert reader.search(PID, "zzzunknownword") == []
    assert reader.search(PID, '")(* --') == []                       # no words: nothing, no error
    assert len(reader.search(PID, 'tétanique" ^(:')) == 2          # engine syntax is not passed on


def test_reindex_reads_documents_registered_without_facts(services):
    from partage.clinical.index import reindex
    from partage.registry.derived import forget as _forget

    _patient(services)
    _ingest(services, C.submission(_corpus("IPS-FR_2024.01_DLU.xml")))
    before = _count(services, schema.clinical_facts)
    [doc] = QueryService(services, INSECURE_DEV_ACTOR).find_documents(PID, DocumentFilter()).objects
    with services.registry.write() as conn:   # as if registered before migration 0003
        _forget(conn, doc.lid)
    assert _reader(services).facts(PID) == [] and _reader(services).search(PID, "thyroïdite") == []
    assert reindex(services) == {"documents": 1, "facts": before, "skipped": 0}
    assert _count(services, schema.clinical_facts) == before
    assert _reader(services).search(PID, "thyroïdite")
    assert reindex(services)["documents"] == 0
    assert reindex(services, force=True)["documents"] == 1
    assert _count(services, schema.clinical_facts) == before
    assert len(_reader(services).search(PID, "thyroïdite")) == 1


def test_a_deprecated_document_stops_being_current(services):
    from partage.metadata.model import AvailabilityStatus

    _patient(services)
    doc_uuid = _ingest(services, C.submission(_corpus("VAC_2023.01.xml"))).assigned_ids["doc1"]
    assert _reader(services).facts(PID, FactQuery(kinds=["immunization"]))
    change = Association(entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS,
                         source_uuid="ss", target_uuid=doc_uuid,
                         original_status=str(AvailabilityStatus.APPROVED),
                         new_status=str(AvailabilityStatus.DEPRECATED))
    ss = SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=PID,
                       submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))
    update_document_set(services, INSECURE_DEV_ACTOR, SubmissionRequest(ss, [], [], [change]))
    assert _reader(services).facts(PID) == []
    assert _reader(services).search(PID, "tétanique") == []


def test_the_patient_does_not_see_facts_of_documents_invisible_to_the_patient(services):
    from partage.access.actor import PATIENT

    _patient(services)
    _ingest(services, C.submission(_corpus("BIO-CR-BIO_2024.01_TSH_1.xml"), extra_confidentiality=[
        Code("INVISIBLE_PATIENT", "1.2.250.1.213.1.1.4.13", "Non visible par le patient")]))
    _ingest(services, C.submission(_corpus("VAC_2023.01.xml"), "doc2"))
    patient = Actor(id=NIR, name="the patient", kind=PATIENT, patient_id=PID, auth_method="jwt")
    mine = _reader(services, patient)
    assert {f.kind for f in mine.facts(PID)} == {"immunization"}
    assert mine.search(PID, "thyréostimuline") == [] and mine.search(PID, "tétanique")
    assert _reader(services, DOCTOR).latest(PID, LOINC, "3016-3") is not None


def test_facts_follow_a_patient_merge(services):
    _patient(services)
    other_nir = "279035121518990"
    other = C.patient_cx(other_nir)
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [other])
    data = C.for_patient(corpus_path("cda", "valid", "VAC_2023.01.xml").read_bytes(), other_nir)
    _ingest(services, C.submission(data))
    assert _reader(services).facts(PID) == []
    with services.registry.write() as conn:
        services.registry.merge_patients(conn, PID, other)
    assert len(_reader(services).facts(PID, FactQuery(kinds=["immunization"]))) == 4
    assert _reader(services).search(PID, "tétanique")
