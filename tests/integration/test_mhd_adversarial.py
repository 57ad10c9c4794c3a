"""Adversarial tests of the MHD facade (ITI-65/66/67/68) against the IHE MHD 4.2 and FHIR R4
specifications: what the semantics say, beyond what test_mhd.py and test_fhir_*.py cover."""

from __future__ import annotations

import base64
import copy
import hashlib

import pytest
import requests

from tests.integration.test_mhd import NIR, new_patient, post_bundle, provide_bundle, text_doc
from tests.support import LiveServer

FHIR_JSON = {"Accept": "application/fhir+json"}
DOC_URL = "urn:uuid:00000000-0000-4000-8000-0000000000d1"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    data = tmp_path_factory.mktemp("mhd-adv") / "data"
    with LiveServer(data, mllp=False) as live:
        live.fhir = f"{live.base_url}/fhir"
        yield live


def patient_with_id(server) -> tuple[str, str, str]:
    """(CX, NIR value, FHIR logical id) of a new patient."""
    pid, value = new_patient(server)
    r = requests.get(f"{server.fhir}/Patient", params={"identifier": f"{NIR}|{value}"}, headers=FHIR_JSON,
                     timeout=30)
    assert r.status_code == 200, r.text
    [entry] = r.json()["entry"]
    return pid, value, entry["resource"]["id"]


def docs_of(server, **params) -> list[dict]:
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params={"status": "current", **params})
    assert r.status_code == 200, r.text
    return [e["resource"] for e in r.json().get("entry", []) if e.get("search", {}).get("mode") == "match"]


def uids(resources: list[dict]) -> set[str]:
    return {r["masterIdentifier"]["value"].removeprefix("urn:oid:") for r in resources}


def submit_one(server, value: str, pid: str, payload: bytes = b"x", **kw) -> tuple[str, str]:
    """(uniqueId, DocumentReference location) of a document submitted by ITI-65."""
    doc = text_doc(pid, "d1")
    r = post_bundle(server, provide_bundle(doc, payload, value, **kw))
    assert r.status_code == 200, r.text
    return doc.unique_id, r.json()["entry"][0]["response"]["location"]


# --- ITI-65 ----------------------------------------------------------------------------------------
def test_iti65_duplicate_full_url_is_refused(server):
    """FHIR R4 Bundle invariant bdl-7: fullUrl must be unique in a bundle (or differ by
    meta.versionId). Two DocumentReferences under one fullUrl make every reference to it
    ambiguous; the transaction must be refused as a whole."""
    pid, value = new_patient(server)
    first, second = text_doc(pid, "d1"), text_doc(pid, "d2")
    bundle = provide_bundle(first, b"one", value)
    other = provide_bundle(second, b"two", value)["entry"][0]
    other = copy.deepcopy(other)
    other["resource"]["content"][0]["attachment"].pop("url")
    other["resource"]["content"][0]["attachment"]["data"] = base64.b64encode(b"two").decode()
    bundle["entry"].append(other)   # same fullUrl as entry 0
    r = post_bundle(server, bundle)
    assert r.status_code == 400, (r.status_code, r.text[:500])
    assert docs_of(server, **{"patient.identifier": f"{NIR}|{value}"}) == []


def test_iti65_subject_on_another_server_is_not_this_servers_patient(server):
    """FHIR R4 references.html: an absolute reference names the resource at that base; a
    Patient of http://other.example/fhir is not this server's Patient with the same id.
    MHD 4.2 2:3.65.4.1.3.1: the Document Recipient checks the subject is a Patient it knows."""
    pid, value, rid = patient_with_id(server)
    doc = text_doc(pid, "d1")
    bundle = provide_bundle(doc, b"x", value)
    foreign = {"reference": f"http://other.example/fhir/Patient/{rid}"}
    bundle["entry"][0]["resource"]["subject"] = foreign
    bundle["entry"][1]["resource"]["subject"] = foreign
    r = post_bundle(server, bundle)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert docs_of(server, **{"patient.identifier": f"{NIR}|{value}"}) == []


def test_iti65_replaces_a_document_on_another_server_is_unresolved(server):
    """relatesTo.target http://other.example/fhir/DocumentReference/<id> is not the local
    DocumentReference <id>: it must not supersede it."""
    pid, value = new_patient(server)
    original, location = submit_one(server, value, pid)
    rid = location.rsplit("/", 1)[1]
    replacement = text_doc(pid, "d2")
    r = post_bundle(server, provide_bundle(replacement, b"v2", value, relates_to=[
        {"code": "replaces", "target": {"reference": f"http://other.example/fhir/DocumentReference/{rid}"}}]))
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert uids(docs_of(server, **{"patient.identifier": f"{NIR}|{value}"})) == {original}


def test_iti65_replacing_a_deprecated_document_is_refused_held(server):
    """ITI TF-2b 3.42.4.1.3.5 (RPLC): the target must be Approved; XDSRegistryDeprecatedDocumentError."""
    pid, value = new_patient(server)
    _, location = submit_one(server, value, pid, b"v1")
    r = post_bundle(server, provide_bundle(text_doc(pid, "d2"), b"v2", value, relates_to=[
        {"code": "replaces", "target": {"reference": location}}]))
    assert r.status_code == 200, r.text
    r = post_bundle(server, provide_bundle(text_doc(pid, "d3"), b"v3", value, relates_to=[
        {"code": "replaces", "target": {"reference": location}}]))
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert len(docs_of(server, **{"patient.identifier": f"{NIR}|{value}"})) == 1


def test_iti65_replacing_another_patients_document_is_refused(server):
    pid, value = new_patient(server)
    _, location = submit_one(server, value, pid)
    pid2, value2 = new_patient(server)
    r = post_bundle(server, provide_bundle(text_doc(pid2, "d2"), b"v2", value2, relates_to=[
        {"code": "replaces", "target": {"reference": location}}]))
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert docs_of(server, **{"patient.identifier": f"{NIR}|{value2}"}) == []


def test_iti65_hash_and_size_disagreeing_with_binary(server):
    pid, value = new_patient(server)
    for field, bad in (("hash", base64.b64encode(hashlib.sha1(b"other").digest()).decode()), ("size", 999)):
        bundle = provide_bundle(text_doc(pid, "d1"), b"x", value)
        bundle["entry"][0]["resource"]["content"][0]["attachment"][field] = bad
        r = post_bundle(server, bundle)
        assert r.status_code == 400, (field, r.text[:300])
    assert docs_of(server, **{"patient.identifier": f"{NIR}|{value}"}) == []


def test_iti65_bundle_type_batch_is_refused(server):
    pid, value = new_patient(server)
    bundle = provide_bundle(text_doc(pid, "d1"), b"x", value)
    bundle["type"] = "batch"
    r = post_bundle(server, bundle)
    assert r.status_code == 400
    assert r.json()["resourceType"] == "OperationOutcome"


def test_iti65_error_names_the_offending_entry(server):
    """Two DocumentReferences, the second one bad: the OperationOutcome must say which entry
    (FHIR R4 http.html#transaction-response: the OperationOutcome identifies the problem;
    OperationOutcome.issue.expression / location)."""
    pid, value = new_patient(server)
    bundle = provide_bundle(text_doc(pid, "d1"), b"x", value)
    second = copy.deepcopy(provide_bundle(text_doc(pid, "d2"), b"y", value)["entry"][0])
    second["fullUrl"] = "urn:uuid:00000000-0000-4000-8000-0000000000d2"
    second["resource"]["content"][0]["attachment"].pop("url")
    second["resource"]["content"][0]["attachment"]["data"] = base64.b64encode(b"y").decode()
    second["resource"]["status"] = "bogus"
    bundle["entry"].append(second)
    bundle["entry"][1]["resource"]["entry"].append({"item": {"reference": second["fullUrl"]}})
    r = post_bundle(server, bundle)
    assert r.status_code == 400
    issues = r.json()["issue"]
    located = [i for i in issues if "bogus" in i.get("diagnostics", "")]
    assert located, issues
    where = " ".join(located[0].get("expression", []) + located[0].get("location", []))
    assert "0000000000d2" in where or "entry[3]" in where, located


def test_iti65_same_binary_for_two_documents(server):
    """Two DocumentReferences naming one Binary: either refused, or both registered with its bytes
    and the response's Binary location names a Binary that answers those bytes."""
    pid, value = new_patient(server)
    bundle = provide_bundle(text_doc(pid, "d1"), b"shared", value)
    second = copy.deepcopy(provide_bundle(text_doc(pid, "d2"), b"shared", value)["entry"][0])
    second["fullUrl"] = "urn:uuid:00000000-0000-4000-8000-0000000000d2"
    bundle["entry"].append(second)
    bundle["entry"][1]["resource"]["entry"].append({"item": {"reference": second["fullUrl"]}})
    r = post_bundle(server, bundle)
    if r.status_code == 400:
        return
    assert r.status_code == 200, r.text
    entries = r.json()["entry"]
    assert len(entries) == 4
    binary_location = entries[2]["response"]["location"]
    assert requests.get(binary_location, timeout=30).content == b"shared"
    assert len(docs_of(server, **{"patient.identifier": f"{NIR}|{value}"})) == 2


# --- ITI-67 ----------------------------------------------------------------------------------------
def test_iti67_repeated_patient_is_and_not_last_wins(server):
    """FHIR R4 search.html#combining: a repeated parameter is AND. patient=A&patient=B cannot
    match a DocumentReference (one subject): the answer is empty or a 400, not B's documents."""
    pid_a, value_a, rid_a = patient_with_id(server)
    pid_b, value_b, rid_b = patient_with_id(server)
    submit_one(server, value_a, pid_a)
    submit_one(server, value_b, pid_b)
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params=[("patient", f"Patient/{rid_a}"), ("patient", f"Patient/{rid_b}"), ("status", "current")])
    assert r.status_code == 400 or not [e for e in r.json().get("entry", []) if e["search"]["mode"] == "match"], \
        r.text[:500]
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params=[("patient", f"Patient/{rid_a}"), ("patient.identifier", f"{NIR}|{value_b}"),
                             ("status", "current")])
    assert r.status_code == 400 or not [e for e in r.json().get("entry", []) if e["search"]["mode"] == "match"], \
        r.text[:500]


def test_iti67_patient_or_list_is_not_silently_empty(server):
    """FHIR R4 search.html#combining: patient=A,B is OR. Answer both patients' documents, or
    refuse (400); an empty 200 Bundle claims neither patient has any document."""
    pid_a, value_a, rid_a = patient_with_id(server)
    pid_b, value_b, rid_b = patient_with_id(server)
    ua, _ = submit_one(server, value_a, pid_a)
    ub, _ = submit_one(server, value_b, pid_b)
    for params in ({"patient": f"Patient/{rid_a},Patient/{rid_b}"},
                   {"patient.identifier": f"{NIR}|{value_a},{NIR}|{value_b}"}):
        r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                         params={**params, "status": "current"})
        if r.status_code == 400:
            continue
        assert r.status_code == 200
        got = uids([e["resource"] for e in r.json().get("entry", []) if e["search"]["mode"] == "match"])
        assert got == {ua, ub}, (params, got, r.json().get("total"))


@pytest.mark.parametrize("value", [
    "ge2020-01-01T10:00:00.5+02:00", "lt2999-01-01T00:00:00.000Z", "le2999", "gt2000-02", "sa2000-01-01",
    "eb2999-12-31T23:59:59-05:00", "ne1999", "eq2026", "ge2020-01-01T10:00:00+14:00"])
def test_iti67_date_prefixes_and_precisions_do_not_fail(server, value):
    pid, value_p = new_patient(server)
    submit_one(server, value_p, pid)
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params={"patient.identifier": f"{NIR}|{value_p}", "status": "current", "date": value})
    assert r.status_code == 200, r.text[:300]


@pytest.mark.parametrize("ident", ["123", "|123", "http://example.org|123", "urn:oid:|123",
                                   f"{NIR}|", "a\\|b|c", "urn:oid:1.2.3|x|y", "urn:oid:abc|1"])
def test_iti67_patient_identifier_odd_systems(server, ident):
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params={"patient.identifier": ident, "status": "current"})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])


@pytest.mark.parametrize("count,ok", [("0", True), ("-1", False), ("1000", True), ("100000", None)])
def test_iti67_count_bounds(server, count, ok):
    pid, value = new_patient(server)
    submit_one(server, value, pid)
    r = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30,
                     params={"patient.identifier": f"{NIR}|{value}", "status": "current", "_count": count})
    if ok is False:
        assert r.status_code == 400
    else:
        # FHIR R4 search.html#count: the server may return fewer than asked; a huge _count is
        # not an error in itself.
        assert r.status_code == 200, r.text[:300]
        if count == "0":
            assert r.json()["total"] == 1 and not [e for e in r.json().get("entry", [])
                                                    if e["search"]["mode"] == "match"]


@pytest.mark.parametrize("param", ["status:not=current", "type:missing=true", "type:text=x",
                                   "_include=DocumentReference:subject", "_revinclude=List:item",
                                   "_sort=title", "_total=bogus", "_summary=true", "_elements=id"])
def test_iti67_unsupported_modifiers_strict_400(server, param):
    pid, value = new_patient(server)
    key, _, val = param.partition("=")
    r = requests.get(f"{server.fhir}/DocumentReference", timeout=30,
                     headers={**FHIR_JSON, "Prefer": "handling=strict"},
                     params={"patient.identifier": f"{NIR}|{value}", "status": "current", key: val})
    assert r.status_code == 400, (param, r.status_code, r.text[:300])
    r = requests.get(f"{server.fhir}/DocumentReference", timeout=30, headers=FHIR_JSON,
                     params={"patient.identifier": f"{NIR}|{value}", "status": "current", key: val})
    assert r.status_code == 200
    assert any(e["search"]["mode"] == "outcome" for e in r.json().get("entry", [])), (param, r.json())


# --- ITI-68 ----------------------------------------------------------------------------------------
def test_iti68_range_and_conditional_reads(server):
    pid, value = new_patient(server)
    _, location = submit_one(server, value, pid, b"0123456789")
    doc = requests.get(location, headers=FHIR_JSON, timeout=30).json()
    url = doc["content"][0]["attachment"]["url"]
    r = requests.get(url, headers={"Range": "bytes=2-4"}, timeout=30)
    assert (r.status_code, r.content) in ((206, b"234"), (200, b"0123456789")), (r.status_code, r.content)
    if r.status_code == 200:
        assert r.headers.get("Accept-Ranges", "none") == "none"
    etag = requests.get(url, timeout=30).headers["ETag"]
    assert requests.get(url, headers={"If-None-Match": etag}, timeout=30).status_code == 304
    r = requests.get(url, headers={"Accept": "application/pdf"}, timeout=30)
    assert r.status_code in (200, 406)
    h = requests.head(url, timeout=30)
    assert h.status_code == 200 and h.content == b""


def test_iti68_binary_of_superseded_document_is_still_retrievable(server):
    pid, value = new_patient(server)
    _, location = submit_one(server, value, pid, b"v1")
    r = post_bundle(server, provide_bundle(text_doc(pid, "d2"), b"v2", value, relates_to=[
        {"code": "replaces", "target": {"reference": location}}]))
    assert r.status_code == 200
    old = requests.get(location, headers=FHIR_JSON, timeout=30).json()
    assert old["status"] == "superseded"
    assert requests.get(old["content"][0]["attachment"]["url"], timeout=30).content == b"v1"


def test_iti65_folder_member_of_another_patient_is_refused(server):
    """A new Folder holding an existing document of another patient: ITI TF-2b 3.42.4.1.3.x,
    a Folder's members share its patient (XDSPatientIdDoesNotMatch)."""
    pid_a, value_a = new_patient(server)
    _, location = submit_one(server, value_a, pid_a)
    pid_b, value_b = new_patient(server)
    from partage.mhd import mapping
    from tests import factories as F
    bundle = provide_bundle(text_doc(pid_b, "d1"), b"b", value_b)
    links = mapping.Links(patient=lambda cx: {"identifier": {"system": NIR, "value": value_b}})
    folder_res = mapping.folder_list(F.folder(pid_b), [], links)
    folder_res.pop("id")
    folder_res["identifier"] = [i for i in folder_res["identifier"] if i["use"] == "usual"]
    folder_res["entry"] = [{"item": {"reference": location}}]
    bundle["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000f1", "resource": folder_res,
                            "request": {"method": "POST", "url": "List"}})
    bundle["entry"][1]["resource"]["entry"].append({"item": {"reference": "urn:uuid:00000000-0000-4000-8000-0000000000f1"}})
    r = post_bundle(server, bundle)
    assert r.status_code == 400, (r.status_code, r.text[:300])
    assert docs_of(server, **{"patient.identifier": f"{NIR}|{value_b}"}) == []


def test_iti67_paging_stable_when_documents_are_added(server):
    pid, value = new_patient(server)
    first = {submit_one(server, value, pid, bytes([i]))[0] for i in range(3)}
    params = {"patient.identifier": f"{NIR}|{value}", "status": "current", "_count": "2"}
    page1 = requests.get(f"{server.fhir}/DocumentReference", headers=FHIR_JSON, timeout=30, params=params).json()
    submit_one(server, value, pid, b"late")
    nxt = [link["url"] for link in page1["link"] if link["relation"] == "next"][0]
    page2 = requests.get(nxt, headers=FHIR_JSON, timeout=30).json()
    seen = [e["resource"] for e in page1["entry"] + page2.get("entry", []) if e["search"]["mode"] == "match"]
    assert len(seen) == len(uids(seen)) and uids(seen) == first


@pytest.mark.parametrize("status,found", [("http://hl7.org/fhir/document-reference-status|current", True),
                                          ("http://hl7.org/fhir/document-reference-status|", True),
                                          ("http://example.org|current", False)])
def test_iti67_status_token_forms(server, status, found):
    pid, value = new_patient(server)
    submit_one(server, value, pid)
    got = docs_of(server, **{"patient.identifier": f"{NIR}|{value}", "status": status})
    assert bool(got) == found, (status, len(got))
