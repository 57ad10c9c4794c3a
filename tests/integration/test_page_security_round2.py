"""The professional's page tried as a web security tester would (OWASP ASVS 4.0 level 2), against
a real `partage serve` signed in through `partage dev-idp` (tests/page_support.py): the session
(idle expiry, renewal at sign-in, fixation), the sign-in's return address, CSRF on every form,
the security headers of every page, the answers of the server's own limits on the browser's
paths, a bearer token the page refuses; and, in process, what a CDA narrative may carry.

Defects (each test says DEFECT and the rule that decides it); the other tests are what held."""

from __future__ import annotations

import base64
import json
import re
import time
from urllib.parse import urljoin, urlsplit

import pytest
import requests
from lxml import html as lxml_html

from benchmarks.bench_clinical import NIR, feed_patient
from partage.access import audit
from partage.access.actor import INSECURE_DEV_ACTOR
from partage.ingest import IngestService
from partage.server.app import create_app
from tests import clinical_support as C
from tests.conftest import corpus_path
from tests.page_support import Browserless, DevIdp, csrf_of, dev_services, sign_in, signed_in_server

pytestmark = pytest.mark.corpus

TSH = "BIO-CR-BIO_2024.01_TSH_1.xml"
IDLE = 5          # seconds a session lasts unused here (PARTAGE_SESSION_IDLE; 30 min by default)
LIFETIME = 300    # its absolute lifetime here


def _record(services, data: bytes | None = None) -> str:
    pid = feed_patient(services)
    cda = C.for_patient(data if data is not None else corpus_path("cda", "valid", TSH).read_bytes(), NIR)
    IngestService(services, INSECURE_DEV_ACTOR).provide_and_register(C.submission(cda, "d0"))
    return C.public_id(services, pid)


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    with DevIdp(tmp_path_factory.mktemp("idp")) as provider:
        yield provider


@pytest.fixture(scope="module")
def server(tmp_path_factory, idp, authority):
    env = {**idp.server_args(), "PARTAGE_SESSION_LIFETIME": str(LIFETIME), "PARTAGE_SESSION_IDLE": str(IDLE)}
    with signed_in_server(tmp_path_factory.mktemp("pagesec") / "data", env, authority.ca_file, _record) as live:
        yield live


def _b64(obj: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(obj, ensure_ascii=False).encode()).rstrip(b"=").decode()


def _signed_in(server, user: str = "gp") -> tuple[Browserless, requests.Response]:
    client = Browserless()
    page = sign_in(client, server.base_url, server.dossier, user=user)
    assert page.status_code == 200, page.text[:300]
    return client, page


def _sign_in_again(client: Browserless, server, user: str) -> requests.Response:
    """The same browser signs in again (say, another professional at the same workstation)."""
    start = client.get(server.base_url + "/connexion?suite=" + server.dossier)
    chosen = client.post(start.headers["Location"], data={"user": user})
    return client.follow(chosen)


# --- the session -----------------------------------------------------------------------------------
def test_a_session_left_unused_ends_while_one_in_use_lives_on(server):
    """DEFECT: a page session lasted its whole absolute lifetime (8 h) whatever the inactivity: a
    workstation left unattended in a consulting room kept the patient's record open. NIST SP
    800-63B 7.2 (AAL2: reauthentication after 30 minutes of inactivity) and OWASP ASVS 4.0 3.3.2
    (level 2: 12 hours or 30 minutes of inactivity) ask for an idle expiry (PARTAGE_SESSION_IDLE)."""
    client, _page = _signed_in(server)
    for _ in range(IDLE + 2):             # used every second, longer than the idle time: still open
        time.sleep(1)
        assert client.get(server.base_url + server.dossier).status_code == 200
    time.sleep(IDLE + 1.5)                # then left alone
    idle = client.get(server.base_url + server.dossier)
    assert idle.status_code == 302 and urlsplit(idle.headers["Location"]).path == "/connexion", idle.status_code


def test_signing_in_again_ends_the_session_the_browser_held(server):
    """DEFECT: a browser that signed in again (another professional at the same workstation)
    got a new session, but the one it held stayed live in the registry: a copy of the first
    cookie still opened the record as the first professional. A new session at authentication
    invalidates the old one (OWASP ASVS 4.0 3.2.1, 3.3.1; OWASP Session Management: renew the
    id and invalidate the previous one)."""
    client, _page = _signed_in(server, "gp")
    first = dict(client.cookies)
    again = _sign_in_again(client, server, "doctor")
    assert again.status_code == 200 and "Dr Claire MARTIN" not in again.text
    copy = Browserless()
    copy.cookies = first
    assert copy.get(server.base_url + server.dossier).status_code == 302


def test_the_cookie_before_sign_in_is_not_the_session_after_it(server):
    """HELD (fixation): the cookie a browser carries into the sign-in (the provider's state) is
    replaced at sign-in, and that earlier cookie opens nothing."""
    client = Browserless()
    start = client.get(server.base_url + "/connexion?suite=" + server.dossier)
    before = dict(client.cookies)
    assert before.get("__Host-partage_session")
    page = client.follow(client.post(start.headers["Location"], data={"user": "gp"}))
    assert page.status_code == 200
    assert client.cookies["__Host-partage_session"] != before["__Host-partage_session"]
    planted = Browserless()
    planted.cookies = before
    assert planted.get(server.base_url + server.dossier).status_code == 302
    cookie = [h for h in client.set_cookie_headers if h.startswith("__Host-partage_session=")][-1]
    attrs = {p.strip().split("=")[0].lower(): p.strip() for p in cookie.split(";")[1:]}
    assert {"secure", "httponly"} <= set(attrs) and attrs["path"] == "Path=/" and "domain" not in attrs
    assert attrs["samesite"].lower() in ("samesite=lax", "samesite=strict")


def test_the_sign_out_answers_no_get_and_a_foreign_csrf_token_changes_nothing(server):
    """HELD: sign-out and the access mode are POSTs with the session's own CSRF token: a GET is
    405, another session's token is refused, and nothing changed."""
    client, page = _signed_in(server, "doctor")
    _other, other_page = _signed_in(server, "doctor")
    access = server.base_url + server.dossier + "/acces"
    assert client.get(server.base_url + "/connexion/deconnexion").status_code == 405
    assert client.get(access).status_code == 405
    assert client.post(access, data={"mode": "bris_de_glace", "reason": "x",
                                     "csrf": csrf_of(other_page.text)}).status_code == 403
    assert client.post(server.base_url + "/connexion/deconnexion",
                       data={"csrf": csrf_of(other_page.text)}).status_code == 403
    again = client.get(server.base_url + server.dossier)
    assert again.status_code == 200 and "Accès normal" in again.text
    assert csrf_of(page.text) != csrf_of(other_page.text)


@pytest.mark.parametrize("suite", ["//evil.example/x", "/\\evil.example", "/\\/evil.example", "\\\\evil.example",
                                   "https:evil.example", "/%2F%2Fevil.example", "\t//evil.example",
                                   "/\t/evil.example", "javascript:alert(1)", "https://evil.example@x/"])
def test_the_return_address_after_sign_in_never_leaves_the_site(server, suite):
    """HELD: wherever `suite` points, the browser lands on this site (the Location read as a
    browser's URL parser reads it: tabs and new lines dropped, a backslash is a slash)."""
    client = Browserless()
    start = client.get(server.base_url + "/connexion", params={"suite": suite})
    landing = client.get(client.post(start.headers["Location"], data={"user": "gp"}).headers["Location"])
    assert landing.status_code == 302
    location = re.sub(r"[\t\n\r]", "", landing.headers["Location"]).replace("\\", "/")
    target = urlsplit(urljoin(server.base_url + "/", location))
    assert target.netloc == urlsplit(server.base_url).netloc and target.scheme == "http", landing.headers["Location"]


# --- answers ---------------------------------------------------------------------------------------
def test_a_bearer_token_whose_alg_is_not_latin1_is_a_401_not_a_500(server):
    """DEFECT: a client's bearer token whose header says {"alg": "中"} made the page answer 500
    with an empty body: the refusal's reason (naming the alg) went into WWW-Authenticate's
    error_description, which a header cannot carry. RFC 6750 3: error_description holds only
    %x20-21 / %x23-5B / %x5D-7E; and the house rule: never a 500 for bad input."""
    allowed = re.compile(r'[\x20-\x21\x23-\x5b\x5d-\x7e]*')
    for alg in ("中", "é", "x\u2028y"):
        token = f"{_b64({'alg': alg, 'typ': 'JWT'})}.{_b64({'sub': 'x'})}.c2ln"
        answer = requests.get(server.base_url + server.dossier, headers={"Authorization": f"Bearer {token}"},
                              timeout=30)
        assert answer.status_code == 401, (alg, answer.status_code)
        assert "Identification requise" in answer.text
        challenge = answer.headers["WWW-Authenticate"]
        described = re.search(r'error_description="(.*)"', challenge)
        assert described and allowed.fullmatch(described.group(1)), challenge


@pytest.mark.parametrize("form", ["access-mode", "sign-out"])
def test_an_oversized_form_gets_the_french_error_page(server, form):
    """DEFECT: a form over the body limit (PARTAGE_OTHER_MAX_BYTES) posted to the page or its
    sign-out was answered by the server's own limit in English JSON ({"error": ...}) instead of
    the French error page every other failure of the browser's paths gets (docs/clinical-reading.md:
    "Errors are pages in French in the same style"; pages.TEXTS has the 413's words)."""
    client, page = _signed_in(server)
    url = server.base_url + ("/connexion/deconnexion" if form == "sign-out" else server.dossier + "/acces")
    answer = client.post(url, data={"csrf": csrf_of(page.text), "mode": "bris_de_glace", "reason": "x" * 200_000})
    assert answer.status_code == 413
    assert answer.headers["Content-Type"].startswith("text/html"), answer.headers["Content-Type"]
    assert 'lang="fr"' in answer.text and "Demande trop volumineuse" in answer.text
    assert "PARTAGE_" not in answer.text and "exceeds" not in answer.text
    assert answer.headers.get("X-Content-Type-Options") == "nosniff"
    assert "default-src 'none'" in answer.headers.get("Content-Security-Policy", "")


def test_every_page_with_patient_data_or_an_error_carries_the_security_headers(server):
    """HELD: the record, a document, a history, a refusal, a 404, a 405 and the sign-out page:
    no script allowed by the CSP (no 'unsafe-inline' or 'unsafe-eval' for scripts), framing
    only by the site itself, nosniff, no-store, no referrer."""
    client, page = _signed_in(server)
    tree = lxml_html.fromstring(page.text)
    doc = tree.xpath("//section[@id='timeline']//a[contains(@href, '/documents/')]/@href")[0]
    history = tree.xpath("//a[contains(@href, '/resultats?')]/@href")[0]
    answers = [page, client.get(server.base_url + doc), client.get(server.base_url + history),
               client.get(server.base_url + "/dossier/nobody"), client.post(server.base_url + server.dossier),
               client.get(server.base_url + "/dossier/nobody?q=<script>alert(1)</script>")]
    answers.append(sign_in(Browserless(), server.base_url, server.dossier, user="occupational"))
    for answer in answers:
        csp = {d.strip().split(" ")[0]: d.strip() for d in answer.headers["Content-Security-Policy"].split(";")}
        script = csp.get("script-src", csp["default-src"])
        assert "unsafe-inline" not in script and "unsafe-eval" not in script and "*" not in script
        assert csp["frame-ancestors"] in ("frame-ancestors 'self'", "frame-ancestors 'none'")
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert "no-store" in answer.headers["Cache-Control"]
        assert answer.headers["Referrer-Policy"] in ("no-referrer", "same-origin", "strict-origin")
        assert "<script" not in answer.text and "Traceback" not in answer.text
    content = client.get(server.base_url + doc + "/content")
    assert content.headers["X-Content-Type-Options"] == "nosniff" and content.headers["Cache-Control"] == "no-store"
    assert content.headers["Content-Disposition"] == "attachment" and content.headers["Content-Security-Policy"] == "sandbox"


# --- what a document may carry (in process) --------------------------------------------------------
def test_links_media_and_foreign_markup_of_a_narrative_never_reach_the_page(tmp_path):
    """HELD: linkHtml with javascript: and data: URLs, an element with event handlers and a style,
    SVG in the HL7 namespace: the document's page keeps their text only."""
    data = corpus_path("cda", "valid", TSH).read_bytes()
    payload = (b'<linkHtml href="javascript:alert(1)">lien1</linkHtml>'
               b'<linkHtml href="data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==">lien2</linkHtml>'
               b'<content styleCode="Bold xss" ID="x1">gras</content>')
    data = data.replace(b'<content ID="resultat-01">Thyr\xc3\xa9ostimuline (TSH)</content>',
                        b'<content ID="resultat-01">Thyr\xc3\xa9ostimuline (TSH)</content>' + payload, 1)
    with dev_services(tmp_path / "data") as services:
        rid = _record(services, data)
        client = create_app(services=services).test_client()
        page = client.get(f"/dossier/{rid}").get_data(as_text=True)
        doc = re.findall(r"/documents/([0-9a-f-]{36})", page)[0]
        body = client.get(f"/dossier/{rid}/documents/{doc}").get_data(as_text=True)
    assert "lien1" in body and "lien2" in body and "gras" in body
    tree = lxml_html.fromstring(body)
    assert not tree.xpath("//script | //svg | //iframe[not(@class='pdf')] | //object | //embed | //img | //base")
    assert not tree.xpath("//@*[starts-with(name(), 'on')]")
    hrefs = tree.xpath("//@href | //@src | //@action")
    assert not [h for h in hrefs if not h.startswith("/")], hrefs
    narrative = tree.xpath("//div[@class='cda']")[0]
    assert not narrative.xpath(".//@style | .//@id | .//@href")


def test_a_callback_started_by_someone_else_signs_no_one_in(server):
    """HELD (login CSRF): the provider's answer to another browser's sign-in (its code and state)
    opened in the victim's browser is refused: the state is not the victim's."""
    attacker = Browserless()
    start = attacker.get(server.base_url + "/connexion")
    callback = attacker.post(start.headers["Location"], data={"user": "occupational"}).headers["Location"]
    victim = Browserless()
    answer = victim.get(urljoin(server.base_url, callback))
    assert answer.status_code == 401 and "La connexion a échoué" in answer.text
    assert victim.get(server.base_url + server.dossier).status_code == 302
    signed, _page = _signed_in(server, "gp")          # and a signed-in victim stays who she was
    signed.get(urljoin(server.base_url, callback))
    mine = signed.get(server.base_url + server.dossier)
    assert mine.status_code in (200, 302) and "Accès refusé" not in mine.text


# --- in a real browser -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def driver():
    from tests.browser import headless_chrome

    browser = headless_chrome("--window-size=1280,900")
    try:
        yield browser
    finally:
        browser.quit()


def test_in_a_browser_a_cross_site_form_cannot_break_the_glass_and_a_backslash_return_stays_home(server, driver):
    """HELD: signed in with Chromium, a page of another site that posts the bris de glace form,
    even with the session's CSRF token, leaves the session in normal access (the cookie is
    SameSite=Lax: a cross-site POST does not carry it); a return address
    `/\\evil.example` (a backslash is a slash to a browser) lands on this site."""
    from selenium.webdriver.common.by import By

    from tests.browser import present

    dossier = server.base_url + server.dossier
    driver.get(server.base_url + "/connexion?suite=/%5Cevil.example/x")
    present(driver, By.CSS_SELECTOR, "button[value='doctor']").click()
    deadline = time.monotonic() + 30
    while "/authorize" in driver.current_url and time.monotonic() < deadline:
        time.sleep(0.2)
    assert urlsplit(driver.current_url).netloc == urlsplit(server.base_url).netloc, driver.current_url
    driver.get(dossier)
    present(driver, By.ID, "patient-name")
    token = driver.find_element(By.CSS_SELECTOR, "input[name='csrf']").get_attribute("value")
    form = (f'<form method="post" action="{dossier}/acces"><input name="mode" value="bris_de_glace">'   # even with
            f'<input name="reason" value="attaque"><input name="csrf" value="{token}"></form>'   # a leaked token
            '<script>document.forms[0].submit()</script>')
    since = audit.events(server.services, limit=1)[0]["pk"]
    driver.get("data:text/html;charset=utf-8," + requests.utils.quote(form))
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and not [r for r in audit.events(server.services, limit=20)
                                               if r["pk"] > since and r["action"] == "page-access-mode"]:
        time.sleep(0.2)
    posted = [r for r in audit.events(server.services, limit=20) if r["pk"] > since and r["action"] == "page-access-mode"]
    assert posted and posted[-1]["decision"] == "unauthenticated", posted   # it came, without the session
    driver.get(dossier)
    present(driver, By.ID, "patient-name")
    assert driver.find_element(By.ID, "access-mode").text == "Accès normal"


def test_the_pages_tell_a_browser_to_come_back_only_over_https(server):
    """DEFECT: the pages sent no Strict-Transport-Security, so a browser that once read the record
    over TLS would follow a downgraded http:// link (the session cookie is Secure, which a network
    attacker can still overwrite over http). OWASP ASVS 4.0 14.4.5 (level 1): HSTS on every
    response, max-age of at least six months (15724800 s), includeSubDomains; RFC 6797."""
    _client, page = _signed_in(server)
    for answer in (page, requests.get(server.base_url + "/dossier/nobody", timeout=30)):
        hsts = answer.headers.get("Strict-Transport-Security", "")
        age = re.search(r"max-age=(\d+)", hsts)
        assert age and int(age.group(1)) >= 15724800 and "includesubdomains" in hsts.lower(), hsts

