"""The notification model: filters (JSON form, the matching the query flow does not do),
the subscriber as stored, endpoints, backoff, the patient's e-mail address."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from partage.access.actor import BRIS_DE_GLACE, Actor
from partage.access.credentials import sample_actors
from partage.metadata.datatypes import XCN, XON
from partage.metadata.model import Author, Code
from partage.notify.deliver import BACKOFF_MAX_S, backoff
from partage.notify.model import Filter, actor_json, actor_of
from partage.notify.subscriptions import endpoint_problem
from partage.registry.patients import PatientRecord
from tests import factories as F
from tests.strategies import cxs, oids, text

codes = st.builds(Code, text, oids | text)
groups = st.lists(st.lists(codes, min_size=1, max_size=3), max_size=3)
filters = st.builds(
    Filter, codes=st.dictionaries(st.sampled_from(["class", "type", "event", "conf", "format"]), groups, max_size=3),
    author_persons=st.lists(text, max_size=2), author_institutions=st.lists(text, max_size=2),
    author_names=st.lists(st.tuples(st.sampled_from(["given", "family"]), st.lists(text, max_size=2)), max_size=2),
    source_ids=st.lists(oids, max_size=2), content_types=groups)


@given(filters)
def test_filter_json_round_trip(chosen):
    again = Filter.from_json(chosen.to_json())
    assert again == chosen
    assert json.loads(again.to_json()) == json.loads(chosen.to_json())


def _doc(institutions: list[XON], person: str = "801^MARTIN^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO"):
    doc = F.document(F.patient_id(), "d")
    doc.authors = [Author(person=XCN.parse(person), institutions=institutions)]
    return doc


@pytest.mark.parametrize(("wanted", "held", "keeps"), [
    ([], [], True),
    (["Clinique des Lilas"], ["clinique des lilas"], True),                         # by name, any case
    (["Clinique des Lilas"], ["Hopital X^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^111"], False),
    (["^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^111"], ["Hopital X^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^111"], True),
    (["^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^222"], ["Hopital X^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^111"], False),
    (["^^^^^&9.9.9&ISO^IDNST^^^111"], ["Hopital X^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^111"], False),  # other authority
    (["^^^^^^^^^111"], ["Hopital X^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^111"], True),     # id without authority
    (["A", "Hopital X"], ["Hopital X"], True),                                           # OR
])
def test_author_institution_filter(wanted, held, keeps):
    doc = _doc([XON.parse(h, strict=False) for h in held])
    assert Filter(author_institutions=wanted).keeps(doc) is keeps


@pytest.mark.parametrize(("names", "keeps"), [
    ([("family", ["mar"])], True), ([("family", ["clai"])], False), ([("given", ["CLAI"])], True),
    ([("family", ["x", "mart"])], True), ([("family", ["mart"]), ("given", ["x"])], False),
])
def test_author_name_filter(names, keeps):
    assert Filter(author_names=names).keeps(_doc([])) is keeps


def test_subscriber_is_stored_without_its_credential():
    pid = F.patient_id()
    actor = dataclasses.replace(sample_actors(pid)["patient"], credential_id="assertion-1", credential_expires=99,
                                address="10.0.0.1", reason="x")
    stored = actor_of(actor_json(actor))
    assert (stored.id, stored.kind, stored.patient_id) == (actor.id, actor.kind, actor.patient_id)
    assert (stored.credential_id, stored.credential_expires, stored.address, stored.reason) == ("", 0, "", "")
    assert stored.purpose == "normal"
    assert "assertion-1" not in actor_json(actor)
    emergency = dataclasses.replace(actor, purpose=BRIS_DE_GLACE)
    assert actor_of(actor_json(emergency)).purpose == "normal"   # a standing access is never an emergency


@given(cxs)
def test_subscriber_patient_round_trips(cx):
    actor = Actor(id="p", kind="patient", patient_id=cx)
    back = actor_of(actor_json(actor)).patient_id
    assert back is None or back.format() == cx.format()


@pytest.mark.parametrize(("url", "usable"), [
    ("http://127.0.0.1:8080/notify", True), ("https://recipient.example/fhir/hook?x=1", True),
    ("", False), ("file:///etc/passwd", False), ("gopher://x/", False), ("http:///nohost", False),
    ("http://user:secret@host/x", False), ("http://host/a b", False), ("http://host/x\r\nX: y", False),
    ("https://h/" + "a" * 3000, False), ("/relative/path", False),
])
def test_endpoints(url, usable):
    assert (endpoint_problem(url) == "") is usable


def test_backoff_grows_then_stays_capped():
    firsts = [backoff(n) for n in range(1, 6)]
    assert 0.8 <= firsts[0] <= 1.2 and 12.8 <= firsts[4] <= 19.2
    assert all(0.8 * BACKOFF_MAX_S <= backoff(n) <= 1.2 * BACKOFF_MAX_S for n in range(12, 40))


@pytest.mark.parametrize(("demographics", "email"), [
    ({}, ""),
    ({"telecom": ["^NET^Internet^jean.dupont@example.fr"]}, "jean.dupont@example.fr"),
    ({"telecom": ["^PRN^PH^^^^0102030405", "^NET^Internet^j@example.fr"]}, "j@example.fr"),
    ({"telecom": ["^NET^Internet^not-an-address"]}, ""),
    ({"telecom": ["^NET^Internet^a@b.fr\\X0D\\Bcc: x@y.fr"]}, ""),
    ({"telecom": ["^NET^Internet^a@b.fr, other@c.fr"]}, ""),                       # one address only
    ({"fhir": {"telecom": [{"system": "phone", "value": "0102"}, {"system": "email", "value": "f@h.org"}]},
      "telecom": ["^NET^Internet^pid13@h.org"]}, "f@h.org"),                      # FHIR first
    ({"fhir": {"telecom": [{"system": "email", "value": "bad\naddress@h.org"}]}}, ""),
])
def test_patient_email(demographics, email):
    assert PatientRecord(1, "x", [], demographics).email == email
