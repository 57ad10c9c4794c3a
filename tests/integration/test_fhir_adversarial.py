"""The FHIR door (MHD, FHIR REST, DSUBm) tried against the standards and the project's docs:
content negotiation (q-values, case), `_format` on every route, conditional HEAD, ITI-65
response locations, PUT's id, channel headers that cannot be sent, what `private` allows. In-process (the Flask app over a temporary SQLite
data directory, `--insecure-dev` as the MHD tests run), plus the notification engine in-process.
"""

from __future__ import annotations

import time
import uuid

import pytest

from partage.access.credentials import sample_actors
from partage.config import Settings
from partage.fhir.subscriptions import FhirRenderer, read_subscription
from partage.mhd.outcome import FhirError
from partage.notify.channels import Outgoing, Transport
from partage.notify.destinations import Destinations
from partage.notify.model import DOCUMENT, ERROR, FULL_RESOURCE, Subscription
from partage.notify.sender import Sender
from partage.notify.subscriptions import Subscriptions
from partage.registry import outbox
from partage.registry.access_state import Records
from partage.services import Services
from tests import factories as F
from tests.integration.test_mhd import NIR, provide_bundle, text_doc
from tests.notify_support import Endpoint, fhir_subscription

FHIR_JSON = {"Accept": "application/fhir+json"}


# --------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def app_services(tmp_path_factory):
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("review") / "data", insecure_dev=True))
    yield services
    services.close()


@pytest.fixture(scope="module")
def client(app_services):
    from partage.server.app import create_app
    return create_app(services=app_services).test_client()


@pytest.fixture(scope="module")
def document(client):
    """One document registered by ITI-65; returns (DocumentReference id, patient NIR value)."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    r = client.post("/fhir/Patient", json={"resourceType": "Patient", "identifier": [{"system": NIR, "value": pid.id}],
                                           "name": [{"family": "DUPONT", "given": ["Jeanne"]}]})
    assert r.status_code == 201, r.get_data(as_text=True)
    r = client.post("/fhir", json=provide_bundle(text_doc(pid, "d1"), b"hello", pid.id), headers=FHIR_JSON)
    assert r.status_code == 200, r.get_data(as_text=True)
    location = r.get_json()["entry"][0]["response"]["location"]
    return location.rsplit("/", 1)[1], pid.id


@pytest.fixture
def svc(tmp_path):
    services = Services.open(Settings(data_dir=tmp_path / "data", notify_timeout=2.0, notify_max_attempts=3))
    yield services
    services.close()


# --------------------------------------------------------------------------- content negotiation
def test_accept_quality_values_are_honoured(client, document):
    """RFC 9110 12.4.2 / 12.5.1: `q=0` means "not acceptable", and the highest q wins; FHIR R4
    http.html#mime-type defers to HTTP content negotiation. The door takes the first FHIR media
    type listed, whatever its q."""
    rid, _ = document
    r = client.get(f"/fhir/DocumentReference/{rid}",
                   headers={"Accept": "application/fhir+xml;q=0, application/fhir+json"})
    assert r.status_code == 200
    assert r.mimetype == "application/fhir+json", "XML sent although the client said q=0 for it"
    r = client.get(f"/fhir/DocumentReference/{rid}",
                   headers={"Accept": "application/fhir+xml;q=0.1, application/fhir+json;q=0.9"})
    assert r.mimetype == "application/fhir+json", "the lower-quality type was chosen"


def test_accept_media_types_are_case_insensitive(client, document):
    """RFC 9110 8.3.1: type and subtype are case-insensitive."""
    rid, _ = document
    r = client.get(f"/fhir/DocumentReference/{rid}", headers={"Accept": "Application/FHIR+XML"})
    assert r.status_code == 200
    assert r.mimetype == "application/fhir+xml"


@pytest.mark.parametrize("path", ["/fhir/Subscription", "/fhir/AuditEvent"])
def test_unknown_format_is_406_on_every_fhir_route(client, path):
    """docs/conformance.md ("Every error is an OperationOutcome ... an unknown `_format` (406)")
    and FHIR R4 http.html#mime-type: `/fhir/DocumentReference?_format=pdf` is a 406, but the
    other blueprints under /fhir (Subscription, AuditEvent, Consent) never check `_format` and
    answer 200 in JSON."""
    r = client.get(path, query_string={"_format": "pdf"})
    assert r.status_code == 406, (r.status_code, r.get_data(as_text=True)[:200])
    assert r.get_json()["resourceType"] == "OperationOutcome"


def test_conditional_head_answers_304(client, document):
    """RFC 9110 13.1.2: when If-None-Match matches, a GET or HEAD is answered 304. A GET is;
    a HEAD with the same validator gets a 200."""
    rid, _ = document
    etag = client.get(f"/fhir/DocumentReference/{rid}").headers["ETag"]
    assert client.get(f"/fhir/DocumentReference/{rid}", headers={"If-None-Match": etag}).status_code == 304
    assert client.head(f"/fhir/DocumentReference/{rid}", headers={"If-None-Match": etag}).status_code == 304


def test_answers_without_content_say_no_content_type(client, document):
    """A 304 and a DELETE's 204 carry no content: no Content-Type either (Flask's default said
    text/html, on a FHIR server that never answers HTML)."""
    rid, pid = document
    etag = client.get(f"/fhir/DocumentReference/{rid}").headers["ETag"]
    r = client.get(f"/fhir/DocumentReference/{rid}", headers={"If-None-Match": etag})
    assert r.status_code == 304 and "Content-Type" not in r.headers, r.headers
    assert r.headers["ETag"] == etag
    r = client.post("/fhir", json=provide_bundle(text_doc(F.patient_id(int(pid)), "d-gone"), b"bye", pid),
                    headers=FHIR_JSON)
    assert r.status_code == 200, r.get_data(as_text=True)
    gone = r.get_json()["entry"][0]["response"]["location"].rsplit("/", 1)[1]
    r = client.delete(f"/fhir/DocumentReference/{gone}")
    assert r.status_code == 204 and "Content-Type" not in r.headers, r.headers


# --------------------------------------------------------------------------- DSUBm channel headers
CRITERIA = "DocumentReference?patient.identifier=urn:oid:1.2.250.1.213.1.4.10|279035121518001"


@pytest.mark.parametrize("header", ["X-Recipient-Key: cl\u00e9\u20ac", "X-Recipient-Key: a\x00b",
                                    "X-Recipient-Key: a\x7fb"])
def test_channel_header_must_be_a_sendable_http_field(app_services, header):
    """RFC 9110 5.5: a field value is visible ASCII (plus obs-text octets), SP and HTAB; no
    NUL or other control. `Subscription.channel.header` is checked only for CR/LF, so a
    header that cannot be written on the wire (a non-Latin-1 character) or is not a valid
    field (NUL, DEL) is accepted at subscription time."""
    with pytest.raises(FhirError) as caught:
        read_subscription(app_services, fhir_subscription("http://127.0.0.1:9/x", CRITERIA, headers=[header]))
    assert caught.value.status == 400


def test_transport_reports_an_unsendable_header_instead_of_raising():
    """`Transport.post` promises an Outcome; a header http.client cannot encode raises
    UnicodeEncodeError through it instead (not a requests exception)."""
    with Endpoint() as endpoint:
        transport = Transport(Destinations.parse("loopback"), 5)
        try:
            outcome = transport.post(endpoint.url, Outgoing(b"{}", "application/fhir+json", {"X-Key": "\u20ac"}))
        finally:
            transport.close()
    assert not outcome.ok and outcome.permanent


def test_undeliverable_handshake_is_given_up_not_retried_forever(svc):
    """docs/notifications.md: a handshake "that cannot be sent" puts the subscription in
    `error` at once, and a notification is tried at most PARTAGE_NOTIFY_MAX_ATTEMPTS times.
    A FHIR subscription whose channel header cannot be encoded stays `requested` forever: the
    handshake raises, the row is left leased, re-claimed after every lease without limit
    (attempts grow past the maximum), and every event row of the subscription waits for it."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    with svc.registry.write() as conn:
        svc.registry.upsert_patient(conn, [pid])
    gp = sample_actors(pid)["gp"]
    Records(svc.registry).open(pid, medecin_traitant=gp.id)
    with Endpoint() as endpoint:
        subs = Subscriptions(svc, gp)
        wanted = Subscription(door="fhir", topic=DOCUMENT, payload=FULL_RESOURCE, endpoint=endpoint.url, actor=gp,
                              ends_at=subs.end_time(None), patient_id=pid, base_url="http://partage.test",
                              mime_type="application/fhir+json",
                              resource={"criteria": "https://profiles.ihe.net/ITI/DSUBm/SubscriptionTopic/x",
                                        "channel": {"header": ["X-Recipient-Key: cl\u00e9\u20ac"]}})
        sub = subs.create(wanted, handshake=True)
        sender = Sender(svc, {"fhir": FhirRenderer()})
        deliveries = sender.deliveries
        now = time.time()
        for n in range(svc.settings.notify_max_attempts + 3):   # each time the lease has run out
            token, claimed = outbox.claim(svc.registry, outbox.EVENTS, lease_s=60, now=now + n * 120)
            if not claimed:
                break
            for row in claimed:
                sender._one(deliveries.run, row, token)   # what the sender thread does
        rows = outbox.rows(svc.registry, outbox.EVENTS)
        status = Subscriptions(svc, gp).get(sub.id).status
    assert [(r.state, r.attempts) for r in rows if r.state == "pending"] == [], \
        f"handshake still pending: {[(r.state, r.attempts) for r in rows]}, subscription {status}"
    assert status == ERROR


# --------------------------------------------------------------------------- callback destinations
@pytest.mark.parametrize("address", ["198.18.0.1", "192.0.2.10", "0.1.2.3", "2001:db8::1", "2001::a9fe:a9fe"])
def test_private_means_the_documented_private_ranges(address):
    """docs/notifications.md: `private` is "RFC 1918, 100.64.0.0/10, fc00::/7", and reserved
    addresses "are never destinations unless listed as a network". The rule uses Python's
    `is_private`, which also holds benchmarking (198.18.0.0/15), documentation (192.0.2.0/24,
    2001:db8::/32), "this network" (0.0.0.0/8) and IETF protocol assignments (2001::/23,
    Teredo 2001::/32 among them): `PARTAGE_NOTIFY_DESTINATIONS=private` lets callbacks go there."""
    import ipaddress
    assert not Destinations.parse("private").allows(ipaddress.ip_address(address))


# --------------------------------------------------------------------------- ITI-65 response
def test_every_transaction_response_entry_has_a_location(client):
    """IHE MHD ProvideDocumentBundleResponse (IHE.MHD.ProvideDocumentBundleResponse):
    `entry.response.location 1..` - "entry response location must be indicated" for every entry,
    in the order of the request. The door accepts a Patient entry in the Provide Bundle (its
    Patient slice) and answers it `200 OK` without location."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    patient = {"resourceType": "Patient", "identifier": [{"system": NIR, "value": pid.id}],
               "name": [{"family": "DUPONT", "given": ["Jeanne"]}]}
    assert client.post("/fhir/Patient", json=patient).status_code == 201
    bundle = provide_bundle(text_doc(pid, "d1"), b"hello", pid.id)
    bundle["entry"].append({"fullUrl": "urn:uuid:00000000-0000-4000-8000-0000000000c1", "resource": patient,
                            "request": {"method": "POST", "url": "Patient"}})
    r = client.post("/fhir", json=bundle, headers=FHIR_JSON)
    assert r.status_code == 200, r.get_data(as_text=True)
    entries = r.get_json()["entry"]
    assert len(entries) == len(bundle["entry"])
    missing = [n for n, e in enumerate(entries) if not e["response"].get("location")]
    assert missing == [], f"entries without response.location: {missing}: {entries[missing[0]]}"
    base = "http://localhost/fhir/"
    for entry in entries:   # an etag given is the one a read of that location answers
        location, etag = entry["response"]["location"], entry["response"].get("etag")
        if etag and location.startswith(base):
            assert client.get("/fhir/" + location[len(base):]).headers.get("ETag") == etag, entry


# --------------------------------------------------------------------------- update (PUT)
def test_update_without_id_in_the_body_is_400(client):
    """FHIR R4 http.html#update: "If no id element is provided, or the id disagrees with the id
    in the URL, the server SHALL respond with an HTTP 400 Bad Request". The door refuses a
    differing id but accepts a body without one (Patient; Subscription likewise)."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    patient = {"resourceType": "Patient", "identifier": [{"system": NIR, "value": pid.id}],
               "name": [{"family": "DUPONT", "given": ["Jeanne"]}]}
    rid = client.post("/fhir/Patient", json=patient).get_json()["id"]
    assert client.put(f"/fhir/Patient/{rid}", json={**patient, "id": "other"}).status_code == 400
    r = client.put(f"/fhir/Patient/{rid}", json={**patient, "name": [{"family": "MARTIN"}]})
    assert r.status_code == 400, (r.status_code, r.get_data(as_text=True)[:200])


# --------------------------------------------------------------------------- control characters
@pytest.mark.parametrize("path", ["/fhir/Patient/abc\x00", "/fhir/DocumentReference/abc\x00", "/fhir/Binary/abc\x00",
                                  "/fhir/List/x\x00y"])
def test_a_nul_in_the_address_is_a_400(client, path):
    """No FHIR id holds a NUL (and PostgreSQL's text cannot: reads answered 500 there)."""
    r = client.get(path)
    assert r.status_code == 400 and r.get_json()["resourceType"] == "OperationOutcome"


def test_fhir_strings_with_control_characters_are_refused(client):
    """FHIR R4 datatypes.html#string: no character below U+0020 but tab, CR, LF. A Patient
    named with a NUL was a 500 on PostgreSQL; a DocumentReference titled with one was filed,
    and its XDS metadata could no longer be written as XML."""
    pid = F.patient_id(uuid.uuid4().int % 10**9)
    patient = {"resourceType": "Patient", "identifier": [{"system": NIR, "value": pid.id}],
               "name": [{"family": "DU\u0000PONT", "given": ["Jeanne"]}]}
    r = client.post("/fhir/Patient", json=patient)
    assert r.status_code == 400 and "control character" in r.get_data(as_text=True)
    patient["name"][0]["family"] = "DUPONT\tDIT\nDURAND"   # tab and line feed are FHIR text
    assert client.post("/fhir/Patient", json=patient).status_code == 201
    doc = text_doc(pid, "ctl")
    doc.title = "titre\u0007"
    r = client.post("/fhir", json=provide_bundle(doc, b"hello", pid.id), headers=FHIR_JSON)
    assert r.status_code == 400
    doc.title = "titre \\u0007 sans contrôle"   # the text "\u0007", not the character
    assert client.post("/fhir", json=provide_bundle(doc, b"hello", pid.id), headers=FHIR_JSON).status_code == 200
