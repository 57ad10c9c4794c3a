"""Adversarial tests of authentication at every door (SAML on XDS.b, bearer JWTs on FHIR and
the record pages), bris de glace, and the audit of refusals, against a real `partage serve`
started WITHOUT --insecure-dev and trusting a development CA made by the tests."""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
import requests
from lxml import etree
from signxml.algorithms import SignatureConstructionMethod
from signxml.signer import XMLSigner

from partage.access import audit, saml, tokens
from partage.access.actor import AuthenticationRequired
from partage.access.credentials import ISSUER, DevAuthority, sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.services import Services
from tests import factories as F
from tests.integration.test_access import (
    APPROVED,
    _actor,
    _audit_rows,
    _bearer,
    _doc,
    _find,
    _is_auth_fault,
    _last_pk,
    _patient,
    _soap,
)
from tests.support import LiveServer
from tests.xdsclient import XdsClient

S = f"{{{saml.SAML}}}"


@pytest.fixture(scope="module", params=["sqlite"])
def server(tmp_path_factory, authority):
    data = tmp_path_factory.mktemp("authn") / "data"
    with contextlib.ExitStack() as stack:
        live = stack.enter_context(LiveServer(data, insecure_dev=False, mllp=False,
                                              extra_args=["--trust", str(authority.directory / "ca.pem")]))
        live.services = Services.open(Settings(data_dir=data), migrate=False)
        stack.callback(live.services.close)
        yield live


@pytest.fixture(scope="module")
def record(server, authority):
    pid = _patient(server)
    doctor = _actor("doctor", pid)
    docs = [_doc(pid, "normal", doctor.id)]
    request = F.submission(pid, docs, contents=False)
    reply = _soap(server, authority, doctor).provide_and_register(
        request, {d.entry_uuid: f"<doc>{d.entry_uuid}</doc>".encode() for d in docs})
    assert reply.status == "Success", reply.error_codes
    return {"pid": pid, "normal": docs[0].unique_id, "entry": docs[0].entry_uuid}


# ------------------------------------------------------------------ helpers
def _sign(authority, unsigned: etree._Element) -> bytes:
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm="rsa-sha256",
                       digest_algorithm="sha256", c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    signer.namespaces = {"ds": saml.DS}
    return etree.tostring(signer.sign(unsigned, key=authority.key, cert=[authority.cert],
                                      reference_uri="#" + unsigned.get("ID"), id_attribute="ID"))


def _unsigned(actor, audience="partage"):
    now = datetime.now(UTC) - timedelta(minutes=1)
    return saml.build_assertion(actor, issuer=ISSUER, audience=audience, not_before=now,
                                not_after=now + timedelta(hours=1))


def _query(server, pid, assertion: bytes):
    client = XdsClient(server.base_url, security=saml.security_header(assertion))
    return client.stored_query("FindDocuments", {"$XDSDocumentEntryPatientId": [f"'{pid}'"],
                                                  "$XDSDocumentEntryStatus": [APPROVED]})


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _fhir(server, authorization: str | None, path="/fhir/DocumentReference", **params):
    headers = {"Authorization": authorization} if authorization is not None else {}
    return requests.get(server.base_url + path, headers=headers, params=params or {"status": "current"},
                        timeout=30)


def _is_401_outcome(response) -> bool:
    return (response.status_code == 401 and response.headers.get("WWW-Authenticate", "").startswith("Bearer")
            and response.headers.get("Content-Type", "").startswith("application/fhir+json")
            and response.json().get("resourceType") == "OperationOutcome")


# ------------------------------------------------------------------ JWT: algorithm confusion
@pytest.mark.parametrize("alg", ["ES256", "PS256", "RS256"])
def test_bearer_token_whose_alg_does_not_fit_the_certificate_key_is_a_401(server, authority, alg):
    """Anyone may copy the trusted signer's (public) certificate into x5c and claim an algorithm
    whose key type differs from the certificate's (ES256 for an RSA certificate). RFC 7515/7518:
    the token is invalid; the FHIR door must answer its 401 OperationOutcome, never a 500."""
    token = authority.jwt(sample_actors()["gp"])
    head, body, _sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    forged = ".".join([_b64({**header, "alg": alg}), body, "AAAA"])
    since = _last_pk(server)
    response = _fhir(server, f"Bearer {forged}")
    assert _is_401_outcome(response), (response.status_code, response.text[:300])
    page = requests.get(f"{server.base_url}/dossier/x", headers={"Authorization": f"Bearer {forged}"}, timeout=30)
    assert page.status_code == 401, page.status_code
    rows = [r for r in audit.events(server.services, limit=20) if r["pk"] > since]
    assert rows and all(r["decision"] == "unauthenticated" for r in rows), rows


# ------------------------------------------------------------------ JWT: odd claims from a trusted signer
ODD_CLAIMS = {
    "extensions is a list": lambda c: {**c, "extensions": ["x"]},
    "ihe_iua is a string": lambda c: {**c, "extensions": {**c["extensions"], "ihe_iua": "gp"}},
    "purpose_of_use is a string": lambda c: {**c, "extensions": {**c["extensions"], "ihe_iua": {
        **c["extensions"]["ihe_iua"], "purpose_of_use": "bris_de_glace"}}},
    "purpose_of_use is a list of Codings": lambda c: {**c, "extensions": {**c["extensions"], "ihe_iua": {
        **c["extensions"]["ihe_iua"], "purpose_of_use": [{"system": saml.PURPOSE_SYSTEM, "code": "normal"}]}}},
    "subject_role is a string": lambda c: {**c, "extensions": {**c["extensions"], "ihe_iua": {
        **c["extensions"]["ihe_iua"], "subject_role": "10"}}},
    "fr_vihf is a list": lambda c: {**c, "extensions": {**c["extensions"], "fr_vihf": [1]}},
}


@pytest.mark.parametrize("what", sorted(ODD_CLAIMS))
def test_signed_token_with_claims_of_an_unexpected_shape_is_refused_not_a_500(server, authority, what):
    """A token from a trusted issuer whose IUA claims have another JSON shape than expected
    (an IdP's IUA dialect: purpose_of_use as an array or a plain code...). The door must answer
    401 (or accept it), never a traceback."""
    now = datetime.now(UTC) - timedelta(minutes=1)
    claims = tokens.build_claims(sample_actors()["gp"], issuer=ISSUER, audience="partage", not_before=now,
                                 not_after=now + timedelta(hours=1))
    token = tokens.sign(ODD_CLAIMS[what](claims), authority.key, [authority.cert])
    response = _fhir(server, f"Bearer {token}")
    assert response.status_code < 500, (what, response.status_code, response.text[:300])
    if response.status_code == 401:
        assert _is_401_outcome(response)


# ------------------------------------------------------------------ JWT: what held
def test_bearer_refusals_that_hold(server, authority, record):
    gp = _actor("gp", record["pid"])
    token = authority.jwt(gp)
    head, body, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    pub = authority.cert.public_key().public_bytes(
        __import__("cryptography.hazmat.primitives.serialization", fromlist=["Encoding"]).Encoding.PEM,
        __import__("cryptography.hazmat.primitives.serialization",
                   fromlist=["PublicFormat"]).PublicFormat.SubjectPublicKeyInfo)
    import hashlib
    import hmac
    hs_head = _b64({**header, "alg": "HS256"})
    hs_sig = base64.urlsafe_b64encode(hmac.new(pub, f"{hs_head}.{body}".encode(), hashlib.sha256).digest()
                                      ).rstrip(b"=").decode()
    # an impostor CA with the trusted CA's very name, sent along in x5c
    impostor = DevAuthority.create()
    from cryptography.hazmat.primitives.serialization import Encoding
    x5c = [base64.b64encode(c.public_bytes(Encoding.DER)).decode() for c in (impostor.cert, impostor.ca_cert)]
    now = datetime.now(UTC)
    nosub = {k: v for k, v in claims.items() if k != "sub"}
    bad = {
        "alg none": f"{_b64({**header, 'alg': 'none'})}.{body}.",
        "HS256 keyed with the public key": f"{hs_head}.{body}.{hs_sig}",
        "impostor chain in x5c": tokens.sign(claims, impostor.key, [impostor.cert, impostor.ca_cert]),
        "x5c is a string": f"{_b64({**header, 'x5c': 'abc'})}.{body}.{sig}",
        "x5c has garbage": f"{_b64({**header, 'x5c': ['!!!', 3]})}.{body}.{sig}",
        "jku/kid injection": f"{_b64({**header, 'kid': '../../etc/passwd', 'jku': 'http://x/'})}.{body}.{sig}",
        "nbf in the future": authority.jwt(gp, not_before=now + timedelta(hours=2)),
        "no sub": tokens.sign(nosub, authority.key, [authority.cert]),
        "garbage": "%%%not-base64%%%.@@.##",
        "long": "A" * 6000,
    }
    assert x5c  # (the impostor's chain is what tokens.sign puts in its header)
    for what, value in bad.items():
        response = _fhir(server, f"Bearer {value}")
        assert _is_401_outcome(response), (what, response.status_code, response.text[:200])
    for odd in (f"Basic {token}", f"Bearer\t{token}", f"Token {token}", "Bearer", "Bearer ", f"{token}"):
        response = _fhir(server, odd)
        assert _is_401_outcome(response), (odd[:12], response.status_code)
    # the scheme is case-insensitive (RFC 7235 2.1), surrounding spaces are tolerated
    assert _fhir(server, f"bEARER   {token}  ", **{"patient.identifier": F.token(F.cx(record["pid"])),
                                                     "status": "current"}).status_code == 200


def test_a_token_for_one_patient_reads_no_other_patient(server, authority, record):
    other = _patient(server)
    gp_for_other = dataclasses.replace(_actor("gp", record["pid"]), patient_id=_actor("patient", other).patient_id)
    bundle = _fhir(server, _bearer(authority, gp_for_other)["Authorization"],
                   **{"patient.identifier": F.token(F.cx(record["pid"])), "status": "current"})
    assert bundle.status_code in (200, 403)
    assert not (bundle.json().get("entry") if bundle.status_code == 200 else [])


# ------------------------------------------------------------------ SAML: audience restrictions
def _two_restrictions(actor):
    unsigned = _unsigned(actor, audience="another-service")
    conditions = unsigned.find(S + "Conditions")
    etree.SubElement(etree.SubElement(conditions, S + "AudienceRestriction"), S + "Audience").text = "partage"
    return unsigned


def _proxy_restriction(actor):
    unsigned = _unsigned(actor, audience="another-service")
    conditions = unsigned.find(S + "Conditions")
    etree.SubElement(etree.SubElement(conditions, S + "ProxyRestriction"), S + "Audience").text = "partage"
    return unsigned


@pytest.mark.parametrize("shape", [_two_restrictions, _proxy_restriction], ids=["two-restrictions", "proxy"])
def test_saml_assertion_for_another_service_is_refused(server, authority, record, shape):
    """SAML 2.0 core 2.5.1.4: with several <AudienceRestriction>s the relying party must be in
    EACH of them; an <Audience> of <ProxyRestriction> (2.5.1.6) names who may receive assertions
    issued on the basis of this one, not the audience of this one. An assertion made for
    another service must not open Partage."""
    gp = _actor("gp", record["pid"])
    reply = _query(server, record["pid"], _sign(authority, shape(gp)))
    assert _is_auth_fault(reply), etree.tostring(reply.body)[:300]


# ------------------------------------------------------------------ SAML: what held
def test_saml_comment_in_nameid_reads_the_whole_signed_text():
    authority = DevAuthority.create()
    import tempfile
    from pathlib import Path
    directory = Path(tempfile.mkdtemp())
    (directory / "ca.pem").write_bytes(authority.ca_pem)
    actor = dataclasses.replace(sample_actors()["doctor"], id="810000000002.evil")
    signed = etree.fromstring(_sign(authority, _unsigned(actor)))
    name_id = signed.find(f"{S}Subject/{S}NameID")
    name_id.text = "810000000002"
    comment = etree.Comment("")
    comment.tail = ".evil"
    name_id.append(comment)
    try:
        got = saml.verify_assertion(etree.tostring(signed), ca_pem_file=str(directory / "ca.pem"),
                                    audience="partage")
    except AuthenticationRequired:
        return
    assert got.id == "810000000002.evil"


def test_saml_wrapping_and_bad_shapes_refused(server, authority, record):
    pid = record["pid"]
    gp, doctor = _actor("gp", pid), _actor("doctor", pid)
    # a signed assertion and a forged one carrying the same ID, the forged one first
    signed = etree.fromstring(authority.saml_assertion(gp))
    forged = _unsigned(doctor)
    forged.set("ID", signed.get("ID"))
    forged.remove(forged.find(f"{{{saml.DS}}}Signature"))
    forged.append(signed)
    # signed by a certificate outside the trusted CA
    stranger = DevAuthority.create().saml_assertion(gp)
    # an empty NameID, properly signed
    empty = _unsigned(dataclasses.replace(gp, id=""))
    # expired beyond the skew, and not yet valid beyond it
    now = datetime.now(UTC)
    old = authority.saml_assertion(gp, not_before=now - timedelta(hours=1, minutes=3), hours=1)
    early = authority.saml_assertion(gp, not_before=now + timedelta(minutes=5))
    cases = {"duplicate ID wrap": etree.tostring(forged), "stranger": stranger,
             "empty subject": _sign(authority, empty), "expired": old, "early": early}
    for what, assertion in cases.items():
        since = _last_pk(server)
        reply = _query(server, pid, assertion)
        if what == "duplicate ID wrap" and not _is_auth_fault(reply):
            rows = [r for r in audit.events(server.services, limit=5) if r["pk"] > since]
            assert all(r["actor_id"] == gp.id for r in rows), (what, rows)
            continue
        assert _is_auth_fault(reply), what
        text = etree.tostring(reply.body)
        assert b"Traceback" not in text and pid.id.encode() not in text, what
        rows = [r for r in audit.events(server.services, limit=5) if r["pk"] > since]
        assert rows and rows[0]["decision"] == "unauthenticated" and rows[0]["detail"], (what, rows)


def test_saml_doctype_and_entities_in_the_envelope_refused(server, authority, record):
    header = saml.security_header(authority.saml_assertion(_actor("gp", record["pid"])))
    body = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY})
    envelope = build_envelope(C.ACTION_STORED_QUERY, body, extra_headers=[header])
    text = envelope if isinstance(envelope, bytes) else etree.tostring(envelope)
    text = text.replace(b"<?xml version='1.0' encoding='UTF-8'?>", b"")
    doctype = b'<!DOCTYPE e [<!ENTITY x "810000000002">]>'
    response = requests.post(f"{server.base_url}/xds/registry", data=doctype + text, timeout=30,
                             headers={"Content-Type": "application/soap+xml"})
    assert response.status_code in (400, 413, 415, 500)
    assert response.status_code != 500 and b"Fault" in response.content and b"Traceback" not in response.content


def test_saml_replay_refused_by_a_second_server_sharing_the_database(server, authority, record, tmp_path):
    assertion = authority.saml_assertion(_actor("gp", record["pid"]))
    assert not _is_auth_fault(_query(server, record["pid"], assertion))
    with LiveServer(server.data_dir, insecure_dev=False, mllp=False,
                    extra_args=["--trust", str(authority.directory / "ca.pem")]) as second:
        reply = _query(second, record["pid"], assertion)
    assert _is_auth_fault(reply) and b"replay" in etree.tostring(reply.body)


# ------------------------------------------------------------------ bris de glace through every door
def test_every_bris_de_glace_read_is_audited_and_notified(server, authority, record):
    """Every access in bris de glace leaves an audit row naming the patient and a notice owed to
    the patient, whichever door and transaction it goes through (not only the query)."""
    pid = record["pid"]
    emergency = _actor("emergency", pid)
    client = _soap(server, authority, emergency)
    entry_id = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=30,
                            headers=_bearer(authority, _actor("gp", pid)),
                            params={"patient.identifier": F.token(F.cx(pid)), "status": "current"}
                            ).json()["entry"][0]["resource"]["id"]
    reads = {
        "ITI-43": lambda: client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [record["normal"]])[1][record["normal"]],
        "ITI-67 read": lambda: requests.get(f"{server.base_url}/fhir/DocumentReference/{entry_id}", timeout=30,
                                            headers=_bearer(authority, emergency)).raise_for_status(),
        "ITI-68": lambda: requests.get(f"{server.base_url}/fhir/Binary/{entry_id}", timeout=30,
                                       headers=_bearer(authority, emergency)).raise_for_status(),
        "ITI-18": lambda: _find(client, pid),
    }
    for what, read in reads.items():
        since = _last_pk(server)
        read()
        rows = _audit_rows(server, pid, since)
        assert len(rows) == 1 and rows[0]["purpose"] == "bris_de_glace" and rows[0]["outcome"] == 0, (what, rows)
        notices = audit.notifications(server.services, rows[0]["patient_pk"])
        assert any(n["audit_pk"] == rows[0]["pk"] for n in notices), what


def test_bris_de_glace_by_actors_that_may_not_use_it(server, authority, record):
    """Bris de glace is for emergency professions (médecin, sage-femme, infirmier): a pharmacist
    in bris de glace is refused; the patient (or their legal representative) reading their own
    record with a credential that says bris de glace broke no glass: no notice that someone
    accessed the record in emergency mode is owed to the patient for it."""
    pid = record["pid"]
    pharmacist = dataclasses.replace(_actor("pharmacist", pid), purpose="bris_de_glace", reason="urgence")
    assert _find(_soap(server, authority, pharmacist), pid) == []
    for name in ("patient", "guardian"):
        actor = dataclasses.replace(_actor(name, pid), purpose="bris_de_glace", reason="why not")
        since = _last_pk(server)
        response = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=30,
                                headers=_bearer(authority, actor),
                                params={"patient.identifier": F.token(F.cx(pid)), "status": "current"})
        rows = _audit_rows(server, pid, since)
        if response.status_code == 200 and rows:
            notices = audit.notifications(server.services, rows[0]["patient_pk"])
            assert not any(n["audit_pk"] == rows[0]["pk"] for n in notices), (name, rows[0])


def test_bris_de_glace_by_uid_lookups_is_notified_and_opposition_holds_at_every_door(server, authority):
    """Reads that name no patient (GetDocuments by uniqueId, a FHIR read by id) still notify
    the patient of a bris de glace access; once the patient opposes bris de glace, no door
    lets the emergency actor read a byte."""
    from partage.registry.access_state import Records
    pid = _patient(server)
    doctor, emergency = _actor("doctor", pid), _actor("emergency", pid)
    doc = _doc(pid, "bdg", doctor.id)
    reply = _soap(server, authority, doctor).provide_and_register(
        F.submission(pid, [doc], contents=False), {doc.entry_uuid: b"<doc>bdg</doc>"})
    assert reply.status == "Success", reply.error_codes
    client = _soap(server, authority, emergency)
    entry_id = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=30,
                            headers=_bearer(authority, _actor("gp", pid)),
                            params={"patient.identifier": F.token(F.cx(pid)), "status": "current"}
                            ).json()["entry"][0]["resource"]["id"]

    def get_documents():
        got = client.stored_query("GetDocuments", {"$XDSDocumentEntryUniqueId": [f"('{doc.unique_id}')"]})
        assert got.status == "Success", got.error_codes
        return len(list(got.body.iter("{urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0}ExtrinsicObject")))

    def by_id():
        got = requests.get(f"{server.base_url}/fhir/DocumentReference/{entry_id}", timeout=30,
                           headers=_bearer(authority, emergency))
        return 1 if got.status_code == 200 else 0

    for what, read in {"GetDocuments": get_documents, "read": by_id}.items():
        since = _last_pk(server)
        assert read() == 1, what
        rows = _audit_rows(server, pid, since)
        assert len(rows) == 1 and rows[0]["purpose"] == "bris_de_glace", (what, rows)
        notices = audit.notifications(server.services, rows[0]["patient_pk"])
        assert any(n["audit_pk"] == rows[0]["pk"] for n in notices), what

    Records(server.services.registry).oppose_bris_de_glace(pid)
    assert get_documents() == 0 and by_id() == 0
    retrieved, documents = client.retrieve(DEFAULT_REPOSITORY_UNIQUE_ID, [doc.unique_id])
    assert not documents.get(doc.unique_id)
    for path in (f"/fhir/DocumentReference/{entry_id}", f"/fhir/Binary/{entry_id}"):
        response = requests.get(server.base_url + path, timeout=30, headers=_bearer(authority, emergency))
        assert response.status_code in (403, 404), (path, response.status_code)
        assert b"bdg" not in response.content


def test_a_refused_credential_says_the_same_for_a_known_and_an_unknown_patient(server, authority, record):
    pid = record["pid"]
    known = requests.get(f"{server.base_url}/fhir/DocumentReference", timeout=30,
                         headers=_bearer(authority, _actor("gp", pid)),
                         params={"patient.identifier": F.token(F.cx(pid)), "status": "current"}
                         ).json()["entry"][0]["resource"]["id"]
    expired = authority.jwt(_actor("gp", pid), not_before=datetime.now(UTC) - timedelta(hours=3), hours=1)
    for auth in (None, f"Bearer {expired}", "Bearer x.y.z"):
        for template in ("/fhir/DocumentReference/{}", "/fhir/Binary/{}", "/fhir/List/{}", "/fhir/Patient/{}",
                         "/dossier/{}"):
            answers = []
            for rid in (known, "0d3c1f2e-0000-4000-8000-000000000000"):
                headers = {"Authorization": auth} if auth else {}
                response = requests.get(server.base_url + template.format(rid), headers=headers, timeout=30,
                                        allow_redirects=False)
                answers.append((response.status_code, response.content.replace(rid.encode(), b"ID")))
            assert answers[0] == answers[1] and answers[0][0] == 401, (template, auth and auth[:10], answers)


def test_a_deeply_nested_assertion_is_a_fault(server, authority, record):
    assertion = authority.saml_assertion(_actor("gp", record["pid"]))
    header = saml.security_header(assertion)
    body = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY})
    envelope = build_envelope(C.ACTION_STORED_QUERY, body, extra_headers=[header])
    text = envelope if isinstance(envelope, bytes) else etree.tostring(envelope)
    marker = b"</saml2:Subject>"
    assert marker in text
    text = text.replace(marker, marker + b"<n>" * 3000 + b"</n>" * 3000, 1)
    since = _last_pk(server)
    response = requests.post(f"{server.base_url}/xds/registry", data=text, timeout=30,
                             headers={"Content-Type": "application/soap+xml"})
    assert response.status_code in (400, 413) and b"Fault" in response.content, response.status_code
    assert b"Traceback" not in response.content
    rows = [r for r in audit.events(server.services, limit=5) if r["pk"] > since]
    assert all(r["actor_id"] != _actor("gp", record["pid"]).id for r in rows), rows
