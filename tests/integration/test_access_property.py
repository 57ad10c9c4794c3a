"""Property (hypothesis): for random records, masks, blocks and actors, no document the
policy refuses is returned, referenced or counted by ANY read path of the app: every
stored query (LeafClass and ObjectRef), ITI-43, ITI-67 (search and read), ITI-66, ITI-68,
the keyword search (`_content`), `Patient/{id}/$summary` and the professional's page.

The oracle is `policy.read_decision` (itself checked against docs/access.md by
tests/unit/test_access_policy.py); this test checks that every door applies it. It also
checks the other direction on FindDocuments and ITI-67: what the policy allows is found.
"""

from __future__ import annotations

import dataclasses
import itertools

import pytest
import requests  # noqa: F401  (the app is driven through Flask's test client)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from partage.access import policy, saml
from partage.access.actor import PATIENT_FEED_ACTOR
from partage.access.credentials import DevAuthority, sample_actors
from partage.access.records import Records, load
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.fhir.mapping import resource_id
from partage.ingest import IngestService
from partage.metadata.model import Association, AssociationType, Code
from partage.services import Services
from partage.web.app import create_app
from partage.xds import constants as C
from partage.xds import ebrim
from partage.xds.soap import build_envelope, parse_envelope
from tests import factories as F

CONF = "1.2.250.1.213.1.1.4.13"
APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"
RIM, Q, X, RS = (f"{{{ns}}}" for ns in (C.RIM, C.QUERY, C.XDSB, C.RS))
ACTOR_NAMES = ["gp", "doctor", "nurse", "pharmacist", "emergency", "regulator", "occupational",
               "patient", "guardian", "connector", "auditor"]
AUTHORS = ["810001234567", "810000000002", "810000000003", "810000000099"]
_serial = itertools.count(1)
KEYWORD_TEXT = b"Compte rendu: nephrologie, creatinine stable."


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    directory = tmp_path_factory.mktemp("prop")
    authority = DevAuthority.create()
    authority.save(directory / "ca")
    services = Services.open(Settings(data_dir=directory / "data", trust=str(directory / "ca" / "ca.pem"),
                                      mllp_port=0))
    app = create_app(services=services)
    yield services, app.test_client(), authority
    services.close()


document_spec = st.fixed_dictionaries({
    "conf": st.sets(st.sampled_from(["MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"])),
    "class_code": st.sampled_from(["10", "11", "42", "90"]),
    "author": st.sampled_from(AUTHORS),
    "institution": st.sampled_from(["10B0000001", "10C0000002"]),
})
scenario = st.fixed_dictionaries({
    "status": st.sampled_from(["none", "open", "closed"]),
    "medecin_traitant": st.sampled_from(["", "810001234567", "810000000002"]),
    "blocked": st.sets(st.sampled_from(["810000000002", "810000000003", "810000000004", "810000000005"])),
    "bdg_opposed": st.booleans(),
    "docs": st.lists(document_spec, min_size=1, max_size=4),
    "appendix": st.none() | document_spec,     # a later document appended (APND) to the first
    "actor": st.sampled_from(ACTOR_NAMES),
    "reason": st.sampled_from(["", "coma"]),
    "own_patient": st.booleans(),
})


def _setup(services, s):
    pid = F.patient_id(700000 + next(_serial))
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    records = Records(services.registry)
    if s["status"] != "none":
        records.open(pid, medecin_traitant=s["medecin_traitant"])
        for professional in s["blocked"] - {s["medecin_traitant"]}:
            records.block(pid, professional)
        records.oppose_bris_de_glace(pid, s["bdg_opposed"])
        if s["status"] == "closed":
            records.close(pid)
    docs = [_document(pid, f"doc{i}", spec) for i, spec in enumerate(s["docs"])]
    folder = F.folder(pid)
    inner = [Association(entry_uuid=f"fa{i}", association_type=AssociationType.HAS_MEMBER,
                         source_uuid=folder.entry_uuid, target_uuid=d.entry_uuid) for i, d in enumerate(docs)]
    request = F.submission(pid, docs, folders=[folder], extra_associations=inner, payload=KEYWORD_TEXT)
    request.associations += [Association(entry_uuid=f"ss-{a.entry_uuid}", association_type=AssociationType.HAS_MEMBER,
                                         source_uuid="ss", target_uuid=a.entry_uuid) for a in inner]
    IngestService(services, PATIENT_FEED_ACTOR).provide_and_register(request)
    documents = list(request.documents)
    if s["appendix"] is not None:
        appendix = _document(pid, "appendix", s["appendix"])
        apnd = Association(entry_uuid="apnd", association_type=AssociationType.APND,
                           source_uuid="appendix", target_uuid=docs[0].entry_uuid)
        later = F.submission(pid, [appendix], extra_associations=[apnd], payload=KEYWORD_TEXT)
        IngestService(services, PATIENT_FEED_ACTOR).provide_and_register(later)
        documents.append(appendix)
    return pid, request, documents


def _document(pid, entry_id, spec):
    doc = F.document(pid, entry_id, mime_type="text/plain")   # plain text: indexed for keyword search
    doc.authors[0].person = f"{spec['author']}^AUTEUR^X^^^^^^&1.2.250.1.71.4.2.1&ISO"
    doc.authors[0].institutions = [f"Structure^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{spec['institution']}"]
    doc.class_code = Code(spec["class_code"], "1.2.250.1.213.1.1.4.1")
    doc.confidentiality_codes = [Code("N", "2.16.840.1.113883.5.25")] + [Code(c, CONF) for c in sorted(spec["conf"])]
    return doc


def _soap(client, authority, actor, action, path, body):
    header = saml.security_header(authority.saml_assertion(actor))
    response = client.post(path, data=build_envelope(action, body, extra_headers=[header]),
                           content_type="application/soap+xml")
    assert response.status_code == 200, response.data[:500]
    return parse_envelope(response.data, require_action=False).body


def _stored_query(client, authority, actor, name, params, return_type):
    body = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
    etree.SubElement(body, Q + "ResponseOption", returnType=return_type, returnComposedObjects="true")
    adhoc = etree.SubElement(body, RIM + "AdhocQuery", id=C.STORED_QUERY_IDS[name])
    for key, values in params.items():
        slot = etree.SubElement(adhoc, RIM + "Slot", name=key)
        value_list = etree.SubElement(slot, RIM + "ValueList")
        for value in values:
            etree.SubElement(value_list, RIM + "Value").text = value
    return _soap(client, authority, actor, C.ACTION_STORED_QUERY, "/xds/registry", body)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(s=scenario)
def test_no_path_leaks_a_refused_document(world, s):
    services, client, authority = world
    pid, request, documents = _setup(services, s)
    other = F.patient_id(900000 + next(_serial))
    actor = sample_actors(pid if s["own_patient"] else other)[s["actor"]]
    if actor.purpose == "bris_de_glace":
        actor = dataclasses.replace(actor, reason=s["reason"])

    # the oracle
    with services.registry.read() as conn:
        pk = services.registry.patient_pk(conn, pid)
        state = load(conn, pk)
    own = None if not actor.patient_id else s["own_patient"]
    allowed = {d.entry_uuid for d in documents
               if policy.read_decision(actor, state, d, policy.DEFAULT_TABLE, own_patient=own)}
    everything = {d.entry_uuid for d in documents}
    refused = everything - allowed
    uid_of = {d.entry_uuid: d.unique_id for d in documents}
    refused_uids = {uid_of[u] for u in refused}

    def check(body, where):
        text = etree.tostring(body).decode()
        for uuid in refused:
            assert uuid not in text, f"{where}: refused {uuid} appears"
        for uid in refused_uids:
            assert uid not in text, f"{where}: refused uniqueId {uid} appears"

    ss = request.submission_set
    folder = request.folders[0]
    doc_ids = sorted(everything)
    queries = {
        "FindDocuments": {"$XDSDocumentEntryPatientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED]},
        "GetAll": {"$patientId": [f"'{pid}'"], "$XDSDocumentEntryStatus": [APPROVED],
                   "$XDSSubmissionSetStatus": [APPROVED], "$XDSFolderStatus": [APPROVED]},
        "GetDocuments": {"$XDSDocumentEntryEntryUUID": [f"('{u}')" for u in doc_ids]},
        "GetDocumentsAndAssociations": {"$XDSDocumentEntryEntryUUID": [f"('{u}')" for u in doc_ids]},
        "GetAssociations": {"$uuid": [f"('{u}')" for u in doc_ids]},
        "GetSubmissionSets": {"$uuid": [f"('{u}')" for u in doc_ids]},
        "GetSubmissionSetAndContents": {"$XDSSubmissionSetEntryUUID": [f"'{ss.entry_uuid}'"]},
        "GetFolderAndContents": {"$XDSFolderEntryUUID": [f"'{folder.entry_uuid}'"]},
        "GetFoldersForDocument": {"$XDSDocumentEntryEntryUUID": [f"'{doc_ids[0]}'"]},
        "GetRelatedDocuments": {"$XDSDocumentEntryEntryUUID": [f"'{request.documents[0].entry_uuid}'"],
                                "$AssociationTypes": ["('urn:ihe:iti:2007:AssociationType:APND')"]},
    }
    for name, params in queries.items():
        for return_type in ("LeafClass", "ObjectRef"):
            body = _stored_query(client, authority, actor, name, params, return_type)
            errors = [e.get("errorCode") for e in body.iter(f"{RS}RegistryError")]
            assert not errors, (name, errors)
            check(body, f"{name}/{return_type}")
            if name == "FindDocuments" and return_type == "LeafClass":
                found = body.find(f"{RIM}RegistryObjectList")
                got = {d.entry_uuid for d in ebrim.read_object_list(found).documents} if found is not None else set()
                assert got == allowed
            if name == "GetRelatedDocuments" and return_type == "LeafClass" and len(documents) > len(request.documents):
                found = body.find(f"{RIM}RegistryObjectList")
                got = {d.entry_uuid for d in ebrim.read_object_list(found).documents} if found is not None else set()
                pair = {request.documents[0].entry_uuid, documents[-1].entry_uuid}
                if pair <= allowed:
                    assert got == pair    # the APND relation is served when both ends may be seen

    # ITI-43
    body = etree.Element(X + "RetrieveDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    for uid in uid_of.values():
        item = etree.SubElement(body, X + "DocumentRequest")
        etree.SubElement(item, X + "RepositoryUniqueId").text = DEFAULT_REPOSITORY_UNIQUE_ID
        etree.SubElement(item, X + "DocumentUniqueId").text = uid
    header = saml.security_header(authority.saml_assertion(actor))
    response = client.post("/xds/repository", data=build_envelope(C.ACTION_RETRIEVE, body, extra_headers=[header]),
                           content_type="application/soap+xml")
    returned = {uid for uid in uid_of.values() if f"<xdsb:DocumentUniqueId>{uid}<".encode() in response.data}
    assert returned == {uid_of[u] for u in allowed}

    # MHD: ITI-67 search, read; ITI-66; ITI-68
    headers = {"Authorization": f"Bearer {authority.jwt(actor)}"}
    value, _, rest = pid.partition("^^^&")
    ident = f"urn:oid:{rest.split('&')[0]}|{value}"
    bundle = client.get("/fhir/DocumentReference", headers=headers,
                        query_string={"patient.identifier": ident, "status": "current"})
    assert bundle.status_code == 200, bundle.data[:300]
    check_text = bundle.data.decode()
    got = {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in bundle.json["entry"]}
    assert got == {uid_of[u] for u in allowed}
    assert bundle.json.get("total", len(got)) == len(got)
    for uid in refused_uids:
        assert uid not in check_text
    lists = client.get("/fhir/List", headers=headers, query_string={"patient.identifier": ident, "status": "current"})
    assert lists.status_code == 200, lists.data[:300]
    for uuid in refused:
        assert resource_id(uuid) not in lists.data.decode()
    for uuid in everything:
        rid = resource_id(uuid)
        expected = 200 if uuid in allowed else 404
        assert client.get(f"/fhir/DocumentReference/{rid}", headers=headers).status_code == expected
        assert client.get(f"/fhir/Binary/{rid}", headers=headers).status_code == expected

    # clinical reading: keyword search, the summary and the professional's page
    search = client.get("/fhir/DocumentReference", headers=headers,
                        query_string={"patient.identifier": ident, "status": "current", "_content": "creatinine"})
    assert search.status_code == 200, search.data[:300]
    got = {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in search.json["entry"]}
    assert got == {uid_of[u] for u in allowed}, "keyword search"
    patient_rid = f"{rest.split('&')[0]}-{value}"
    for path in (f"/fhir/Patient/{patient_rid}/$summary", f"/dossier/{patient_rid}"):
        response = client.get(path, headers=headers)
        assert response.status_code in (200, 403, 404), (path, response.status_code)
        text = response.data.decode()
        for uuid in refused:
            assert resource_id(uuid) not in text and uid_of[uuid] not in text, f"{path}: refused {uuid} appears"
