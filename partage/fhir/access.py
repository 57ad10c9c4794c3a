"""Who may see and write FHIR Patient resources (identity and demographics), as the one
gate decides (`partage.access.gate.identity_visible`)."""

from __future__ import annotations

from ..access import audit
from ..access.actor import Actor
from ..access.decisions import may_write_identity
from ..mhd.outcome import FhirError
from ..query.view import Reader
from ..registry.patients import PatientRecord
from ..services import Services


def visible_patients(services: Services, actor: Actor, records: list[PatientRecord]) -> list[PatientRecord]:
    reader = Reader(services, actor)
    with services.registry.read() as conn:
        shown = [r for r in records if reader.identity(conn, r.pk, r.xds_patient_id)]
    if len(shown) < len(records):
        audit.note_filtered(len(records) - len(shown))
    return shown


def check_write(actor: Actor) -> None:
    decision = may_write_identity(actor)
    if not decision:
        audit.note_denied(decision.reason)
        raise FhirError.one(403, decision.reason, "forbidden")
