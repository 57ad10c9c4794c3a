"""MHD facade (ITI-65/67), fifth review round, as an outside judge reads IHE MHD 4.2.x and FHIR R4
REST: what the earlier rounds (test_mhd*.py, test_fhir_rest*.py, test_fhir_adversarial.py,
test_fhir_wire_errors.py, test_mhd_round4.py) did not try. In-process (the Flask app over a
temporary data directory, SQLite and PostgreSQL, `--insecure-dev`), as test_mhd_round4.py runs.
"""

from __future__ import annotations

import pytest

from partage.config import Settings
from partage.metadata.datatypes import CX
from partage.server.app import create_app
from partage.services import Services
from tests.integration.test_mhd import NIR, provide_bundle, text_doc
from tests.integration.test_mhd_round4 import matches, new_patient, outcome

JSON = {"Accept": "application/fhir+json"}
ACCESSION = CX.parse_reference_id("ACC5^^^&1.2.3.9&ISO^urn:ihe:iti:xds:2013:accession")


@pytest.fixture(scope="module")
def client(tmp_path_factory, module_database_url):
    """On the embedded SQLite default and on PostgreSQL (a database of its own)."""
    services = Services.open(Settings(data_dir=tmp_path_factory.mktemp("mhd5") / "data", insecure_dev=True,
                                      database_url=module_database_url))
    yield create_app(services=services).test_client()
    services.close()


def submitted(client, **overrides) -> tuple[str, str]:
    """(patient identifier value, uniqueId) of a new patient's one text document."""
    _, pid, value = new_patient(client)
    doc = text_doc(pid, "d1", **overrides)
    r = client.post("/fhir", json=provide_bundle(doc, b"round5", value), headers=JSON)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    return value, doc.unique_id


def found(client, value: str, query: str, method: str = "GET") -> list[str]:
    base = f"patient.identifier={NIR}|{value}&status=current"
    if method == "GET":
        r = client.get(f"/fhir/DocumentReference?{base}&{query}", headers=JSON)
    else:
        r = client.post("/fhir/DocumentReference/_search", data=f"{base}&{query}", headers={
            **JSON, "Content-Type": "application/x-www-form-urlencoded"})
    return [res["masterIdentifier"]["value"] for res in matches(r)]


# --- ITI-65: an entry is its interaction on request.url ----------------------------------------------
@pytest.mark.parametrize("index,url", [(0, "Patient"), (0, "Binary"), (2, "DocumentReference"),
                                       (1, "DocumentReference/abc"), (0, "http://example.org/fhir/Patient")])
def test_iti65_entry_whose_request_url_names_another_type_is_refused_and_writes_nothing(client, index, url):
    """FHIR R4 http.html#transaction: each entry is processed as the interaction its request.method
    and request.url say, and http.html#create: "The request body SHALL be a FHIR Resource of the named
    type". A DocumentReference entry POSTed to `Patient` (or a Binary to `DocumentReference`) is not a
    create of that DocumentReference; the Recipient wrote it anyway. It is a 400 naming the entry, and
    nothing is registered (the transaction fails whole)."""
    _, pid, value = new_patient(client)
    doc = text_doc(pid, "d1")
    bundle = provide_bundle(doc, b"wrong url", value)
    bundle["entry"][index]["request"]["url"] = url
    body = outcome(client.post("/fhir", json=bundle, headers=JSON), 400)
    text = " ".join(f"{i.get('diagnostics', '')} {i.get('expression', '')}" for i in body["issue"])
    assert f"Bundle.entry[{index}]" in text and url in text, body
    assert found(client, value, f"identifier=urn:oid:{doc.unique_id}") == []


def test_iti65_request_url_as_the_nist_kit_writes_it_is_still_read(client):
    """The NIST MHD kit's minimal fixtures send `request.url` = the entry's own `urn:uuid:` fullUrl, or
    an absolute `.../Binary/<id>`: neither names another type, and the kit expects them accepted."""
    _, pid, value = new_patient(client)
    doc = text_doc(pid, "d1")
    bundle = provide_bundle(doc, b"kit urls", value)
    bundle["entry"][0]["request"]["url"] = bundle["entry"][0]["fullUrl"]
    bundle["entry"][2]["request"]["url"] = "http://localhost:9556/svc/fhir/Binary/1e404af3-077f-4bee-b7a6-a9be97e1ce32"
    r = client.post("/fhir", json=bundle, headers=JSON)
    assert r.status_code == 200, r.get_data(as_text=True)[:500]
    assert found(client, value, f"identifier=urn:oid:{doc.unique_id}") == [f"urn:oid:{doc.unique_id}"]


# --- ITI-67: related is a reference --------------------------------------------------------------
def test_related_is_declared_as_the_reference_mhd_defines(client):
    """MHD 4.2 ITI-67 2:3.67.4.1.2.1: "related: This parameter, of type reference" (the MHD
    DocumentResponder CapabilityStatement: type reference, definition DocumentReference-related).
    The statement said token."""
    statement = client.get("/fhir/metadata", headers=JSON).get_json()
    doc_ref = next(r for r in statement["rest"][0]["resource"] if r["type"] == "DocumentReference")
    related = next(p for p in doc_ref["searchParam"] if p["name"] == "related")
    assert related["type"] == "reference", related
    assert related["definition"] == "http://hl7.org/fhir/SearchParameter/DocumentReference-related"


def test_related_identifier_searches_the_reference_id_list_and_a_token_value_is_no_reference(client):
    """FHIR R4 search.html#reference: a reference parameter searches the Identifier of a Reference
    with `:identifier` (the referenceIdList, held as context.related.identifier). A plain value is a
    reference ([type]/[id], [id], a URL): `system|value` is none (search.html#errors: a syntactically
    incorrect value SHOULD be an error), where it was read as a token; a well-formed reference names no
    referenceIdList entry (they are identifiers), so it matches nothing."""
    value, unique_id = submitted(client, reference_ids=[ACCESSION])
    assert found(client, value, "related:identifier=urn:oid:1.2.3.9|ACC5") == [f"urn:oid:{unique_id}"]
    assert found(client, value, "related:identifier=ACC5") == [f"urn:oid:{unique_id}"]
    assert found(client, value, "related:identifier=urn:oid:1.2.3.8|ACC5") == []
    r = client.get(f"/fhir/DocumentReference?patient.identifier={NIR}|{value}&status=current"
                   "&related=urn:oid:1.2.3.9|ACC5", headers=JSON)
    assert "related:identifier" in outcome(r, 400)["issue"][0]["diagnostics"]
    assert found(client, value, "related=DocumentReference/abc") == []
    assert found(client, value, "related=ACC5") == []


# --- POST _search: the form is the search, _format included -----------------------------------------
def test_post_search_format_in_the_form_body_sets_the_response_format(client):
    """FHIR R4 search.html (HTTP POST): `param1=value&...{&_format=[mime-type]}` in the form body,
    the same search as the GET. `_format=xml` in the body was written in the self link and the answer
    was JSON all the same."""
    value, unique_id = submitted(client)
    r = client.post("/fhir/DocumentReference/_search", headers={"Content-Type": "application/x-www-form-urlencoded"},
                    data=f"patient.identifier={NIR}|{value}&status=current&_format=xml")
    assert r.status_code == 200, r.get_data(as_text=True)[:300]
    assert r.mimetype == "application/fhir+xml", (r.mimetype, r.get_data(as_text=True)[:200])
    assert "<Bundle xmlns=\"http://hl7.org/fhir\">" in r.get_data(as_text=True) and unique_id in r.get_data(as_text=True)
    bad = client.post("/fhir/DocumentReference/_search", headers={"Content-Type": "application/x-www-form-urlencoded"},
                      data=f"patient.identifier={NIR}|{value}&status=current&_format=text/csv")
    assert bad.status_code == 406, bad.get_data(as_text=True)[:300]   # as the same _format in the URL


# --- empty parameters are ignored ----------------------------------------------------------------------
@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("empty", ["date=", "author.family=", "related=", "related:identifier=", "type=",
                                   "creation=", "period=", "_lastUpdated=", "author.given=", "category="])
def test_an_empty_parameter_is_ignored(client, method, empty):
    """FHIR R4 search.html#errors: "Note: Empty parameters are not an error - they are just ignored by
    the server." `date=`, `author.family=`, `related=` matched nothing (and `type=` any typed document):
    each is now left out, the search being the one without it, and the self link does not show it."""
    value, unique_id = submitted(client)
    assert found(client, value, empty, method) == [f"urn:oid:{unique_id}"]
    r = client.get(f"/fhir/DocumentReference?patient.identifier={NIR}|{value}&status=current&{empty}", headers=JSON)
    self_link = next(link["url"] for link in r.get_json()["link"] if link["relation"] == "self")
    assert empty.split("=")[0] + "=" not in self_link, self_link


def test_an_empty_required_parameter_is_a_missing_one(client):
    """`status=` is ignored as any empty parameter, so ITI-67's required status is missing (400
    XDSStoredQueryMissingParam), not a filter on no status."""
    value, _ = submitted(client)
    r = client.get(f"/fhir/DocumentReference?patient.identifier={NIR}|{value}&status=", headers=JSON)
    assert "status" in outcome(r, 400)["issue"][0]["diagnostics"]
