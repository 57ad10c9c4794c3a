"""XDS model <-> MHD resources: property-tested round trips and the MHD map's fixed points."""

from __future__ import annotations

import dataclasses

from fhir.resources.R4B.documentreference import DocumentReference
from fhir.resources.R4B.list import List as FhirList
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from partage.metadata.datatypes import CX, DTM, XCN, XON, XTN, Recipient
from partage.metadata.model import (
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    SubmissionSet,
)
from partage.mhd import mapping
from partage.mhd.codes import scheme_of, system_of

# --- strategies: values as a conforming XDS source writes them ------------------------------
oids = st.builds(lambda a, b, c: f"1.2.{a}.{b}.{c}", st.integers(0, 999), st.integers(1, 99999),
                 st.integers(0, 9999))
words = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZéè0123456789 -'"),
                min_size=1, max_size=12).map(str.strip).filter(bool)
ids = st.text(st.sampled_from("0123456789ABCDEF"), min_size=1, max_size=12)
dtms = st.one_of(
    st.dates().filter(lambda d: d.year > 1900).map(lambda d: d.strftime("%Y%m%d")),
    st.datetimes().filter(lambda d: d.year > 1900).map(lambda d: d.strftime("%Y%m%d%H%M%S")),
    st.integers(1901, 2100).map(str),
).map(DTM)
schemes = st.one_of(oids, st.sampled_from(["2.16.840.1.113883.6.1", "2.16.840.1.113883.6.96",
                                           "1.2.250.1.213.1.1.4.1", "LOINC",
                                           "Connect-a-thon folderCodeList"]))
codes = st.builds(Code, ids, schemes, st.one_of(st.just(""), words))
# values as a source writes them on the wire, read as the model holds them
cx = st.builds(lambda i, a: f"{i}^^^&{a}&ISO", ids, oids).map(CX.parse)
xcn = st.one_of(
    st.builds(lambda i, f, g, p, a: f"{i}^{f}^{g}^^^{p}^^^&{a}&ISO", ids, words, words, words, oids),
    st.builds(lambda i, f, g, a: f"{i}^{f}^{g}^^^^^^&{a}&ISO^D^^^IDNPS", ids, words, words, oids),
    st.builds(lambda f: f"^{f}", words),
).map(XCN.parse)
xon = st.one_of(st.builds(lambda n, a, i: f"{n}^^^^^&{a}&ISO^IDNST^^^{i}", words, oids, ids),
                st.builds(lambda n, o: f"{n}^^^^^^^^^{o}", words, oids), words).map(XON.parse)
xtn = st.one_of(st.builds(lambda u: f"^NET^Internet^{u}@example.org", ids),
                st.builds(lambda n: f"^WPN^PH^^33^1^{n}", ids)).map(XTN.parse)
cwe = st.one_of(st.builds(lambda c, d, s: f"{c}^{d}^{s}", ids, words, oids), words)
authors = st.builds(Author, person=st.one_of(st.none(), xcn), institutions=st.lists(xon, max_size=2),
                    roles=st.lists(cwe, max_size=2), specialties=st.lists(cwe, max_size=2),
                    telecoms=st.lists(xtn, max_size=2)).filter(lambda a: not a.is_empty())
uuids = st.uuids().map(lambda u: u.urn)
statuses = st.sampled_from([AvailabilityStatus.APPROVED, AvailabilityStatus.DEPRECATED,
                            AvailabilityStatus.ARCHIVED, AvailabilityStatus.DELETED])
sha1s = st.binary(min_size=20, max_size=20).map(bytes.hex)
ref_ids = st.builds(lambda i, a: f"{i}^^^&{a}&ISO^urn:ihe:iti:xds:2013:accession", ids, oids).map(
    CX.parse_reference_id)
spi = st.lists(st.one_of(st.builds(lambda c: f"PID-3|{c.format()}", cx),
                         st.builds(lambda f, g: f"PID-5|{f}^{g}", words, words),
                         st.just("PID-7|19800101"), st.just("PID-8|F")), max_size=3)


def _opt(strategy):
    return st.one_of(st.just(""), strategy)


def _maybe(strategy):
    return st.one_of(st.none(), strategy)


documents = st.builds(
    DocumentEntry,
    entry_uuid=uuids, availability_status=statuses, title=_opt(words), comments=_opt(words),
    version=st.sampled_from(["", "1", "2"]),
    unique_id=st.one_of(oids, st.builds(lambda o, e: f"{o}^{e}", oids, ids)),
    patient_id=cx, source_patient_id=_maybe(cx), source_patient_info=spi,
    mime_type=st.sampled_from(["text/xml", "application/pdf"]), hash=_opt(sha1s),
    size=st.one_of(st.none(), st.integers(0, 10**9)), creation_time=_maybe(dtms),
    service_start_time=_maybe(dtms), service_stop_time=_maybe(dtms), language_code=_opt(st.just("fr-FR")),
    legal_authenticator=_maybe(xcn), limited_metadata=st.booleans(),
    class_code=st.one_of(st.none(), codes), type_code=st.one_of(st.none(), codes),
    format_code=st.one_of(st.none(), codes), healthcare_facility_type_code=st.one_of(st.none(), codes),
    practice_setting_code=st.one_of(st.none(), codes), confidentiality_codes=st.lists(codes, max_size=3),
    event_codes=st.lists(codes, max_size=3), authors=st.lists(authors, max_size=3),
    reference_ids=st.lists(ref_ids, max_size=2),
)
submission_sets = st.builds(
    SubmissionSet, entry_uuid=uuids, title=_opt(words), comments=_opt(words), unique_id=oids,
    source_id=oids, patient_id=cx, submission_time=dtms, content_type_code=st.one_of(st.none(), codes),
    intended_recipients=st.lists(st.one_of(st.builds(Recipient, xon),
                                           st.builds(Recipient, xon, xcn)), max_size=2),
    authors=st.lists(authors, max_size=2), limited_metadata=st.booleans(),
    availability_status=st.sampled_from([AvailabilityStatus.APPROVED, AvailabilityStatus.ARCHIVED]),
)
folders = st.builds(Folder, entry_uuid=uuids, title=_opt(words), comments=_opt(words), unique_id=oids,
                    patient_id=cx, last_update_time=dtms, codes=st.lists(codes, max_size=2),
                    limited_metadata=st.booleans(), version=st.sampled_from(["", "1"]),
                    availability_status=st.sampled_from([AvailabilityStatus.APPROVED,
                                                         AvailabilityStatus.DELETED]))


def _mapped(obj) -> dict:
    """Every attribute MHD carries (all but mapping.UNMAPPED), with authors compared whole."""
    skip = mapping.UNMAPPED[obj.kind]
    out = {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.name not in skip}
    if "availability_status" in out and out["availability_status"] is None:
        out["availability_status"] = AvailabilityStatus.APPROVED
    return out


def _by_id(res):
    return mapping.contained_resolver(res)


FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FAST
@given(documents)
def test_document_entry_round_trip(doc):
    res = mapping.document_reference(doc)
    DocumentReference.model_validate(res)          # a valid R4 DocumentReference
    back = mapping.document_entry(res, _by_id(res), mapping.patient_from_identifier)
    assert back.errors == []
    assert _mapped(back.entry) == _mapped(doc)


@FAST
@given(submission_sets, st.lists(uuids, max_size=3))
def test_submission_set_round_trip(ss, members):
    res = mapping.submission_set_list(ss, [("DocumentEntry", m) for m in members])
    FhirList.model_validate(res)
    back = mapping.submission_set(res, _by_id(res), mapping.patient_from_identifier)
    assert back.errors == []
    assert _mapped(back.obj) == _mapped(ss)
    assert [m["reference"] for m in back.members] == [f"DocumentReference/{m[9:]}" for m in members]


@FAST
@given(folders)
def test_folder_round_trip(folder):
    res = mapping.folder_list(folder)
    FhirList.model_validate(res)
    back = mapping.folder(res, mapping.patient_from_identifier)
    assert back.errors == []
    assert _mapped(back.obj) == _mapped(folder)


@FAST
@given(schemes)
def test_coding_scheme_round_trip(scheme):
    system = system_of(scheme)
    assert " " not in system and ":" in system
    assert scheme_of(system) == scheme


def test_mhd_map_fixed_points():
    """The MHD map's own rules, spelled out (a property test would accept a consistent mistake)."""
    doc = DocumentEntry(entry_uuid="urn:uuid:6f2d0a44-4d4b-4bf9-9a8e-3c4b5a6d7e8f", unique_id="1.2.3.4",
                        patient_id=CX.parse("P1^^^&1.2.250.1.213.1.4.10&ISO"), mime_type="text/xml",
                        hash="da39a3ee5e6b4b0d3255bfef95601890afd80709", size=0,
                        class_code=Code("10", "1.2.250.1.213.1.1.4.1"),
                        type_code=Code("11490-0", "2.16.840.1.113883.6.1"),
                        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25")],
                        format_code=Code("urn:ihe:iti:xds-sd:pdf:2008", "1.3.6.1.4.1.19376.1.2.3"),
                        event_codes=[Code("E1", "1.2.3.4.5")], creation_time=DTM("20240315093000"),
                        availability_status=AvailabilityStatus.DEPRECATED)
    res = mapping.document_reference(doc, relations=[Association(
        association_type=AssociationType.RPLC, source_uuid=doc.entry_uuid,
        target_uuid="urn:uuid:00000000-0000-4000-8000-000000000001")])
    assert res["id"] == "6f2d0a44-4d4b-4bf9-9a8e-3c4b5a6d7e8f"
    assert res["masterIdentifier"] == {"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3.4"}
    assert {"use": "official", "system": "urn:ietf:rfc:3986", "value": doc.entry_uuid} in res["identifier"]
    assert res["status"] == "superseded"
    assert res["type"]["coding"][0] == {"system": "http://loinc.org", "code": "11490-0"}
    assert res["category"][0]["coding"][0]["system"].endswith("TRE-A03-ClasseDocument")
    assert res["context"]["event"][0]["coding"][0]["system"] == "urn:oid:1.2.3.4.5"
    assert res["content"][0]["attachment"]["hash"] == "2jmj7l5rSw0yVb/vlWAYkK/YBwk="
    assert res["content"][0]["attachment"]["creation"] == "2024-03-15T09:30:00Z"
    assert res["content"][0]["format"]["system"] == "http://ihe.net/fhir/ihe.formatcode.fhir/CodeSystem/formatcode"
    assert res["relatesTo"] == [{"code": "replaces", "target": {
        "reference": "DocumentReference/00000000-0000-4000-8000-000000000001"}}]


def test_edited_structure_wins_over_kept_wire_value():
    """A client that renames an author gets its edit, not the stale original."""
    author = Author(person=XCN.parse("123^MARTIN^Claire^^^^^^&1.2.250.1.71.4.2.1&ISO"))
    doc = DocumentEntry(entry_uuid="urn:uuid:6f2d0a44-4d4b-4bf9-9a8e-3c4b5a6d7e8f", authors=[author])
    res = mapping.document_reference(doc)
    res["contained"][0]["name"][0]["family"] = "DURAND"
    back = mapping.document_entry(res, _by_id(res), mapping.patient_from_identifier)
    assert back.entry.authors[0].person == XCN.parse("123^DURAND^Claire^^^^^^&1.2.250.1.71.4.2.1&ISO")
