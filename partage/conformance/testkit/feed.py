"""The patient identity feed the test kit needs: an ITI-8 ADT^A01 per new patient id.

A registry only accepts submissions for patients it knows, so each patient id the
runner makes up is first sent as an A01 over MLLP (as the toolkit's A01Sender does),
and the ACK must accept it (MSA-1 AA or CA).
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from ...hl7.acks import ack_status
from ...hl7.mllp import MllpClient, MllpError
from ...hl7.outcome import ACCEPTING

_control_ids = itertools.count(1)


class FeedError(RuntimeError):
    """The listener refused or did not acknowledge the feed."""


def build_a01(patient_id: str, *, sending_application: str = "PARTAGE-TESTKIT",
              sending_facility: str = "NIST-KIT", receiving_application: str = "XDS-REGISTRY",
              receiving_facility: str = "XDS", control_id: str | None = None) -> str:
    """An HL7 v2.3.1 ADT^A01 registering `patient_id` (a CX: id^^^&oid&ISO) in PID-3."""
    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    control = control_id or f"TK{now}{next(_control_ids):04d}"
    segments = [
        f"MSH|^~\\&|{sending_application}|{sending_facility}|{receiving_application}|"
        f"{receiving_facility}|{now}||ADT^A01|{control}|P|2.3.1",
        f"EVN|A01|{now}",
        f"PID|||{patient_id}||TESTKIT^PATIENT^^^^^L||19700101|U",
        "PV1||O",
    ]
    return "\r".join(segments) + "\r"


class Feeder:
    """Sends A01s to one MLLP listener, on one connection."""

    def __init__(self, host: str, port: int, timeout: float = 10.0) -> None:
        self.address = f"{host}:{port}"
        self.client = MllpClient(host, port, timeout=timeout)

    def feed(self, patient_id: str) -> str:
        """Register `patient_id`; returns the ACK, raises FeedError unless it says AA/CA."""
        try:
            ack = self.client.send(build_a01(patient_id))
        except MllpError as exc:
            raise FeedError(f"patient identity feed to {self.address} failed: {exc}") from exc
        code, text = ack_status(ack)
        if code not in ACCEPTING:
            raise FeedError(f"patient identity feed for {patient_id} not accepted by {self.address}: "
                            f"MSA-1={code or 'missing'} {text}".rstrip())
        return ack

    def close(self) -> None:
        self.client.close()
