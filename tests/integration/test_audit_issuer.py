"""The audit trail names who vouched for the actor: the credential's issuer.

An actor's id is a national id (RPPS, INS) that any issuer the server trusts may assert: two
identity providers, or a hospital connector signing as itself, can each assert the same
professional. Without the issuer the trail cannot say which of them vouched for an access,
which is what a complaint about a disputed access needs first.

References: IHE BALP, IHE.BasicAudit.SAMLaccessTokenUse (SAML Issuer ->
agent[user].who.identifier.system, Subject.NameID -> who.identifier.value, ID ->
agent[user].policy; IUA likewise from `iss`, `sub`, `jti`); IHE XUA ITI TF-2 3.40.4.2 (the user
is recorded with the assertion's issuer); FHIR R4 uri (no whitespace).

Before the fix: the row had no issuer, the AuditEvent's identifier no system, no policy.
"""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from lxml import etree
from sqlalchemy import text
from sqlalchemy.exc import DatabaseError

from partage.access import audit, issuers, saml
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from partage.fhir.audit import resource
from partage.registry.store import MIGRATIONS_DIR
from partage.server.app import create_app
from partage.services import Services
from tests import factories as F


@pytest.fixture(scope="module")
def world(tmp_path_factory, authority):
    directory = tmp_path_factory.mktemp("audit-issuer")
    services = Services.open(Settings(data_dir=directory / "data", trust=authority.ca_file, mllp_port=0,
                                      text_indexer=False, one_time_credentials="none"))
    pid = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [pid])
    yield {"services": services, "client": create_app(services=services).test_client(), "pid": pid,
           "connector": authority.issue("hopital de demonstration connector")}
    services.close()


def _find(world, assertion: bytes):
    body = etree.Element(f"{{{C.QUERY}}}AdhocQueryRequest", nsmap={"query": C.QUERY})
    envelope = build_envelope(C.ACTION_STORED_QUERY, body, extra_headers=[saml.security_header(assertion)])
    return world["client"].post("/xds/registry", data=envelope, content_type="application/soap+xml")


def _newest(world, actor_id: str) -> dict:
    return audit.events(world["services"], actor_id=actor_id, limit=1)[0]


def test_a_bearer_tokens_iss_is_recorded(world, authority):
    gp = sample_actors(world["pid"])["gp"]
    response = world["client"].get("/fhir/DocumentReference", headers={"Authorization": f"Bearer {authority.jwt(gp)}"},
                                   query_string={"patient.identifier": F.token(F.cx(world["pid"])),
                                                 "status": "current"})
    assert response.status_code == 200, response.data[:300]
    assert _newest(world, gp.id)["issuer"] == issuers.identity(authority.cert)


def test_two_issuers_asserting_the_same_professional_are_told_apart(world, authority):
    """The IdP and a connector signing as itself both vouch for the same RPPS id."""
    gp = sample_actors(world["pid"])["gp"]
    key, cert = world["connector"]
    seen = []
    for signer in ({}, {"key": key, "cert": cert}):
        response = _find(world, authority.saml_assertion(gp, **signer))
        assert b"FailedAuthentication" not in response.data, response.data[:300]
        seen.append(_newest(world, gp.id)["issuer"])
    assert seen == [issuers.identity(authority.cert), issuers.identity(cert)]
    assert seen[0] != seen[1]


def test_the_audit_event_names_the_issuer_and_the_credential(world, authority):
    """BALP: Issuer -> who.identifier.system, the credential's id -> agent.policy (an
    administrator's view; the patient's own view does not carry credential ids)."""
    gp = sample_actors(world["pid"])["gp"]
    world["client"].get("/fhir/DocumentReference", headers={"Authorization": f"Bearer {authority.jwt(gp)}"},
                        query_string={"patient.identifier": F.token(F.cx(world["pid"])), "status": "current"})
    row = _newest(world, gp.id)
    assert row["credential_id"]
    auditor = sample_actors(world["pid"])["auditor"]
    response = world["client"].get(f"/fhir/AuditEvent/{row['pk']}",
                                   headers={"Authorization": f"Bearer {authority.jwt(auditor)}"})
    assert response.status_code == 200, response.data[:300]
    agent = response.get_json()["agent"][0]
    assert agent["who"]["identifier"] == {"system": issuers.identity(authority.cert), "value": gp.id}
    assert agent["policy"] == [row["credential_id"]]
    own = resource({**row, "objects": []}, for_patient=True)["agent"][0]
    assert "policy" not in own and own["who"]["identifier"]["system"] == issuers.identity(authority.cert)


def test_an_issuer_that_is_not_a_uri_names_the_assigner():
    """An X.509 subject name (SAML core 8.3.3) has spaces: not a FHIR uri, so not a system."""
    row = {"pk": 1, "action": "ITI-18", "request": "", "outcome": 0, "decision": "permit", "actor_id": "810001",
           "actor_name": "", "actor_kind": "professional", "actor_role": "", "purpose": "", "reason": "",
           "structure": "", "address": "", "credential_id": "an id with spaces", "patient_id": "", "objects": [],
           "detail": "", "recorded_at": "2026-12-05T03:00:00.000000Z", "issuer": "CN=IdP Sante, O=ANS, C=FR"}
    agent = resource(row)["agent"][0]
    assert agent["who"]["identifier"] == {"value": "810001", "assigner": {"display": "CN=IdP Sante, O=ANS, C=FR"}}
    assert "policy" not in agent   # nor is a credential id with spaces a uri


def test_the_migration_keeps_older_rows_and_the_trails_guard(tmp_path):
    """Down to 0016 and up again on SQLite: the rows written before read an empty issuer, and
    the trail still refuses to be changed (the append-only trigger survives the column's
    coming and going)."""
    services = Services.open(Settings(data_dir=tmp_path / "data", insecure_dev=True, text_indexer=False))
    try:
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
        with services.registry.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0016")
            conn.execute(text("INSERT INTO audit_events (recorded_at, action, request, outcome, decision, actor_id, "
                              "actor_name, actor_kind, actor_role, purpose, reason, structure, address, "
                              "credential_id, patient_id, objects, detail) VALUES ('2026-12-05T00:00:00Z', "
                              "'ITI-18', '', 0, 'permit', 'before', '', 'professional', '', '', '', '', '', '', "
                              "'', '[]', '')"))
            conn.commit()
        with services.registry.engine.connect() as conn:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
            conn.commit()
        assert _newest({"services": services}, "before")["issuer"] == ""
        with services.registry.engine.connect() as conn, pytest.raises(DatabaseError):
            conn.execute(text("UPDATE audit_events SET actor_id = 'changed'"))
    finally:
        services.close()
