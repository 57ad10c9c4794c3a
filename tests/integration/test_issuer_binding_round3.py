"""A credential's issuer is bound to the certificate that signed it.

RFC 8725 3.8: "the application MUST validate that the cryptographic keys used for the
cryptographic operations in the JWT belong to the issuer"; RFC 7519 4.1.1 (`iss` is a
case-sensitive StringOrURI, compared as a string, RFC 7519 2 and 7.3); IHE IUA (the resource
server validates `iss`); SAML core 2.3.3 (an assertion's `<Issuer>` is required) and 2.2.5 /
8.3.6 (its Format is the entity identifier, qualifiers omitted), the SAML profiles' Issuer
processing rules (the relying party checks the issuer is one it trusts for the signature).

Before the fix, any certificate chaining to the trusted CA (a hospital connector's, a
professional's) could mint a token claiming to come from any issuer, and a token without
`iss` or an assertion without `<Issuer>` was accepted. The doors are driven through the app
(401 OperationOutcome on /fhir, the SOAP fault FailedAuthentication on /xds).
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from lxml import etree
from signxml.algorithms import SignatureConstructionMethod
from signxml.signer import XMLSigner

from partage.access import saml, tokens
from partage.access.authn import trust_problem
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.server.app import create_app
from partage.services import Services

PID = "1234567890123^^^&1.2.250.1.213.1.4.10&ISO"
S = f"{{{saml.SAML}}}"
ENTITY = "urn:oasis:names:tc:SAML:2.0:nameid-format:entity"
CONFIGURED = "https://idp.partage.example/"   # an issuer named in an issuers file


def _uri(cert: x509.Certificate) -> str:
    """The certificate's own identity: its URI subjectAltName (the dev CA gives each one)."""
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.UniformResourceIdentifier)[0]


def _fingerprint(cert: x509.Certificate) -> str:
    return "sha256:" + hashlib.sha256(cert.public_bytes(Encoding.DER)).hexdigest()


@pytest.fixture(scope="module")
def connector(authority):
    """A certificate the trusted CA issued to a hospital's connector (not the identity provider)."""
    return authority.issue("hopital de demonstration connector")


def _app(directory, authority, **more):
    settings = Settings(data_dir=directory, trust=authority.ca_file, mllp_port=0, one_time_credentials="none",
                        **more)
    services = Services.open(settings)
    return services, create_app(services=services)


@pytest.fixture(scope="module")
def client(tmp_path_factory, authority):
    services, app = _app(tmp_path_factory.mktemp("issuer-default"), authority)
    yield app.test_client()
    services.close()


@pytest.fixture(scope="module")
def configured_client(tmp_path_factory, authority):
    """A server with an issuers file: CONFIGURED may be signed for by the IdP's certificate only."""
    directory = tmp_path_factory.mktemp("issuer-configured")
    path = directory / "issuers.json"
    path.write_text(json.dumps({CONFIGURED: [_fingerprint(authority.cert)],
                                "urn:example:by-subject": ["subject:" + authority.cert.subject.rfc4514_string()]}))
    services, app = _app(directory / "data", authority, issuers=str(path))
    yield app.test_client()
    services.close()


# ------------------------------------------------------------------ minting
def _claims(**changes):
    now = datetime.now(UTC) - timedelta(minutes=1)
    claims = tokens.build_claims(sample_actors(PID)["gp"], issuer="placeholder", audience="partage",
                                 not_before=now, not_after=now + timedelta(hours=1))
    for key, value in changes.items():
        if value is _ABSENT:
            claims.pop(key)
        else:
            claims[key] = value
    return claims


_ABSENT = object()


def _jwt(key, cert, **changes) -> str:
    """Signed as `tokens.sign` does, but through PyJWS: PyJWT's encode refuses a non-string iss."""
    x5c = [base64.b64encode(cert.public_bytes(Encoding.DER)).decode("ascii")]
    return jwt.api_jws.PyJWS().encode(json.dumps(_claims(**changes)).encode(), key, algorithm="RS256",
                                      headers={"x5c": x5c, "typ": "JWT"})


def _assertion(key, cert, issuer: str | None, **attributes) -> bytes:
    now = datetime.now(UTC) - timedelta(minutes=1)
    unsigned = saml.build_assertion(sample_actors(PID)["gp"], issuer="placeholder", audience="partage",
                                    not_before=now, not_after=now + timedelta(hours=1))
    element = unsigned.find(S + "Issuer")
    if issuer is None:
        unsigned.remove(element)
    else:
        element.text = issuer
        for name, value in attributes.items():
            element.set(name, value)
    signer = XMLSigner(method=SignatureConstructionMethod.enveloped, signature_algorithm="rsa-sha256",
                       digest_algorithm="sha256", c14n_algorithm="http://www.w3.org/2001/10/xml-exc-c14n#")
    signer.namespaces = {"ds": saml.DS}
    return etree.tostring(signer.sign(unsigned, key=key, cert=[cert], reference_uri="#" + unsigned.get("ID"),
                                      id_attribute="ID"))


# ------------------------------------------------------------------ the doors
def _fhir(client, token: str):
    return client.get("/fhir/DocumentReference", query_string={"patient.identifier": "x", "status": "current"},
                      headers={"Authorization": f"Bearer {token}"})


def _is_401_outcome(response) -> bool:
    return (response.status_code == 401 and response.headers.get("WWW-Authenticate", "").startswith("Bearer")
            and response.get_json(force=True).get("resourceType") == "OperationOutcome")


def _xds(client, assertion: bytes):
    body = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY})
    envelope = build_envelope(C.ACTION_STORED_QUERY, body, extra_headers=[saml.security_header(assertion)])
    return client.post("/xds/registry", data=envelope, content_type="application/soap+xml")


def _is_auth_fault(response) -> bool:
    return response.status_code == 400 and b"FailedAuthentication" in response.data


def _accepted_fhir(response) -> bool:
    return response.status_code != 401


def _accepted_xds(response) -> bool:
    return b"FailedAuthentication" not in response.data


# ------------------------------------------------------------------ JWT, no configuration
def test_the_dev_credentials_still_pass(client, authority):
    gp = sample_actors(PID)["gp"]
    assert _accepted_fhir(_fhir(client, authority.jwt(gp)))
    assert _accepted_xds(_xds(client, authority.saml_assertion(gp)))


def test_the_legitimate_issuer_is_accepted(client, authority, connector):
    assert _accepted_fhir(_fhir(client, _jwt(authority.key, authority.cert, iss=_uri(authority.cert))))
    # a connector signing as itself is its own issuer
    key, cert = connector
    assert _accepted_fhir(_fhir(client, _jwt(key, cert, iss=_uri(cert))))


def test_a_token_signed_by_another_ca_chained_certificate_than_the_issuers_is_a_401(client, authority, connector):
    """The connector's certificate chains to the trusted CA, but the key is not the IdP's
    (RFC 8725 3.8)."""
    key, cert = connector
    response = _fhir(client, _jwt(key, cert, iss=_uri(authority.cert)))
    assert _is_401_outcome(response), response.data[:300]
    assert b"issuer" in response.data


@pytest.mark.parametrize("iss", [_ABSENT, "", None, 42, ["x"]], ids=["absent", "empty", "null", "number", "array"])
def test_a_token_without_a_string_issuer_is_a_401(client, authority, iss):
    response = _fhir(client, _jwt(authority.key, authority.cert, iss=iss))
    assert _is_401_outcome(response), response.data[:300]
    assert b"iss" in response.data


@pytest.mark.parametrize("variant", ["upper", "slash", "space", "newline"])
def test_an_issuer_is_compared_as_an_exact_string(client, authority, variant):
    """RFC 7519 2 (StringOrURI) and 7.3: compared as strings, no case folding, no normalisation."""
    legit = _uri(authority.cert)
    iss = {"upper": legit.upper(), "slash": legit + "/", "space": f" {legit} ",
           "newline": legit + "\n"}[variant]
    assert iss != legit
    response = _fhir(client, _jwt(authority.key, authority.cert, iss=iss))
    assert _is_401_outcome(response), response.data[:300]


# ------------------------------------------------------------------ SAML, no configuration
def test_an_assertion_issued_by_the_signer_is_accepted(client, authority):
    assert _accepted_xds(_xds(client, _assertion(authority.key, authority.cert, _uri(authority.cert))))
    assert _accepted_xds(_xds(client, _assertion(authority.key, authority.cert, _uri(authority.cert),
                                                 Format=ENTITY)))


def test_an_issuer_given_as_the_signers_x509_subject_is_accepted_and_another_subject_refused(
        client, authority, connector):
    """SAML core 8.3.3: an assertion signed with a structure's certificate may name its issuer
    by that certificate's subject (Format X509SubjectName); it is the signer's own identity."""
    subject = "urn:oasis:names:tc:SAML:1.1:nameid-format:X509SubjectName"
    own = authority.cert.subject.rfc4514_string()
    assert _accepted_xds(_xds(client, _assertion(authority.key, authority.cert, own, Format=subject)))
    key, cert = connector
    assert _is_auth_fault(_xds(client, _assertion(key, cert, own, Format=subject)))


def test_an_assertion_whose_issuer_is_another_entity_is_refused(client, authority, connector):
    key, cert = connector
    response = _xds(client, _assertion(key, cert, _uri(authority.cert)))
    assert _is_auth_fault(response), response.data[:400]
    assert b"Issuer" in response.data


@pytest.mark.parametrize("issuer", [None, "", "  "], ids=["absent", "empty", "blank"])
def test_an_assertion_without_an_issuer_is_refused(client, authority, issuer):
    response = _xds(client, _assertion(authority.key, authority.cert, issuer))
    assert _is_auth_fault(response), response.data[:400]
    assert b"Issuer" in response.data


@pytest.mark.parametrize("variant", ["upper", "slash", "space"])
def test_an_assertion_issuer_is_compared_as_an_exact_string(client, authority, variant):
    legit = _uri(authority.cert)
    issuer = {"upper": legit.upper(), "slash": legit + "/", "space": f"\n  {legit}\n"}[variant]
    assert _is_auth_fault(_xds(client, _assertion(authority.key, authority.cert, issuer)))


@pytest.mark.parametrize("attributes", [
    {"Format": "urn:oasis:names:tc:SAML:1.1:nameid-format:unspecified"},
    {"Format": "urn:oasis:names:tc:SAML:1.1:nameid-format:emailAddress"},
    {"Format": "urn:oasis:names:tc:SAML:2.0:nameid-format:persistent"},
    {"Format": ENTITY, "NameQualifier": "urn:elsewhere"},
    {"SPProvidedID": "x"},
], ids=["unspecified", "email", "persistent", "name-qualifier", "sp-provided-id"])
def test_an_issuer_that_is_not_an_entity_identifier_is_refused(client, authority, attributes):
    """SAML core 2.2.5 and 8.3.6: an Issuer is an entity identifier (Format omitted or
    ...:entity, NameQualifier / SPNameQualifier / SPProvidedID omitted); the name in any
    other format is in another namespace (a user's address, a pseudonym) and binds no
    issuing entity to the signature, even when its text equals the signer's identity."""
    response = _xds(client, _assertion(authority.key, authority.cert, _uri(authority.cert), **attributes))
    assert _is_auth_fault(response), response.data[:400]


# ------------------------------------------------------------------ with an issuers file
def test_a_configured_issuer_is_accepted_from_its_certificate_only(configured_client, authority, connector):
    client = configured_client
    key, cert = connector
    assert _accepted_fhir(_fhir(client, _jwt(authority.key, authority.cert, iss=CONFIGURED)))
    assert _accepted_xds(_xds(client, _assertion(authority.key, authority.cert, CONFIGURED)))
    assert _accepted_fhir(_fhir(client, _jwt(authority.key, authority.cert, iss="urn:example:by-subject")))
    assert _is_401_outcome(_fhir(client, _jwt(key, cert, iss=CONFIGURED)))
    assert _is_auth_fault(_xds(client, _assertion(key, cert, CONFIGURED)))
    assert _is_401_outcome(_fhir(client, _jwt(key, cert, iss="urn:example:by-subject")))
    # exact comparison here too: the configured issuer without its trailing slash is another one
    assert _is_401_outcome(_fhir(client, _jwt(authority.key, authority.cert, iss=CONFIGURED.rstrip("/"))))


def test_with_an_issuers_file_only_the_named_issuers_are_trusted(configured_client, authority, connector):
    """The file is the whole list: a certificate's own identity is no longer an issuer by itself."""
    key, cert = connector
    assert _is_401_outcome(_fhir(configured_client, _jwt(key, cert, iss=_uri(cert))))
    assert _is_auth_fault(_xds(configured_client, _assertion(key, cert, _uri(cert))))


def test_an_unreadable_issuers_file_stops_the_server_before_it_starts(tmp_path, authority):
    path = tmp_path / "issuers.json"
    for text in ("not json", json.dumps(["x"]), json.dumps({"x": []}), json.dumps({"x": ["md5:00"]}),
                 json.dumps({"": ["sha256:" + "0" * 64]})):
        path.write_text(text)
        problem = trust_problem(Settings(data_dir=tmp_path / "d", trust=authority.ca_file, issuers=str(path)))
        assert "issuers" in problem, text
    path.write_text(json.dumps({CONFIGURED: [_fingerprint(authority.cert)]}))
    assert "issuers" not in trust_problem(Settings(data_dir=tmp_path / "d", trust=authority.ca_file,
                                                   issuers=str(path)))
