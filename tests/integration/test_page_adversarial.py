"""The professional's page (`/dossier/...`) and its sign-in tried as an attacker would: odd
values in stored documents (huge or infinite numbers, the end of year 9999) never break a
record's page, a NUL in the address is a 400 and audited, a refused switch to bris de glace
leaves the session as it was, a sign-in needs a verified ID token of the same subject as the
userinfo; and what held (escaping everywhere, masked documents out of search and history).

In process (Flask test client, `--insecure-dev` as tests/integration/test_page_reads.py) for what
stored documents and odd request input do to the page; against a real `partage serve` signed in
through `partage dev-idp` (tests/page_support.py, as test_page_login.py) for the session and the
access mode."""

from __future__ import annotations

import re

import pytest
from lxml import html as lxml_html

from benchmarks.bench_clinical import NIR, feed_patient
from partage.access import audit
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.config import Settings
from partage.ingest import IngestService
from partage.metadata.datatypes import HD, XCN
from partage.metadata.model import Author
from partage.server.app import create_app
from partage.services import Services
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.integration.test_page_login import idp, server  # noqa: F401 — the signed-in server, reused
from tests.page_support import (
    CLIENT_SECRET,
    Browserless,
    csrf_of,
    dev_services,
    sign_in,
    signed_in_server,
)

pytestmark = pytest.mark.corpus

TSH = "BIO-CR-BIO_2024.01_TSH_1.xml"


def _record(services: Services, data: bytes | None = None, **overrides) -> str:
    """The sample patient with one lab report (TSH), possibly altered; her page's id."""
    pid = feed_patient(services)
    data = data if data is not None else corpus_path("cda", "valid", TSH).read_bytes()
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(
        C.submission(C.for_patient(data, NIR, author=_author_id(overrides)), "d0", **overrides))
    return C.public_id(services, pid)


def _author_id(overrides: dict) -> str | None:
    """The id of the authorPerson an override names (the CDA's author is made that person)."""
    authors = overrides.get("authors") or []
    return authors[0].person.id_number if authors and authors[0].person is not None else None


@pytest.fixture(name="dev_services")
def _dev_services(database_url, tmp_path):
    with dev_services(tmp_path / "data", database_url) as services:
        yield services


@pytest.fixture
def sqlite_services(tmp_path):
    with dev_services(tmp_path / "data") as services:
        yield services


# --- stored data that breaks a page ------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e30", "123456789012345678901234567890", "INF"])
def test_a_lab_value_out_of_the_ordinary_does_not_break_the_page_or_its_history(sqlite_services, value):
    """DEFECT: a lab result whose value is a valid xs:double beyond ~1e24 (PQ value="1e30", a
    30-digit number) makes `formatting.number` raise decimal.InvalidOperation: the patient's
    whole page answers 500 to every reader. "INF" (also a valid xs:double) makes the history
    plot raise OverflowError: the analyte's history answers 400 "Demande incorrecte"."""
    data = corpus_path("cda", "valid", TSH).read_bytes().replace(b'value="1.950"', f'value="{value}"'.encode())
    rid = _record(sqlite_services, data)
    client = create_app(services=sqlite_services).test_client()
    page = client.get(f"/dossier/{rid}")
    assert page.status_code == 200, page.status_code
    history = client.get(f"/dossier/{rid}/resultats?code=3016-3&system=2.16.840.1.113883.6.1")
    assert history.status_code == 200, history.status_code
    assert "Erreur du serveur" not in history.get_data(as_text=True)


def test_a_document_dated_at_the_end_of_year_9999_does_not_break_the_page(sqlite_services):
    """DEFECT: a creationTime of 99991231235959 (a valid DTM; the CDA effectiveTime likewise) is
    turned into Paris time by `formatting.paris`, whose `astimezone` overflows past year 9999:
    OverflowError, which the page reports as 400 "Demande incorrecte" to every reader of the
    record (the timeline, the document page)."""
    data = corpus_path("cda", "valid", TSH).read_bytes().replace(b"20210401171000+0100", b"99991231235959+0000")
    rid = _record(sqlite_services, data)
    client = create_app(services=sqlite_services).test_client()
    page = client.get(f"/dossier/{rid}")
    assert page.status_code == 200, page.status_code


@pytest.mark.postgres
def test_a_nul_character_in_the_page_address_is_an_unknown_page_not_a_server_failure(tmp_path):
    """DEFECT (PostgreSQL): a NUL (%00) in the page's path or in `resultats?code=` reaches the
    database: 500 for the results history, and for a path a 503 'retry later' outage whose audit
    record could not be written (the request is left out of the trail). The FHIR door answers
    400 for the same input (partage/fhir/search.py); the page should answer as for an unknown
    page (404) and keep its audit record."""
    from tests.conftest import require_postgres
    from tests.support import postgres_database

    require_postgres()
    with postgres_database() as url:
        services = Services.open(Settings(data_dir=tmp_path / "data", database_url=url, insecure_dev=True,
                                          text_indexer=False))
        try:
            rid = _record(services)
            client = create_app(services=services).test_client()
            before = audit.events(services, limit=1)[0]["pk"]
            answers = {path: client.get(path).status_code for path in (
                f"/dossier/{rid}/resultats?code=%00", f"/dossier/{rid}/resultats?code=3016-3&system=%00",
                "/dossier/%00", f"/dossier/{rid}%00")}
            recorded = [r for r in audit.events(services, limit=50) if r["pk"] > before]
        finally:
            services.close()
    assert all(status in (400, 404) for status in answers.values()), answers
    assert len(recorded) == len(answers), f"{len(recorded)} audit records for {len(answers)} requests"


def test_document_metadata_and_narrative_are_escaped_everywhere(sqlite_services):
    """HELD: a title, an author's name, a result's name and a CDA narrative carrying markup are
    shown as text on the page, the history and the document (no raw tag, no attribute injection)."""
    payload = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    data = corpus_path("cda", "valid", TSH).read_bytes()
    escaped = payload.replace("<", "&lt;").replace('"', "&quot;").encode()
    data = data.replace(b'<content ID="resultat-01">', b'<content ID="resultat-01">' + escaped, 1)
    data = data.replace(b'displayName="Thyr\xc3\xa9ostimuline', b'displayName="' + escaped + b"Thyr\xc3\xa9ostimuline", 1)
    rid = _record(sqlite_services, data, title=payload,
                  authors=[Author(person=XCN("810001234567", payload, "Eve", assigning_authority=HD.iso(
                      "1.2.250.1.71.4.2.1")))])
    client = create_app(services=sqlite_services).test_client()
    page = client.get(f"/dossier/{rid}?q=thyroide").get_data(as_text=True)
    doc = re.findall(r"/documents/([0-9a-f-]{36})", page)[0]
    history = client.get(f"/dossier/{rid}/resultats?code=3016-3&system=2.16.840.1.113883.6.1").get_data(as_text=True)
    document = client.get(f"/dossier/{rid}/documents/{doc}").get_data(as_text=True)
    for body in (page, history, document):
        assert "<script>" not in body and "<img" not in body, body[:200]
        tree = lxml_html.fromstring(body)
        assert not tree.xpath("//script | //img | //*[@onerror]")
    assert "&lt;script&gt;" in page


# --- the signed-in page (partage serve + partage dev-idp) -------------------------------------------
def test_a_refused_switch_to_bris_de_glace_does_not_lock_the_professional_out_of_the_record(server):  # noqa: F811
    """DEFECT: a pharmacist (bris de glace is not open to pharmacists) who may read the record
    normally asks for bris de glace on the page: the switch is refused (403), yet the session
    keeps the emergency mode for this patient, so every later request is judged as bris de glace
    and refused; the refusal page offers no way back ("Quitter" is on the record page only)."""
    client = Browserless()
    page = sign_in(client, server.base_url, server.dossier, user="pharmacist")
    assert page.status_code == 200, page.text[:300]
    switch = client.post(server.base_url + server.dossier + "/acces",
                         data={"mode": "bris_de_glace", "reason": "urgence", "csrf": csrf_of(page.text)})
    assert switch.status_code == 403
    again = client.get(server.base_url + server.dossier)
    assert again.status_code == 200, "a refused switch left the session in bris de glace: record refused"


def test_a_masked_document_gives_no_search_hit_no_history_and_no_page(tmp_path, authority):
    """HELD: for a professional who may not see a MASQUE_PS lab report, the page's keyword search
    (`?q=`) finds nothing in it, its analytes have no history and the document itself is the 404
    of an unknown one; its author (and the médecin traitant) still get all three."""
    import dataclasses

    from partage.access.credentials import sample_actors

    services = Services.open(Settings(data_dir=tmp_path / "data", trust=str(authority.directory / "ca.pem"),
                                      text_indexer=False))
    try:
        pid = feed_patient(services)
        actors = sample_actors(pid)
        doctor, other = actors["doctor"], dataclasses.replace(actors["emergency"], purpose="normal", reason="")
        author = [Author(person=XCN.parse(f"{doctor.id}^CARDIOLOGUE^Paul^^^^^^&1.2.250.1.71.4.2.1&ISO"))]
        cda = C.for_patient(corpus_path("cda", "valid", TSH).read_bytes(), NIR, author=doctor.id)
        IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(
            C.submission(cda, "d0", authors=author, extra_confidentiality=[C.MASQUE_PS]))
        rid = C.public_id(services, pid)
        client = create_app(services=services).test_client()

        def get(actor, path):
            return client.get(path, headers={"Authorization": f"Bearer {authority.jwt(actor)}"})

        seen = get(doctor, f"/dossier/{rid}?q=thyr%C3%A9ostimuline").get_data(as_text=True)
        doc = re.findall(r"/documents/([0-9a-f-]{36})", seen)[0]
        assert 'class="hit"' in seen
        history = f"/dossier/{rid}/resultats?code=3016-3&system=2.16.840.1.113883.6.1"
        assert get(doctor, history).status_code == 200
        hidden = get(other, f"/dossier/{rid}?q=thyr%C3%A9ostimuline")
        assert hidden.status_code == 200 and 'class="hit"' not in hidden.get_data(as_text=True)
        assert "Thyréostimuline" not in hidden.get_data(as_text=True)
        assert get(other, history).status_code == 404
        assert get(other, f"/dossier/{rid}/documents/{doc}").status_code == 404
        assert get(other, f"/dossier/{rid}/documents/{doc}/content").status_code == 404
    finally:
        services.close()


# --- the OpenID provider's answers (partage dev-idp's provider, its answers altered in flight) -----
@pytest.fixture(scope="module")
def altered_idp():
    """`partage.web.devidp.create_provider` on a thread, whose token and userinfo answers a test
    may alter (`altered_idp.change`): what a faulty or hostile provider, or a man in the middle
    of the back channel, would answer."""
    import json
    import threading

    from flask import request as flask_request
    from werkzeug.serving import make_server

    from partage.access.credentials import sample_actors
    from partage.web.devidp import create_provider, psc_userinfo
    from tests.support import free_port

    port = free_port()
    issuer = f"http://127.0.0.1:{port}"
    app = create_provider(issuer, client_secret=CLIENT_SECRET)
    change: dict[str, str] = {}

    @app.after_request
    def _alter(response):
        if change.get("mode") == "no-id-token" and flask_request.path == "/token" and response.status_code == 200:
            token = json.loads(response.get_data())
            token.pop("id_token", None)
            response.set_data(json.dumps(token))
        if change.get("mode") == "userinfo-of-another" and flask_request.path == "/userinfo":
            response.set_data(json.dumps(psc_userinfo(sample_actors()["doctor"])))
        return response

    httpd = make_server("127.0.0.1", port, app, threaded=True)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    app.issuer, app.change = issuer, change
    try:
        yield app
    finally:
        httpd.shutdown()


@pytest.fixture(scope="module")
def altered_server(tmp_path_factory, altered_idp, authority):
    env = {"PARTAGE_OIDC_ISSUER": altered_idp.issuer, "PARTAGE_OIDC_CLIENT_ID": "partage",
           "PARTAGE_OIDC_CLIENT_SECRET": CLIENT_SECRET}
    with signed_in_server(tmp_path_factory.mktemp("page-review-idp") / "data", env, authority.ca_file,
                          _record) as live:
        yield live


@pytest.mark.parametrize("mode", ["no-id-token", "userinfo-of-another"])
def test_a_sign_in_without_a_verified_id_token_of_this_professional_is_refused(altered_server, altered_idp, mode):
    """DEFECT (OIDC Core 3.1.3.3 and 5.3.2): `login.callback` lets Authlib verify the ID token
    only when the token answer has one, then reads the identity from the userinfo answer, which
    overrides the ID token's claims. A token answer without an ID token signs the professional in
    (no signature, issuer, audience or nonce checked: docs/clinical-reading.md says they are), and a
    userinfo answer naming another professional than the ID token's `sub` signs in that other one."""
    altered_idp.change["mode"] = mode
    try:
        client = Browserless()
        landing = sign_in(client, altered_server.base_url, altered_server.dossier, user="gp")
    finally:
        altered_idp.change.clear()
    assert landing.status_code == 401 and "La connexion a échoué" in landing.text, \
        (landing.status_code, re.findall(r"Dr [A-Z][a-z]+ [A-Z]+", landing.text)[:2])
