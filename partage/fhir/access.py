"""The access policy on FHIR Patient resources (identity and demographics)."""

from __future__ import annotations

from ..access import audit, policy
from ..access.actor import Actor
from .outcome import FhirError


def _pk(services, resource: dict) -> int | None:
    with services.registry.read() as conn:
        for ident in resource.get("identifier", []) or []:
            system, value = ident.get("system", ""), ident.get("value", "")
            if system.startswith("urn:oid:") and value:
                pk = services.registry.patient_pk(conn, f"{value}^^^&{system[8:]}&ISO")
                if pk is not None:
                    return pk
    return None


def visible_patients(services, actor: Actor, resources: list[dict]) -> list[dict]:
    shown = [r for r in resources if policy.may_see_patient(actor, _pk(services, r), services=services)]
    if len(shown) < len(resources):
        audit.note_filtered(len(resources) - len(shown))
    return shown


def check_write(actor: Actor) -> None:
    try:
        policy.check_patient_write(actor)
    except policy.AccessDenied as exc:
        raise FhirError.one(403, exc.reason, "forbidden") from exc
