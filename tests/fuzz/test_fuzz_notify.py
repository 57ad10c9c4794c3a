"""The subscription doors under mutated requests: DSUB Subscribe / Unsubscribe (a SOAP fault
or answer, never a 500) and DSUBm Subscription (an OperationOutcome), in bounded time."""

from __future__ import annotations

import json
import time

from hypothesis import given
from hypothesis import strategies as st

from partage.ebxml import constants as C
from partage.ebxml.soap import build_envelope
from tests import factories as F
from tests.fuzz.conftest import FUZZ
from tests.fuzz.mutations import mutated
from tests.fuzz.test_fuzz_fhir import _assert_fhir_answer
from tests.fuzz.test_fuzz_xds import SOAP, _assert_soap_answer
from tests.notify_support import fhir_subscription, subscribe_body

PID = F.patient_id()
SUBSCRIBE = build_envelope(C.ACTION_SUBSCRIBE, subscribe_body(
    "http://127.0.0.1:9/notify", patient=PID.format(), termination="2030-01-01T00:00:00Z",
    slots={"$XDSDocumentEntryClassCode": ["('10^^1.2.250.1.213.1.1.4.1')"],
           "$XDSDocumentEntryAuthorInstitution": ["'Clinique'"]}))
SUBSCRIPTION = json.dumps(fhir_subscription(
    "http://127.0.0.1:9/hook", f"DocumentReference?patient.identifier={F.token(PID)}&type=http://loinc.org|1")).encode()


@FUZZ
@given(payload=mutated(SUBSCRIBE), path=st.sampled_from(["/xds/notification-broker", "/xds/subscription/x"]),
       action=st.sampled_from([C.ACTION_SUBSCRIBE, C.ACTION_UNSUBSCRIBE]))
def test_mutated_subscribe_envelopes(app_client, payload, path, action):
    started = time.monotonic()
    response = app_client.post(path, data=payload, headers={"Content-Type": SOAP.format(action)})
    _assert_soap_answer(response, started)


@FUZZ
@given(payload=mutated(SUBSCRIPTION), method=st.sampled_from(["POST", "PUT"]))
def test_mutated_fhir_subscriptions(app_client, payload, method):
    started = time.monotonic()
    path = "/fhir/Subscription" if method == "POST" else "/fhir/Subscription/abc"
    response = app_client.open(path, method=method, data=payload, headers={"Content-Type": "application/fhir+json"})
    _assert_fhir_answer(response, started)
