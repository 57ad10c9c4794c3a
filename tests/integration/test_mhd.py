"""The MHD / PDSm facade against a running `partage serve`: real FHIR clients, both round
trips with the XDS door (property-tested), searches, paging, retrieve, PDSm update, errors."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from fhirclient import client as fhir_client
from fhirclient.models.documentreference import DocumentReference as ClientDocumentReference
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from partage.metadata.datatypes import CX, DTM, XCN
from partage.metadata.model import Author, Code, DocumentEntry
from partage.mhd import mapping
from tests import factories as F
from tests.support import LiveServer
from tests.unit.test_fhir_mapping import authors, dtms, ids, oids, ref_ids, spi, words, xcn
from tests.xdsclient import XdsClient, objects_of

APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
NIR = f"urn:oid:{F.INS_NIR_TEST}"
JSON_PATCH = {"Content-Type": "application/json-patch+json"}
FHIR_JSON = {"Accept": "application/fhir+json"}


@pytest.fixture(scope="module")
def server(tmp_path_factory, module_database_url):
    """The facade on the embedded SQLite default and on PostgreSQL (a database of its own)."""
    data = tmp_path_factory.mktemp("mhd") / "data"
    with LiveServer(data, mllp=False, database_url=module_database_url) as live:
        live.fhir = f"{live.base_url}/fhir"
        yield live


def new_patient(server) -> tuple[str, str]:
    """A patient created through FHIR (as the MHD test kit does); returns (CX, NIR value)."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    value = pid.id
    r = requests.post(f"{server.fhir}/Patient", json={
        "resourceType": "Patient", "identifier": [{"system": NIR, "value": value}],
        "name": [{"family": "DUPONT", "given": ["Jeanne"]}], "birthDate": "1980-02-03"}, timeout=30)
    assert r.status_code == 201, r.text
    return pid, value


def submit_iti41(server, pid: str, docs: list[DocumentEntry], payloads: dict[str, bytes], **ss_fields):
    request = F.submission(pid, docs=docs, contents=False)
    for key, value in ss_fields.items():
        setattr(request.submission_set, key, value)
    reply = XdsClient(server.base_url).provide_and_register(request, payloads)
    assert reply.status == "Success", reply.error_codes
    return request


def search(server, value: str, **params) -> dict:
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params={"patient.identifier": f"{NIR}|{value}", "status": "current", **params})
    assert r.status_code == 200, r.text
    return r.json()


def found_ids(bundle: dict) -> set[str]:
    return {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in bundle.get("entry", [])}


def text_doc(pid: str, entry_id: str, **overrides) -> DocumentEntry:
    return F.document(pid, entry_id, mime_type="text/plain", **overrides)


# --- real clients ------------------------------------------------------------------------------
def test_fhirclient_searches_and_reads(server):
    pid, value = new_patient(server)
    docs = [text_doc(pid, "d1", title="Premier"), text_doc(pid, "d2", title="Second")]
    submit_iti41(server, pid, docs, {"d1": b"un", "d2": b"deux"})

    smart = fhir_client.FHIRClient(settings={"app_id": "partage-tests", "api_base": server.fhir + "/"})
    found = list(ClientDocumentReference.where(struct={"patient.identifier": f"{NIR}|{value}",
                                                       "status": "current"}).perform_resources_iter(smart.server))
    assert sorted(d.content[0].attachment.title for d in found) == ["Premier", "Second"]
    assert {d.masterIdentifier.value for d in found} == {f"urn:oid:{d.unique_id}" for d in docs}

    read = ClientDocumentReference.read(found[0].id, smart.server)
    assert read.masterIdentifier.value == found[0].masterIdentifier.value
    assert read.status == "current"
    url = read.content[0].attachment.url
    body = requests.get(url, timeout=30)
    assert body.content in (b"un", b"deux")
    assert hashlib.sha1(body.content).digest() == base64.b64decode(read.content[0].attachment.hash)


# --- round trip: ITI-41 in, ITI-67 out ----------------------------------------------------------
J06 = [Code(c, "1.2.250.1.213.1.1.4.1") for c in ("10", "11", "31", "42", "90", "99")]
J08 = [Code("N", "2.16.840.1.113883.5.25"), Code("R", "2.16.840.1.113883.5.25"),
       Code("MASQUE_PS", "1.2.250.1.213.1.1.4.13")]
free_codes = st.builds(Code, ids, oids, st.one_of(st.just(""), words))
variations = st.fixed_dictionaries({
    "title": st.one_of(st.just(""), words), "comments": st.one_of(st.just(""), words),
    "creation_time": dtms, "service_start_time": st.one_of(st.none(), dtms),
    "service_stop_time": st.one_of(st.none(), dtms), "language_code": st.sampled_from(["fr-FR", "en-US"]),
    "legal_authenticator": st.one_of(st.none(), xcn), "class_code": st.sampled_from(J06),
    "type_code": free_codes, "format_code": free_codes, "healthcare_facility_type_code": free_codes,
    "practice_setting_code": free_codes,
    "confidentiality_codes": st.lists(st.sampled_from(J08), min_size=1, max_size=2, unique=True),
    "event_codes": st.lists(free_codes, max_size=2), "authors": st.lists(authors, min_size=1, max_size=2),
    "reference_ids": st.lists(ref_ids, max_size=2), "source_patient_info": spi,
})
SERVER_SET = {"entry_uuid", "availability_status", "hash", "size", "version", "repository_unique_id",
              "lid", "home_community_id", "uri"}
ROUND_TRIP = settings(max_examples=8, deadline=None,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])


def _compared(doc: DocumentEntry) -> dict:
    skip = mapping.UNMAPPED["DocumentEntry"] | SERVER_SET
    out = {f.name: getattr(doc, f.name) for f in dataclasses.fields(doc) if f.name not in skip}
    out["authors"] = [dataclasses.replace(a, classification_id="") for a in doc.authors]   # ebRIM ids
    return out


set_variations = st.fixed_dictionaries({
    "title": st.one_of(st.just(""), words), "comments": st.one_of(st.just(""), words),
    "authors": st.lists(authors, max_size=2), "submission_time": dtms.filter(lambda d: d.precision >= 8)})


def _compared_set(ss) -> dict:
    skip = mapping.UNMAPPED["SubmissionSet"] | {"entry_uuid", "availability_status"}
    out = {f.name: getattr(ss, f.name) for f in dataclasses.fields(ss) if f.name not in skip}
    out["authors"] = [dataclasses.replace(a, classification_id="") for a in ss.authors]
    return out


@ROUND_TRIP
@given(variations, set_variations, st.binary(min_size=1, max_size=2000))
def test_iti41_submission_reads_back_by_iti67(server, fields, set_fields, payload):
    pid, value = new_patient(server)
    doc = text_doc(pid, "d1", **fields)
    request = submit_iti41(server, pid, [doc], {"d1": payload}, **set_fields)

    bundle = search(server, value, identifier=f"urn:ietf:rfc:3986|urn:oid:{doc.unique_id}")
    assert bundle["total"] == 1
    res = bundle["entry"][0]["resource"]
    # the MHD map's fixed points, spelled out (not only "the mapping agrees with itself")
    assert res["masterIdentifier"]["value"] == f"urn:oid:{doc.unique_id}"
    assert res["status"] == "current"
    assert res["category"][0]["coding"][0]["code"] == doc.class_code.code
    assert res["subject"]["identifier"] == {"system": NIR, "value": value}
    attachment = res["content"][0]["attachment"]
    assert attachment["size"] == len(payload)
    assert base64.b64decode(attachment["hash"]) == hashlib.sha1(payload).digest()
    assert requests.get(attachment["url"], timeout=30).content == payload

    back = mapping.document_entry(res, mapping.contained_resolver(res), mapping.patient_from_identifier)
    assert back.errors == []
    assert _compared(back.entry) == _compared(doc)

    lists = requests.get(f"{server.fhir}/List", headers=FHIR_JSON, timeout=30, params={   # ITI-66
        "patient.identifier": f"{NIR}|{value}", "status": "current", "code": "submissionset"}).json()
    assert lists["total"] == 1
    ss_res = lists["entry"][0]["resource"]
    assert [e["item"]["reference"] for e in ss_res["entry"]] == [f"DocumentReference/{res['id']}"]
    ss_back = mapping.submission_set(ss_res, mapping.contained_resolver(ss_res), mapping.patient_from_identifier)
    assert ss_back.errors == []
    assert _compared_set(ss_back.obj) == _compared_set(request.submission_set)


# --- round trip: ITI-65 in, ITI-18 out ----------------------------------------------------------
def provide_bundle(doc: DocumentEntry, payload: bytes, value: str, *, minimal: bool = False,
                   relates_to: list[dict] | None = None) -> dict:
    """An MHD Provide Document Bundle for one document, written from the model by the mapping."""
    links = mapping.Links(patient=lambda cx: {"identifier": {"system": NIR, "value": value}})
    res = mapping.document_reference(doc, links)
    for key in ("id", "identifier"):
        res.pop(key)
    res["meta"] = {"profile": [mapping.PROFILE["DocumentReference", minimal]]}
    res["content"][0]["attachment"]["url"] = "urn:uuid:00000000-0000-4000-8000-0000000000b1"
    for key in ("hash", "size"):
        res["content"][0]["attachment"].pop(key, None)
    if relates_to:
        res["relatesTo"] = relates_to
    ss = F.submission(doc.patient_id, docs=[doc], contents=False).submission_set
    ss_res = mapping.submission_set_list(ss, [], links)
    ss_res.pop("id")
    ss_res["identifier"] = [i for i in ss_res["identifier"] if i["use"] == "usual"]
    ss_res["meta"] = {"profile": [mapping.PROFILE["SubmissionSet", minimal]]}
    ss_res["entry"] = [{"item": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000d1"}}]
    profile = mapping.MHD_SD + ("IHE.MHD.Minimal.ProvideBundle" if minimal else "IHE.MHD.Comprehensive.ProvideBundle")
    return {"resourceType": "Bundle", "type": "transaction", "meta": {"profile": [profile]}, "entry": [
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000d1", "resource": res,
         "request": {"method": "POST", "url": "DocumentReference"}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000a1", "resource": ss_res,
         "request": {"method": "POST", "url": "List"}},
        {"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000b1",
         "resource": {"resourceType": "Binary", "contentType": doc.mime_type,
                      "data": base64.b64encode(payload).decode()},
         "request": {"method": "POST", "url": "Binary"}}]}


def post_bundle(server, bundle: dict, *, xml: bool = False) -> requests.Response:
    if xml:
        from partage.mhd.formats import serialise
        body, content_type = serialise(bundle, True)
        return requests.post(server.fhir, data=body, timeout=60,
                             headers={"Content-Type": content_type, "Accept": "application/fhir+xml"})
    return requests.post(server.fhir, json=bundle, headers=FHIR_JSON, timeout=60)


@ROUND_TRIP
@given(variations, st.binary(min_size=1, max_size=2000), st.booleans())
def test_iti65_submission_reads_back_by_iti18(server, fields, payload, xml):
    pid, value = new_patient(server)
    doc = text_doc(pid, "d1", **fields)
    r = post_bundle(server, provide_bundle(doc, payload, value), xml=xml)
    assert r.status_code == 200, r.text
    if xml:
        assert etree.fromstring(r.content).tag == "{http://hl7.org/fhir}Bundle"
    else:
        assert r.json()["type"] == "transaction-response"
        assert [e["response"]["status"][:3] for e in r.json()["entry"]] == ["201"] * 3

    client = XdsClient(server.base_url)
    reply = client.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{doc.unique_id}')"]})
    assert reply.status == "Success", reply.error_codes
    [stored] = [o for o in objects_of(reply) if isinstance(o, DocumentEntry)]
    assert stored.patient_id == pid
    assert stored.size == len(payload) and stored.hash == hashlib.sha1(payload).hexdigest()
    assert _compared(stored) == _compared(doc)
    _, documents = client.retrieve(stored.repository_unique_id, [doc.unique_id])
    assert documents[doc.unique_id].read() == payload


# --- ITI-65 details -----------------------------------------------------------------------------
def test_iti65_refusal_is_whole_and_names_the_xds_code(server):
    pid, value = new_patient(server)
    doc = text_doc(pid, "d1")
    bundle = provide_bundle(doc, b"x", value)
    bundle["entry"][0]["resource"]["subject"] = {"reference": "http://example.org/fhir/Patient/nobody"}
    r = post_bundle(server, bundle)
    assert r.status_code == 400
    outcome = r.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert any(i["details"]["coding"][0]["code"] == "XDSUnknownPatientId" for i in outcome["issue"])
    assert search(server, value)["total"] == 0

    good = provide_bundle(doc, b"x", value)
    assert post_bundle(server, good).status_code == 200
    again = post_bundle(server, good)                    # same uniqueId, other bytes: refused
    assert again.status_code in (400, 409)
    codes = {i["details"]["coding"][0]["code"] for i in again.json()["issue"]}
    assert codes & {"XDSDuplicateUniqueIdInRegistry", "XDSNonIdenticalHash"}, codes


def test_iti65_xml_without_accept_is_answered_in_xml(server):
    pid, value = new_patient(server)
    bundle = provide_bundle(text_doc(pid, "d1"), b"x", value)
    del bundle["entry"][1]["resource"]["date"]           # no submissionTime: refused
    from partage.mhd.formats import serialise
    body, content_type = serialise(bundle, True)
    r = requests.post(server.fhir, data=body, headers={"Content-Type": content_type}, timeout=60)
    assert r.status_code == 400 and r.headers["Content-Type"].startswith("application/fhir+xml")
    root = etree.fromstring(r.content)
    assert root.tag == "{http://hl7.org/fhir}OperationOutcome"
    assert "XDSRepositoryMetadataError" in root.xpath("//f:details/f:coding/f:code/@value",
                                                      namespaces={"f": "http://hl7.org/fhir"})


def test_iti65_replace_supersedes_the_original(server):
    pid, value = new_patient(server)
    original = text_doc(pid, "d1")
    r = post_bundle(server, provide_bundle(original, b"v1", value))
    assert r.status_code == 200
    original_url = r.json()["entry"][0]["response"]["location"]
    replacement = text_doc(pid, "d2")
    r = post_bundle(server, provide_bundle(replacement, b"v2", value, relates_to=[
        {"code": "replaces", "target": {"reference": original_url}}]))
    assert r.status_code == 200, r.text
    assert requests.get(original_url, headers=FHIR_JSON, timeout=30).json()["status"] == "superseded"
    assert found_ids(search(server, value)) == {replacement.unique_id}
    assert found_ids(search(server, value, status="superseded")) == {original.unique_id}
    current = search(server, value)["entry"][0]["resource"]
    assert current["relatesTo"][0]["code"] == "replaces"
    assert current["relatesTo"][0]["target"]["reference"].endswith(original_url.rsplit("/", 1)[1])


def test_iti65_folder_reads_back_by_iti18_and_iti66(server):
    pid, value = new_patient(server)
    doc = text_doc(pid, "d1")
    bundle = provide_bundle(doc, b"dossier", value)
    folder = F.folder(pid)
    links = mapping.Links(patient=lambda cx: {"identifier": {"system": NIR, "value": value}})
    folder_res = mapping.folder_list(folder, [], links)
    folder_res.pop("id")
    folder_res["identifier"] = [i for i in folder_res["identifier"] if i["use"] == "usual"]
    folder_res["entry"] = [{"item": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000d1"}}]
    bundle["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000f1", "resource": folder_res,
                            "request": {"method": "POST", "url": "List"}})
    bundle["entry"][1]["resource"]["entry"].append({"item": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000f1"}})
    r = post_bundle(server, bundle)
    assert r.status_code == 200, r.text
    assert r.json()["entry"][3]["response"]["location"].split("/")[-2] == "List"

    reply = XdsClient(server.base_url).stored_query("GetFolderAndContents", {
        "$XDSFolderUniqueId": [f"'{folder.unique_id}'"]})
    assert reply.status == "Success", reply.error_codes
    objects = objects_of(reply)
    [stored] = [o for o in objects if o.kind == "Folder"]
    assert (stored.title, stored.codes, stored.patient_id) == (folder.title, folder.codes, pid)
    assert [o.unique_id for o in objects if o.kind == "DocumentEntry"] == [doc.unique_id]

    found = requests.get(f"{server.fhir}/List", headers=FHIR_JSON, timeout=30, params={
        "patient.identifier": f"{NIR}|{value}", "status": "current", "code": "folder"}).json()
    assert found["total"] == 1
    listed = found["entry"][0]["resource"]
    assert listed["title"] == folder.title and len(listed["entry"]) == 1
    read = requests.get(f"{server.fhir}/List/{listed['id']}", headers=FHIR_JSON, timeout=30).json()
    assert read["code"]["coding"][0]["code"] == "folder" and read["entry"] == listed["entry"]


def test_pdsm_simplified_publish(server):
    pid, value = new_patient(server)
    doc = text_doc(pid, "d1")
    links = mapping.Links(patient=lambda cx: {"identifier": {"system": NIR, "value": value}})
    res = mapping.document_reference(doc, links)
    for key in ("id", "identifier"):
        res.pop(key)
    res["content"][0]["attachment"]["data"] = base64.b64encode(b"publie").decode()
    r = requests.post(f"{server.fhir}/DocumentReference", json=res, headers=FHIR_JSON, timeout=30)
    assert r.status_code == 201, r.text
    assert r.headers["Location"].endswith(f"/DocumentReference/{r.json()['id']}/_history/1")
    assert r.headers["ETag"] == 'W/"1"' and r.json()["meta"]["versionId"] == "1"
    assert requests.get(r.json()["content"][0]["attachment"]["url"], timeout=30).content == b"publie"
    assert found_ids(search(server, value)) == {doc.unique_id}


# --- ITI-67 parameters --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def corpus(server):
    """Three documents of one patient that differ in every searchable attribute."""
    pid, value = new_patient(server)
    author = XCN.parse("801234567890^MARTIN^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
    docs = [
        text_doc(pid, "a", creation_time=DTM("20240101100000"), service_start_time=DTM("20231201"),
                 service_stop_time=DTM("20231215"), class_code=Code("10", "1.2.250.1.213.1.1.4.1"),
                 type_code=Code("11490-0", "2.16.840.1.113883.6.1"), event_codes=[Code("E1", "1.2.3.4")],
                 reference_ids=[CX.parse_reference_id("ACC1^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:accession")],
                 authors=[F.document(pid).authors[0]]),
        text_doc(pid, "b", creation_time=DTM("20240601100000"), service_start_time=DTM("20240501"),
                 service_stop_time=DTM("20240502"), class_code=Code("11", "1.2.250.1.213.1.1.4.1"),
                 type_code=Code("34133-9", "2.16.840.1.113883.6.1"), event_codes=[Code("E2", "1.2.3.4")],
                 confidentiality_codes=[Code("R", "2.16.840.1.113883.5.25")],
                 healthcare_facility_type_code=Code("SA07", "1.2.250.1.71.4.2.4"),
                 practice_setting_code=Code("AMBULATOIRE", "1.2.250.1.213.1.1.4.9"),
                 format_code=Code("urn:ihe:iti:xds-sd:text:2008", "1.3.6.1.4.1.19376.1.2.3"),
                 authors=[Author(person=XCN.parse("811111111111^DURAND^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"))]),
        text_doc(pid, "c", creation_time=DTM("20241201100000"), service_start_time=DTM("20241130"),
                 service_stop_time=None, class_code=Code("10", "1.2.250.1.213.1.1.4.1"),
                 authors=[Author(person=author)]),
    ]
    submit_iti41(server, pid, docs, {"a": b"A", "b": b"B", "c": b"C"})
    return value, {d.entry_uuid: d.unique_id for d in docs}   # letter -> uniqueId


LOINC = "http://loinc.org"
TRE_A03 = "https://mos.esante.gouv.fr/NOS/TRE_A03-ClasseDocument/FHIR/TRE-A03-ClasseDocument"


@pytest.mark.parametrize("params, expected", [
    ({}, "abc"),
    ({"category": f"{TRE_A03}|10"}, "ac"),
    ({"category": "11"}, "b"),
    ({"type": f"{LOINC}|34133-9,{LOINC}|11490-0"}, "abc"),
    ({"type": f"{LOINC}|34133-9"}, "b"),
    ({"event": "urn:oid:1.2.3.4|E2"}, "b"),
    ({"security-label": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality|R"}, "b"),
    ({"facility": "SA07"}, "b"),
    ({"setting": "AMBULATOIRE"}, "b"),
    ({"format": "urn:ihe:iti:xds-sd:text:2008"}, "b"),
    ({"creation": "ge2024-05-01"}, "bc"),
    ({"creation": ["ge2024-05-01", "lt2024-07"]}, "b"),
    ({"creation": "2024-01"}, "a"),
    ({"period": "ge2024-05-01"}, "bc"),
    ({"period": "le2023-12-31"}, "a"),
    ({"period-start": "ge2024-05-01"}, "bc"),
    ({"period-end": "lt2024-01-01"}, "a"),
    ({"author.family": "durand"}, "b"),
    ({"author.given": "Cla"}, "ac"),
    ({"related:identifier": "urn:oid:1.2.3.9|ACC1"}, "a"),   # related is a reference (MHD 4.2 ITI-67)
    ({"isArchived": "false"}, "abc"),
    ({"isArchived": "true"}, ""),
])
def test_iti67_search_parameters(server, corpus, params, expected):
    value, uids = corpus
    assert found_ids(search(server, value, **params)) == {uids[c] for c in expected}


def test_iti67_identifier_patient_reference_and_post_search(server, corpus):
    value, uids = corpus
    some_uid = next(iter(uids.values()))
    assert found_ids(search(server, value, identifier=f"urn:oid:{some_uid}")) == {some_uid}
    bundle = search(server, value)
    patient_ref = bundle["entry"][0]["resource"]["subject"]["reference"]
    r = requests.post(f"{server.fhir}/DocumentReference/_search", headers=FHIR_JSON, timeout=30,
                      data={"patient": patient_ref, "status": "current"})
    assert r.status_code == 200 and found_ids(r.json()) == set(uids.values())


def test_iti67_paging_and_sort(server, corpus):
    value, uids = corpus
    seen, dates = [], []
    page = search(server, value, _count=1, _sort="creation", _total="accurate")
    while True:
        assert page["total"] == 3
        seen += [e["resource"]["masterIdentifier"]["value"] for e in page["entry"]]
        dates += [e["resource"]["content"][0]["attachment"]["creation"] for e in page["entry"]]
        nxt = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not nxt:
            break
        query = parse_qs(urlsplit(nxt[0]).query)
        assert query["status"] == ["current"] and query["_sort"] == ["creation"]
        page = requests.get(nxt[0], headers=FHIR_JSON, timeout=30).json()
    assert len(seen) == len(set(seen)) == 3
    assert dates == sorted(dates)
    newest_first = [e["resource"]["content"][0]["attachment"]["creation"]
                    for e in search(server, value, _sort="-creation")["entry"]]
    assert newest_first == sorted(dates, reverse=True)


@pytest.mark.parametrize("params, code", [
    ({"status": "current"}, "XDSStoredQueryMissingParam"),
    ({"patient.identifier": f"{NIR}|1"}, "XDSStoredQueryMissingParam"),
    ({"patient.identifier": f"{NIR}|1", "status": "nonsense"}, "XDSInvalidRequestException"),
    ({"patient.identifier": f"{NIR}|1", "status": "current", "date": "yesterday"}, "XDSInvalidRequestException"),
])
def test_iti67_errors_are_operation_outcomes_with_xds_codes(server, params, code):
    for fmt in ("json", "xml"):
        r = requests.get(f"{server.fhir}/DocumentReference", params={**params, "_format": fmt}, timeout=30)
        assert r.status_code == 400
        if fmt == "json":
            issue = r.json()["issue"][0]
            assert r.json()["resourceType"] == "OperationOutcome"
            assert issue["details"]["coding"][0]["code"] == code
        else:
            root = etree.fromstring(r.content)
            assert root.tag == "{http://hl7.org/fhir}OperationOutcome"
            codes = root.xpath("//f:details/f:coding/f:code/@value", namespaces={"f": "http://hl7.org/fhir"})
            assert codes == [code]


def test_iti67_xml_search(server, corpus):
    value, uids = corpus
    r = requests.get(f"{server.fhir}/DocumentReference", timeout=30, headers={"Accept": "application/fhir+xml"},
                     params={"patient.identifier": f"{NIR}|{value}", "status": "current"})
    assert r.status_code == 200 and r.headers["Content-Type"].startswith("application/fhir+xml")
    ns = {"f": "http://hl7.org/fhir"}
    values = etree.fromstring(r.content).xpath("//f:DocumentReference/f:masterIdentifier/f:value/@value",
                                               namespaces=ns)
    assert {v.removeprefix("urn:oid:") for v in values} == set(uids.values())


# --- ITI-66 and reads -------------------------------------------------------------------------
def test_iti66_lists_and_reads(server, corpus):
    value, uids = corpus
    r = requests.get(f"{server.fhir}/List", headers=FHIR_JSON, timeout=30, params={
        "patient.identifier": f"{NIR}|{value}", "status": "current", "code": "submissionset"})
    assert r.status_code == 200 and r.json()["total"] == 1
    ss = r.json()["entry"][0]["resource"]
    members = {e["item"]["reference"] for e in ss["entry"]}
    documents = {f"DocumentReference/{e['resource']['id']}" for e in search(server, value)["entry"]}
    assert members == documents
    for params, expected in [({"sourceId": "urn:oid:1.2.250.1.999.2"}, 1), ({"sourceId": "urn:oid:1.2.3"}, 0),
                             ({"designationType": "urn:oid:1.2.250.1.213.1.1.4.2.2|04"}, 1),
                             ({"designationType": "urn:oid:1.2.250.1.213.1.1.4.2.2|99"}, 0),
                             ({"source.family": "martin"}, 1), ({"source.given": "Zoe"}, 0),
                             ({"date": "ge2024-03-15"}, 1), ({"date": "lt2024"}, 0),
                             ({"identifier": ss["identifier"][0]["value"]}, 1), ({"code": "folder"}, 0)]:
        r = requests.get(f"{server.fhir}/List", headers=FHIR_JSON, timeout=30, params={
            "patient.identifier": f"{NIR}|{value}", "status": "current", **params})
        assert r.status_code == 200 and r.json()["total"] == expected, (params, r.text[:300])
    read = requests.get(f"{server.fhir}/List/{ss['id']}", headers=FHIR_JSON, timeout=30)
    assert read.status_code == 200 and read.json()["id"] == ss["id"]
    missing = requests.get(f"{server.fhir}/DocumentReference/{uuid.uuid4()}", headers=FHIR_JSON, timeout=30)
    assert missing.status_code == 404 and missing.json()["resourceType"] == "OperationOutcome"


# --- ITI-68 -----------------------------------------------------------------------------------
def test_iti68_streams_the_document(server):
    pid, value = new_patient(server)
    payload = bytes(range(256)) * 4096 + b"end"        # 1 MiB + 3 bytes, several chunks
    doc = F.document(pid, "d1", mime_type="application/octet-stream")
    submit_iti41(server, pid, [doc], {"d1": payload})
    res = search(server, value)["entry"][0]["resource"]
    with requests.get(res["content"][0]["attachment"]["url"], stream=True, timeout=60) as r:
        assert r.status_code == 200
        assert r.headers["Content-Type"] == "application/octet-stream"
        assert int(r.headers["Content-Length"]) == len(payload)
        chunks = list(r.iter_content(1 << 16))
    assert b"".join(chunks) == payload
    as_resource = requests.get(res["content"][0]["attachment"]["url"], headers=FHIR_JSON, timeout=60).json()
    assert as_resource["resourceType"] == "Binary" and base64.b64decode(as_resource["data"]) == payload
    gone = requests.get(f"{server.fhir}/Binary/{uuid.uuid4()}", timeout=30)
    assert gone.status_code == 404
    assert gone.json()["issue"][0]["details"]["coding"][0]["code"] == "XDSDocumentUniqueIdError"


# --- PDSm metadata update ---------------------------------------------------------------------
def _patch(server, unique_id: str, operations: list[dict]) -> requests.Response:
    return requests.patch(f"{server.fhir}/DocumentReference", params={"identifier": f"urn:oid:{unique_id}"},
                          data=json.dumps(operations), headers={**JSON_PATCH, **FHIR_JSON}, timeout=30)


def _iti18_statuses(server, pid: str) -> dict[str, str]:
    reply = XdsClient(server.base_url).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{pid}'"],
        "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved',"
                                    "'urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated',"
                                    "'urn:oasis:names:tc:ebxml-regrep:StatusType:Archived',"
                                    "'urn:ihe:iti:2010:StatusType:DeferredCreation',"
                                    "'urn:oasis:names:tc:ebxml-regrep:StatusType:Deleted')"]})
    assert reply.status == "Success", reply.error_codes
    out: dict[str, str] = {}
    for d in objects_of(reply):
        if isinstance(d, DocumentEntry):
            out[f"{d.unique_id}@{d.version}"] = str(d.availability_status).rsplit(":", 1)[-1]
    return out


def test_pdsm_patch_goes_through_the_iti57_path(server):
    pid, value = new_patient(server)
    docs = [text_doc(pid, f"d{i}") for i in range(4)]
    submit_iti41(server, pid, docs, {f"d{i}": b"x" for i in range(4)})
    archived, relabelled, removed, superseded = (d.unique_id for d in docs)

    r = _patch(server, archived, [{"op": "add", "path": "/extension", "value": [
        {"url": mapping.EXT_IS_ARCHIVED, "valueBoolean": True}]}])
    assert r.status_code == 200, r.text
    assert found_ids(search(server, value, isArchived="true")) == {archived}

    r = _patch(server, relabelled, [{"op": "replace", "path": "/securityLabel", "value": [
        {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-Confidentiality", "code": "R"}]}]}])
    assert r.status_code == 200, r.text
    assert r.json()["meta"]["versionId"] == "1"   # a new DocumentReference: XDS version 2 (below)
    assert found_ids(search(server, value, **{"security-label": "R"})) == {relabelled}

    r = _patch(server, removed, [{"op": "test", "path": "/status", "value": "current"},
                                 {"op": "replace", "path": "/status", "value": "entered-in-error"}])
    assert r.status_code == 200, r.text
    assert found_ids(search(server, value, status="entered-in-error")) == {removed}

    statuses = _iti18_statuses(server, pid)           # the XDS door sees the same updates
    assert statuses[f"{archived}@1"] == "Archived"
    assert statuses[f"{relabelled}@1"] == "Deprecated" and statuses[f"{relabelled}@2"] == "Approved"
    assert statuses[f"{removed}@1"] == "Deleted"

    # the MHD Patch Parameters form (FHIRPath Patch), conditional on the version
    fhirpath_patch = {"resourceType": "Parameters", "parameter": [{"name": "operation", "part": [
        {"name": "type", "valueCode": "replace"}, {"name": "path", "valueString": "DocumentReference.status"},
        {"name": "value", "valueCode": "superseded"}]}]}
    url = f"{server.fhir}/DocumentReference?identifier=urn:oid:{superseded}"
    stale = requests.patch(url, json=fhirpath_patch, timeout=30,
                           headers={"Content-Type": "application/fhir+json", "If-Match": 'W/"7"'})
    assert stale.status_code == 412
    r = requests.patch(url, json=fhirpath_patch, timeout=30,
                       headers={"Content-Type": "application/fhir+json", "If-Match": 'W/"1"'})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "superseded"
    assert found_ids(search(server, value, status="superseded")) == {superseded, relabelled}   # + its v1

    refused = _patch(server, archived, [{"op": "replace", "path": "/description", "value": "no"}])
    assert refused.status_code == 422
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "UnmodifiableMetadataError"
    stale = _patch(server, archived, [{"op": "test", "path": "/status", "value": "superseded"}])
    assert stale.status_code == 412
    unknown = _patch(server, "1.2.3.404", [{"op": "replace", "path": "/status", "value": "current"}])
    assert unknown.status_code == 404


# --- CapabilityStatement -------------------------------------------------------------------------
def test_capability_statement_lists_what_is_served(server):
    for accept in ("application/fhir+json", "application/fhir+xml"):
        r = requests.get(f"{server.fhir}/metadata", headers={"Accept": accept}, timeout=30)
        assert r.status_code == 200 and r.headers["Content-Type"].startswith(accept)
    cs = requests.get(f"{server.fhir}/metadata", headers=FHIR_JSON, timeout=30).json()
    assert cs["resourceType"] == "CapabilityStatement" and cs["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in cs["rest"][0]["resource"]}
    params = {p["name"] for p in resources["DocumentReference"]["searchParam"]}
    assert {"patient", "patient.identifier", "status", "identifier", "date", "creation", "author.given",
            "author.family", "category", "type", "setting", "period", "facility", "event", "security-label",
            "format", "related", "period-start", "period-end", "isArchived"} <= params
    assert {"read", "search-type", "create", "patch"} <= {i["code"] for i in resources["DocumentReference"]["interaction"]}
    assert "List" in resources and "Binary" in resources
    assert {"code": "transaction", "documentation": "ITI-65 Provide Document Bundle"} in cs["rest"][0]["interaction"]
