"""Signing in to the professional's page for real: `partage serve` WITHOUT --insecure-dev, the
development OpenID provider (`partage dev-idp`, Authlib) in its own process, and a client that
goes through the authorization-code flow (PKCE) as a browser does. Sessions, sign-out, the
access mode (bris de glace asked on the page), the audit trail, and the French error pages."""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from lxml import html

from benchmarks.bench_clinical import GP, NIR, feed_patient
from partage.access import audit
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.ingest import IngestService
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.page_support import Browserless, DevIdp, csrf_of, sign_in, signed_in_server

pytestmark = pytest.mark.corpus

LIFETIME = 15  # seconds a session lasts here: long enough for a test's steps on a loaded machine (the expiry test waits it out)


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    with DevIdp(tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture(scope="module")
def server(tmp_path_factory, idp, authority):
    def record(services):
        pid = feed_patient(services)
        ingest = IngestService(services, INSECURE_DEV_ACTOR)
        for i, name in enumerate(["IPS-FR_2024.01_DLU.xml", "BIO-CR-BIO_2024.01_TSH_1.xml"]):
            cda = C.for_patient(corpus_path("cda", "valid", name).read_bytes(), NIR)
            ingest.provide_and_register(C.submission(cda, f"d{i}"))   # raises when refused
        return C.public_id(services, pid)

    env = {**idp.server_args(), "PARTAGE_SESSION_LIFETIME": str(LIFETIME)}
    with signed_in_server(tmp_path_factory.mktemp("page-login") / "data", env, authority.ca_file, record) as live:
        yield live


def _audit_since(server, pk: int) -> list[dict]:
    return [r for r in audit.events(server.services, limit=50) if r["pk"] > pk]


def _last_pk(server) -> int:
    rows = audit.events(server.services, limit=1)
    return rows[0]["pk"] if rows else 0


def test_a_browser_without_a_session_is_sent_to_sign_in_an_api_client_gets_401(server):
    page = requests.get(server.base_url + server.dossier, headers={"Accept": "text/html"}, allow_redirects=False,
                        timeout=30)
    assert page.status_code == 302
    target = urlsplit(page.headers["Location"])
    assert target.path == "/connexion" and parse_qs(target.query)["suite"] == [server.dossier]
    api = requests.get(server.base_url + server.dossier, timeout=30)
    assert api.status_code == 401 and api.headers["WWW-Authenticate"].startswith("Bearer")
    assert "Identification requise" in api.text and "<html lang=\"fr\">" in api.text


def test_sign_in_with_the_provider_opens_the_page_and_the_session_cookie_is_locked_down(server):
    client = Browserless()
    since = _last_pk(server)
    page = sign_in(client, server.base_url, server.dossier)
    assert page.status_code == 200, page.text[:500]
    tree = html.fromstring(page.text)
    assert tree.get_element_by_id("patient-name").text_content().strip() == "DURAND Élise"
    assert "Dr Claire MARTIN" in page.text          # the signed-in professional, from the provider's claims
    cookie = next(h for h in client.set_cookie_headers if h.startswith("__Host-partage_session=") and "Expires" in h)
    flags = {part.strip().split("=")[0].lower() for part in cookie.split(";")}
    assert {"secure", "httponly", "expires", "path"} <= flags and "SameSite=Lax" in cookie
    rows = _audit_since(server, since)
    viewed = [r for r in rows if r["action"] == "page-record" and r["outcome"] == 0]
    assert viewed and viewed[-1]["actor_id"] == GP.id and viewed[-1]["purpose"] == "normal"
    assert viewed[-1]["credential_id"].startswith("oidc:") and viewed[-1]["patient_pk"] is not None


def test_the_actor_is_the_one_the_bearer_door_builds(server, authority):
    """The same professional through the provider and through a bearer JWT: one actor."""
    client = Browserless()
    sign_in(client, server.base_url, server.dossier)
    since = _last_pk(server)
    requests.get(server.base_url + server.dossier, timeout=30,
                 headers={"Authorization": f"Bearer {authority.jwt(sample_actors()['gp'])}"})
    assert client.get(server.base_url + server.dossier).status_code == 200
    jwt_row, oidc_row = sorted((r for r in _audit_since(server, since) if r["action"] == "page-record"),
                               key=lambda r: r["pk"])
    for column in ("actor_id", "actor_role", "structure", "actor_kind", "purpose", "decision"):
        assert jwt_row[column] == oidc_row[column], column


def test_sign_out_ends_the_session_for_good(server):
    client = Browserless()
    page = sign_in(client, server.base_url, server.dossier)
    stolen = dict(client.cookies)
    assert client.post(server.base_url + "/connexion/deconnexion", data={"csrf": "forged"}).status_code == 403
    out = client.follow(client.post(server.base_url + "/connexion/deconnexion", data={"csrf": csrf_of(page.text)}))
    assert out.status_code == 200 and "déconnecté" in out.text
    assert client.get(server.base_url + server.dossier).status_code == 302
    replay = Browserless()
    replay.cookies = stolen                 # the cookie from before the sign-out opens nothing
    assert replay.get(server.base_url + server.dossier).status_code == 302


def test_an_expired_or_tampered_session_opens_nothing(server):
    client = Browserless()
    sign_in(client, server.base_url, server.dossier)
    value = client.cookies["__Host-partage_session"]
    tampered = Browserless()
    tampered.cookies = {"__Host-partage_session": value[:-3] + ("AAA" if not value.endswith("AAA") else "BBB")}
    assert tampered.get(server.base_url + server.dossier).status_code == 302
    time.sleep(LIFETIME + 1)
    assert client.get(server.base_url + server.dossier).status_code == 302


def test_a_forged_callback_and_a_foreign_return_address_are_refused(server):
    client = Browserless()
    forged = client.get(server.base_url + "/connexion/retour?code=abc&state=xyz")
    assert forged.status_code == 401 and "La connexion a échoué" in forged.text
    assert "__Host-partage_session" not in client.cookies or client.get(
        server.base_url + server.dossier).status_code == 302
    client = Browserless()
    start = client.get(server.base_url + "/connexion?suite=https://evil.example/x")
    response = client.get(start.headers["Location"])
    response = client.post(start.headers["Location"], data={"user": "gp"})
    landing = client.get(response.headers["Location"])
    assert landing.status_code == 302 and landing.headers["Location"] == "/"


def test_bris_de_glace_is_asked_on_the_page_with_its_reason_and_audited(server):
    client = Browserless()
    page = sign_in(client, server.base_url, server.dossier, user="doctor")
    access = server.base_url + server.dossier + "/acces"
    assert client.post(access, data={"mode": "bris_de_glace", "reason": "x"}).status_code == 403   # no CSRF token
    empty = client.post(access, data={"mode": "bris_de_glace", "reason": "  ", "csrf": csrf_of(page.text)})
    assert empty.status_code == 400 and "motif" in empty.text
    since = _last_pk(server)
    moved = client.post(access, data={"mode": "bris_de_glace", "reason": "patient inconscient aux urgences",
                                      "csrf": csrf_of(page.text)})
    assert moved.status_code == 303
    switched = [r for r in _audit_since(server, since) if r["action"] == "page-access-mode"]
    assert switched and switched[-1]["purpose"] == "bris_de_glace" and switched[-1]["outcome"] == 0
    page = client.get(server.base_url + server.dossier)
    assert page.status_code == 200 and "Bris de glace" in page.text
    rows = [r for r in _audit_since(server, since) if r["action"] == "page-record" and r["outcome"] == 0]
    assert rows and all(r["purpose"] == "bris_de_glace" and r["reason"] == "patient inconscient aux urgences"
                        for r in rows)
    told = audit.notifications(server.services, rows[0]["patient_pk"])
    assert any(n["kind"] == "bris_de_glace" and "urgences" in n["message"] for n in told)
    back = client.post(access, data={"mode": "normal", "csrf": csrf_of(page.text)})
    assert back.status_code == 303 and "Accès normal" in client.get(server.base_url + server.dossier).text


def test_a_refused_professional_gets_a_french_refusal_that_names_no_one(server):
    client = Browserless()
    page = sign_in(client, server.base_url, server.dossier, user="occupational")
    assert page.status_code == 403
    assert "Accès refusé" in page.text and "<html lang=\"fr\">" in page.text
    for secret in ("DURAND", "Élise", "1979", "279035121510031", "2 79 03"):
        assert secret not in page.text


def test_error_pages_are_french_without_a_stack_trace(server):
    client = Browserless()
    sign_in(client, server.base_url, server.dossier)
    unknown = client.get(server.base_url + "/dossier/nobody-here")
    assert unknown.status_code == 404 and "Page introuvable" in unknown.text
    nowhere = client.get(server.base_url + server.dossier + "/no/such/page")
    assert nowhere.status_code == 404 and "Page introuvable" in nowhere.text
    wrong = client.post(server.base_url + server.dossier)
    assert wrong.status_code == 405 and "Action non permise" in wrong.text
    # a document whose bytes went missing from the blob store: the server fails, and says so in French
    page = html.fromstring(client.get(server.base_url + server.dossier).text)
    link = page.xpath("//section[@id='timeline']//a[contains(@href, '/documents/')]/@href")[0]
    assert client.get(server.base_url + link).status_code == 200     # readable while its bytes are there
    blobs = [p for p in (server.data_dir / "blobs").rglob("*") if p.is_file()]
    saved = {p: p.read_bytes() for p in blobs}
    try:
        for p in blobs:
            p.unlink()
        broken = client.get(server.base_url + link)
    finally:
        for p, data in saved.items():
            p.write_bytes(data)
    assert broken.status_code == 500 and "Erreur du serveur" in broken.text
    for leak in ("Traceback", "File \"", "Error:", "partage/"):
        assert leak not in broken.text
    for response in (unknown, nowhere, wrong, broken):
        assert response.headers["Content-Type"].startswith("text/html")
        assert "default-src 'none'" in response.headers["Content-Security-Policy"]


def test_a_server_without_a_provider_has_no_sign_in_page_and_no_5xx(tmp_path):
    """No PARTAGE_OIDC_ISSUER: /connexion is a French 404 saying so (not an outage to retry)."""
    from partage.server.app import create_app

    services = Services.open(Settings(data_dir=tmp_path / "data"))
    try:
        answer = create_app(services=services).test_client().get("/connexion", headers={"Accept": "text/html"})
    finally:
        services.close()
    assert answer.status_code == 404
    assert "pas configurée" in answer.get_data(as_text=True) and "Traceback" not in answer.get_data(as_text=True)
