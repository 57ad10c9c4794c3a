"""Credentials: SAML (VIHF-like) and JWT issuing and verification, and every route of the
app refusing a request without acceptable credentials."""

from __future__ import annotations

import base64
import dataclasses
import json
from datetime import UTC, datetime, timedelta

import pytest
from lxml import etree

from partage.access import issuers, saml, tokens
from partage.access.actor import AuthenticationRequired
from partage.access.credentials import DevAuthority, sample_actors, write_dev_credentials
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.server.app import create_app
from partage.services import Services

PID = "1234567890123^^^&1.2.250.1.213.1.4.10&ISO"




def _verify_saml(authority, data, audience="partage", **kw):
    return saml.verify_assertion(data, ca_pem_file=authority.ca_file, audience=audience, **kw)


def _verify_jwt(authority, token, audience="partage", **kw):
    return tokens.verify_token(token, ca_pem_file=authority.ca_file, audience=audience, **kw)


@pytest.mark.parametrize("name", sorted(sample_actors(PID)))
def test_round_trip_every_sample_actor(authority, name):
    actor = sample_actors(PID)[name]
    for got in (_verify_saml(authority, authority.saml_assertion(actor)),
                _verify_jwt(authority, authority.jwt(actor))):
        assert got.credential_id
        assert got.credential_expires > datetime.now(UTC).timestamp()
        assert got.issuer == issuers.identity(authority.cert)
        assert dataclasses.replace(got, credential_id="", auth_method="", credential_expires=0, issuer="") == actor


def test_saml_refusals(authority):
    gp = sample_actors(PID)["gp"]
    now = datetime.now(UTC)
    with pytest.raises(AuthenticationRequired, match="expired"):
        _verify_saml(authority, authority.saml_assertion(gp, not_before=now - timedelta(hours=3), hours=1))
    with pytest.raises(AuthenticationRequired, match="not yet valid"):
        _verify_saml(authority, authority.saml_assertion(gp, not_before=now + timedelta(hours=1)))
    with pytest.raises(AuthenticationRequired, match="audience"):
        _verify_saml(authority, authority.saml_assertion(gp, audience="elsewhere"))
    with pytest.raises(AuthenticationRequired, match="signature"):
        _verify_saml(authority, DevAuthority.create().saml_assertion(gp))
    with pytest.raises(AuthenticationRequired, match="signature"):
        _verify_saml(authority, authority.saml_assertion(gp).replace(b">810001234567<", b">810000000002<"))
    unsigned = etree.tostring(saml.build_assertion(gp, issuer="x", audience="partage", not_before=now,
                                                   not_after=now + timedelta(hours=1)))
    with pytest.raises(AuthenticationRequired, match="signature"):
        _verify_saml(authority, unsigned)
    # a certificate issued by the trusted CA but expired refuses its assertions too
    key, cert = authority.issue("old signer", days=1, not_before=now - timedelta(days=3))
    with pytest.raises(AuthenticationRequired, match="signature"):
        _verify_saml(authority, authority.saml_assertion(gp, key=key, cert=cert))
    # the skew tolerates a slightly early clock
    assert _verify_saml(authority, authority.saml_assertion(gp, not_before=now + timedelta(seconds=30)))


def test_saml_wrapping_reads_only_the_signed_assertion(authority):
    """An attacker wraps a signed assertion inside a forged one: the claims come from the signed one."""
    gp, doctor = sample_actors(PID)["gp"], sample_actors(PID)["doctor"]
    signed = etree.fromstring(authority.saml_assertion(gp))
    now = datetime.now(UTC)
    forged = saml.build_assertion(doctor, issuer="x", audience="partage", not_before=now,
                                  not_after=now + timedelta(hours=1))
    forged.remove(forged.find(f"{{{saml.DS}}}Signature"))
    forged.find(f"{{{saml.SAML}}}Subject").append(signed)
    try:
        actor = _verify_saml(authority, etree.tostring(forged))
    except AuthenticationRequired:
        return
    assert actor.id == gp.id


def test_jwt_refusals(authority):
    gp = sample_actors(PID)["gp"]
    now = datetime.now(UTC)
    with pytest.raises(AuthenticationRequired, match="expired"):
        _verify_jwt(authority, authority.jwt(gp, not_before=now - timedelta(hours=3), hours=1))
    with pytest.raises(AuthenticationRequired, match="not yet valid"):
        _verify_jwt(authority, authority.jwt(gp, not_before=now + timedelta(hours=1)))
    with pytest.raises(AuthenticationRequired, match="audience"):
        _verify_jwt(authority, authority.jwt(gp, audience="elsewhere"))
    with pytest.raises(AuthenticationRequired, match="certificate"):
        _verify_jwt(authority, DevAuthority.create().jwt(gp))
    # a forged payload under a genuine header and signature
    head, body, sig = authority.jwt(gp).split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "810000000099"
    forged = base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode()
    with pytest.raises(AuthenticationRequired, match="refused"):
        _verify_jwt(authority, ".".join([head, forged, sig]))
    # alg none, and a token with no certificate chain
    none_head = base64.urlsafe_b64encode(b'{"alg":"none","typ":"JWT"}').rstrip(b"=").decode()
    with pytest.raises(AuthenticationRequired, match="algorithm"):
        _verify_jwt(authority, f"{none_head}.{body}.")
    import jwt as pyjwt
    with pytest.raises(AuthenticationRequired, match="x5c"):
        _verify_jwt(authority, pyjwt.encode(claims, authority.key, algorithm="RS256"))
    # an actor kind reserved to the server cannot be asserted
    with pytest.raises(AuthenticationRequired, match="kind"):
        _verify_jwt(authority, authority.jwt(dataclasses.replace(gp, kind="system")))
    with pytest.raises(AuthenticationRequired, match="kind"):
        _verify_saml(authority, authority.saml_assertion(dataclasses.replace(gp, kind="insecure-dev")))


def test_dev_credentials_command(tmp_path):
    from partage.cli import main

    assert main(["dev-credentials", "--out", str(tmp_path), "--hours", "1"]) == 0
    index = json.loads((tmp_path / "actors.json").read_text())
    assert set(index["actors"]) == set(sample_actors())
    ca = str(tmp_path / "ca.pem")
    for name in index["actors"]:
        jwt_actor = tokens.verify_token((tmp_path / f"{name}.jwt").read_text().strip(), ca_pem_file=ca,
                                        audience="partage")
        saml_actor = saml.verify_assertion((tmp_path / f"{name}.saml.xml").read_bytes(), ca_pem_file=ca,
                                           audience="partage")
        assert jwt_actor.id == saml_actor.id == index["actors"][name]["id"]
    # run again: the CA is kept, so a server trusting it keeps working
    before = (tmp_path / "ca.pem").read_bytes()
    write_dev_credentials(tmp_path, hours=1)
    assert (tmp_path / "ca.pem").read_bytes() == before


# ------------------------------------------------------------------ every route
PUBLIC_ENDPOINTS = {   # hold no patient data; everything else must refuse an anonymous request
    "static", "health.healthz", "fhir.metadata", "validate.validate_post", "validate.validate_form",
    # the page's sign-in (OpenID Connect) is how a professional gets credentials: it holds no patient data
    "login.sign_in", "login.callback", "login.sign_out", "login.signed_out",
}


@pytest.fixture(scope="module")
def app(tmp_path_factory, authority):
    settings = Settings(data_dir=tmp_path_factory.mktemp("routes"), trust=authority.ca_file, mllp_port=0,
                        one_time_credentials="all")
    services = Services.open(settings)
    yield create_app(services=services)
    services.close()


def _soap_request(client, path, headers=()):
    body = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY})
    envelope = build_envelope(C.ACTION_STORED_QUERY, body, extra_headers=list(headers))
    return client.post(path, data=envelope, content_type="application/soap+xml")


def _tampered(token: str) -> str:
    head, body, sig = token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    claims["sub"] = "810000000099"
    return ".".join([head, base64.urlsafe_b64encode(json.dumps(claims).encode()).rstrip(b"=").decode(), sig])


def test_every_route_refuses_missing_or_bad_credentials(app, authority):
    client = app.test_client()
    gp = sample_actors(PID)["gp"]
    now = datetime.now(UTC)
    bad_tokens = {"none": None, "expired": authority.jwt(gp, not_before=now - timedelta(hours=3), hours=1),
                  "wrong audience": authority.jwt(gp, audience="elsewhere"),
                  "untrusted": DevAuthority.create().jwt(gp),
                  "tampered": _tampered(authority.jwt(gp))}
    bad_assertions = {"none": None,
                      "expired": authority.saml_assertion(gp, not_before=now - timedelta(hours=3), hours=1),
                      "wrong audience": authority.saml_assertion(gp, audience="elsewhere"),
                      "untrusted": DevAuthority.create().saml_assertion(gp),
                      "tampered": authority.saml_assertion(gp).replace(b">810001234567<", b">810000000002<")}
    checked = 0
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        path = rule.rule.replace("<rid>", "x")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if path.startswith("/xds/"):
                for what, assertion in bad_assertions.items():
                    headers = [saml.security_header(assertion)] if assertion else []
                    response = _soap_request(client, path, headers)
                    assert response.status_code == 400, (path, what)
                    assert b"FailedAuthentication" in response.data, (path, what)
            else:
                for what, token in bad_tokens.items():
                    headers = {"Authorization": f"Bearer {token}"} if token else {}
                    response = client.open(path, method=method, headers=headers, json={})
                    assert response.status_code == 401, (method, path, what, response.data[:300])
            checked += 1
    assert checked >= 20


def test_every_route_refuses_a_replayed_credential(app, authority):
    """With single-use credentials, a credential accepted once is refused the second time."""
    client = app.test_client()
    gp = sample_actors(PID)["gp"]
    for rule in app.url_map.iter_rules():
        if rule.endpoint in PUBLIC_ENDPOINTS:
            continue
        path = rule.rule.replace("<rid>", "x")
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            if path.startswith("/xds/"):
                header = saml.security_header(authority.saml_assertion(gp))
                first = _soap_request(client, path, [header])
                again = _soap_request(client, path, [header])
                assert b"FailedAuthentication" not in first.data, path
                assert b"FailedAuthentication" in again.data and b"replay" in again.data, path
            else:
                headers = {"Authorization": f"Bearer {authority.jwt(gp)}"}
                first = client.open(path, method=method, headers=headers, json={})
                again = client.open(path, method=method, headers=headers, json={})
                assert first.status_code != 401, (method, path, first.data[:300])
                # the reason: in the body (OperationOutcome), or for the French page in WWW-Authenticate (RFC 6750)
                assert again.status_code == 401 and (b"replay" in again.data or "replay" in again.headers.get(
                    "WWW-Authenticate", "")), (method, path)


def test_insecure_dev_is_explicit(tmp_path):
    assert Settings().insecure_dev is False
    assert Settings.from_env({}).insecure_dev is False
    from partage.server.serve import BANNER_INSECURE
    assert "INSECURE" in BANNER_INSECURE


def test_one_time_credentials(tmp_path, authority):
    gp = sample_actors(PID)["gp"]
    for mode, saml_twice, jwt_twice in (("saml", False, True), ("all", False, False), ("none", True, True)):
        settings = Settings(data_dir=tmp_path / mode, trust=authority.ca_file, one_time_credentials=mode)
        services = Services.open(settings)
        try:
            client = create_app(services=services).test_client()
            header = saml.security_header(authority.saml_assertion(gp))
            token = {"Authorization": f"Bearer {authority.jwt(gp)}"}
            first = _soap_request(client, "/xds/registry", [header])
            again = _soap_request(client, "/xds/registry", [header])
            assert b"FailedAuthentication" not in first.data
            assert (b"FailedAuthentication" not in again.data) == saml_twice, mode
            assert b"replay" in again.data or saml_twice
            params = {"status": "current", "patient.identifier": "urn:oid:1.2.250.1.213.1.4.10|1"}
            assert client.get("/fhir/DocumentReference", headers=token, query_string=params).status_code == 200
            second = client.get("/fhir/DocumentReference", headers=token, query_string=params).status_code
            assert (second == 200) == jwt_twice, mode
        finally:
            services.close()


def test_dev_credentials_wrap(tmp_path, capsysbinary):
    from pathlib import Path

    from partage.cli import main
    from partage.ebxml.soap import parse_envelope

    example = Path(__file__).resolve().parents[2] / "examples" / "iti18-find-documents.xml"
    assert main(["dev-credentials", "--out", str(tmp_path), "--hours", "1"]) == 0
    capsysbinary.readouterr()
    assertions = []
    for _ in range(2):
        assert main(["dev-credentials", "--out", str(tmp_path), "--as", "nurse", "--wrap", str(example)]) == 0
        envelope = parse_envelope(capsysbinary.readouterr().out)
        assert envelope.body.tag.endswith("AdhocQueryRequest")
        actor = saml.verify_assertion(saml.find_assertion(envelope.header), ca_pem_file=str(tmp_path / "ca.pem"),
                                      audience="partage")
        assert actor.id == sample_actors()["nurse"].id
        assertions.append(actor.credential_id)
    assert assertions[0] != assertions[1]     # a fresh assertion each time


def test_capability_statement_names_the_access_resources(app):
    cs = app.test_client().get("/fhir/metadata").get_json()
    resources = {r["type"] for r in cs["rest"][0]["resource"]}
    assert {"AuditEvent", "Consent"} <= resources
    assert cs["rest"][0]["security"]["service"][0]["coding"][0]["code"] == "OAuth"


def test_serve_refuses_an_unusable_trust_file(tmp_path, authority):
    from partage.access.authn import trust_problem
    from partage.cli import main

    assert trust_problem(Settings(trust=authority.ca_file)) == ""
    assert "No such file" in trust_problem(Settings(trust=str(tmp_path / "missing.pem")))
    (tmp_path / "empty.pem").write_text("not a certificate\n")
    assert trust_problem(Settings(trust=str(tmp_path / "empty.pem")))
    assert main(["serve", "--data", str(tmp_path / "data"), "--trust", str(tmp_path / "missing.pem"),
                 "--mllp-port", "0"]) == 2
