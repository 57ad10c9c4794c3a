"""The one policy decision point: may this actor do this to this patient's record?

Deny by default. Until the DMP rules of the access issue are in (consent, masking,
roles x classes, emergency access), the only actors allowed are the explicit
insecure development actor and internal system actors (the patient feed); anyone else
is refused. Every door calls these functions and nothing else decides.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..metadata.model import AnyObject
from .actor import Actor

TRUSTED_KINDS = frozenset({"insecure-dev", "system"})


class AccessDenied(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def check_submit(actor: Actor, patient_id: str) -> None:
    if actor.kind not in TRUSTED_KINDS:
        raise AccessDenied(f"actor {actor.id} may not submit documents for {patient_id}")


def check_update(actor: Actor, patient_id: str) -> None:
    if actor.kind not in TRUSTED_KINDS:
        raise AccessDenied(f"actor {actor.id} may not update metadata for {patient_id}")


def may_read(actor: Actor, obj: AnyObject) -> bool:
    return actor.kind in TRUSTED_KINDS


def visible(actor: Actor, objects: Iterable[AnyObject]) -> list[AnyObject]:
    """The objects this actor may see; associations only when both ends are visible."""
    objects = list(objects)
    allowed = [o for o in objects if may_read(actor, o)]
    shown = {o.entry_uuid for o in allowed}
    hidden = {o.entry_uuid for o in objects} - shown
    return [o for o in allowed if o.kind != "Association"
            or (o.source_uuid not in hidden and o.target_uuid not in hidden)]
