"""ITI-8 Patient Identity Feed (HL7 v2.3.1 ADT): messages in, registry patients out.

A01/A04/A05/A08/A28/A31 create or update the patient known by the PID-3 identifiers;
A40 merges the MRG-1 patient into the PID-3 patient, whose documents it then owns.
The outcome is AA when applied, AE when the content is wrong, AR when the message is not
one this listener takes (its ACK is written by `acks`, flavour `PATIENT_FEED`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection

from ..metadata.datatypes import CX
from ..metadata.er7 import Er7Message, Segment
from ..registry.patients import MergeConflict, identifier_problem
from ..services import Services
from ..textsafe import holds_nul
from .fields import patient_identifiers
from .outcome import (
    APPLICATION_ERROR,
    DATA_TYPE_ERROR,
    ERROR,
    REJECTED,
    REQUIRED_FIELD_MISSING,
    UNSUPPORTED_EVENT,
    UNSUPPORTED_MESSAGE,
    FeedOutcome,
    Problem,
)
from .retransmissions import Memory

log = logging.getLogger("partage.hl7")

CREATE_OR_UPDATE = {"A01", "A04", "A05", "A08", "A28", "A31"}
MERGE = {"A40"}


def handle_message(services: Services, message: Er7Message, memory: Memory | None = None) -> FeedOutcome:
    """The message applied (its answer kept by `memory` in the same transaction) or refused."""
    control_id = message.header.control_id
    event = message.header.message_type
    if event.message_code != "ADT" or event.trigger_event not in CREATE_OR_UPDATE | MERGE:
        # HL7 table 0357: 200 for a message type no feed takes, 201 for an ADT event this one does not
        condition = UNSUPPORTED_EVENT if event.message_code == "ADT" else UNSUPPORTED_MESSAGE
        return _refused(REJECTED, condition, "hl7-message-type", control_id,
                        f"message type {event} is not accepted by this listener", "MSH^1^9")
    pid = message.first("PID")
    if pid is None:
        return _refused(ERROR, REQUIRED_FIELD_MISSING, "hl7-pid-missing", control_id, "PID segment is missing",
                        "PID")
    ids = patient_identifiers(pid, 3)
    if not ids:
        return _refused(ERROR, REQUIRED_FIELD_MISSING, "hl7-pid3-missing", control_id,
                        "PID-3 has no identifier with an ISO assigning authority", "PID^1^3")
    mrg = message.first("MRG")
    merged = patient_identifiers(mrg, 1) if mrg is not None else []
    if event.trigger_event in MERGE and not merged:
        return _refused(ERROR, REQUIRED_FIELD_MISSING, "hl7-mrg1-missing", control_id,
                        "A40 needs MRG-1 with the merged patient's identifier", "MRG^1^1")
    unstorable, where = _unstorable(pid, mrg, ids, merged)
    if unstorable:
        return _refused(ERROR, DATA_TYPE_ERROR, "hl7-value-not-storable", control_id, unstorable, where)
    outcome = FeedOutcome("AA", "", control_id)
    try:
        _apply(services, event.trigger_event, ids, merged, _demographics(pid, event.trigger_event),
               lambda conn: memory.keep(conn, outcome) if memory is not None else None)
    except MergeConflict as exc:   # nothing applied: the sender may send it again once fsck is read
        return _refused(ERROR, APPLICATION_ERROR, "hl7-merge-conflict", control_id, str(exc), "MRG^1^1")
    return outcome


def _unstorable(pid: Segment, mrg: Segment | None, ids: list[CX], merged: list[CX]) -> tuple[str, str]:
    """Why the registry cannot keep these identifiers and demographics as received, and where
    (an ERL), or ("", "") (a NUL: PostgreSQL's text holds none; identifiers longer than the
    registry's columns)."""
    for segment in (pid, mrg):
        if segment is not None and holds_nul(segment.fields):
            return f"{segment.name} holds a NUL character", segment.name
    for cxs, where in ((ids, "PID^1^3"), (merged, "MRG^1^1")):
        problem = next((found for found in map(identifier_problem, cxs) if found), "")
        if problem:
            return problem, where
    return "", ""


def _refused(code: str, condition: str, rule: str, control_id: str, text: str, location: str) -> FeedOutcome:
    """A refusal with its one ERR, naming where in the message (an ERL: PID^1^3, MRG^1^1)."""
    return FeedOutcome(code, text, control_id, [Problem(condition, rule, text, location)])


def _demographics(pid: Segment, trigger: str) -> dict[str, Any]:
    """What the registry keeps of the patient: PID-5, PID-7, PID-8 as received (ER7 text), and
    PID-13's repetitions (XTN: the patient's e-mail for notices, docs/notifications.md)."""
    return {"name": pid.first(5), "birth_date": pid.first(7), "sex": pid.first(8), "event": trigger,
            "telecom": [t for t in pid.repetitions(13) if t.strip()],
            "received": datetime.now(UTC).strftime("%Y%m%d%H%M%S")}


def _apply(services: Services, trigger: str, ids: list[CX], merged: list[CX],
           demographics: dict[str, Any], answered: Callable[[Connection], None]) -> None:
    """One transaction: the message's answer kept (`answered`, first: a copy of the message
    committed meanwhile stops it), the patient created or updated; for A40, the MRG-1 patients
    merged in."""
    registry = services.registry
    with registry.write() as conn:
        answered(conn)
        registry.upsert_patient(conn, ids, demographics)
        if trigger in MERGE:
            for prior in merged:
                registry.merge_patients(conn, ids[0], prior)
            log.info("ITI-8 A40: %s merged into %s", merged, ids[0])
        else:
            log.info("ITI-8 %s: patient %s", trigger, ids)
    if trigger in MERGE:
        _settle(services, merged)


def _settle(services: Services, merged: list[CX]) -> None:
    """A sharded registry's merge across shards copies the rows in the merge's transaction and
    deletes the originals here, once it has committed (registry.patients.settle_merge). The
    merge is done whatever happens here: a failure leaves rows no query reads, which `partage
    fsck` reports and `--repair` deletes."""
    for prior in merged:
        try:
            services.registry.settle_merge(prior)
        except Exception:   # the merge has committed; the leftovers are fsck's
            log.warning("ITI-8 A40: the rows of %s left on its shard are not deleted yet (partage fsck --repair)",
                        prior, exc_info=True)
