"""ITI-8 Patient Identity Feed (HL7 v2.3.1 ADT): messages in, registry patients out.

A01/A04/A05/A08/A28/A31 create or update the patient known by the PID-3 identifiers;
A40 merges the MRG-1 patient into the PID-3 patient, whose documents it then owns.
Each message gets an ACK: AA when applied, AE when the content is wrong, AR when the
message is not one this listener takes.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from ..metadata.datatypes import CX, DatatypeError
from ..services import Services

log = logging.getLogger("partage.hl7")

CREATE_OR_UPDATE = {"A01", "A04", "A05", "A08", "A28", "A31"}
MERGE = {"A40"}
# hl7apy builds an object of a few kilobytes for every segment, field, component and
# repetition (measured: ~5 KB and ~1.5 ms each), so it only ever sees the segments the feed
# reads, and those within bounds: a 1 MB message of NTE segments would otherwise cost
# gigabytes and minutes.
READ_SEGMENTS = ("MSH", "EVN", "PID", "PD1", "MRG", "PV1")
MAX_PARSED_BYTES = 16 * 1024
MAX_PARSED_ELEMENTS = 1000   # separators | ^ ~ & in what hl7apy parses


def essential_segments(text: str) -> str:
    """The first of each segment the feed reads, in order; ValueError when they are over the bounds."""
    kept: dict[str, str] = {}
    for segment in text.replace("\n", "\r").split("\r"):
        name = segment[:3]
        if name in READ_SEGMENTS and name not in kept:
            kept[name] = segment
    out = "\r".join(kept.values()) + "\r"
    if len(out) > MAX_PARSED_BYTES:
        raise ValueError(f"the {', '.join(kept)} segments hold {len(out)} characters; at most "
                         f"{MAX_PARSED_BYTES} are read")
    elements = sum(out.count(c) for c in "|^~&")
    if elements > MAX_PARSED_ELEMENTS:
        raise ValueError(f"the {', '.join(kept)} segments hold {elements} fields, components and repetitions; "
                         f"at most {MAX_PARSED_ELEMENTS} are read")
    return out


@dataclass
class FeedOutcome:
    code: str            # AA, AE, AR
    text: str = ""
    control_id: str = ""
    message: object = None


def _field(segment, name: str) -> str:
    try:
        return getattr(segment, name).value or ""
    except Exception:   # hl7apy raises for absent optional fields
        return ""


def _identifiers(segment, name: str) -> list[str]:
    try:
        repetitions = getattr(segment, name)
    except Exception:
        return []
    out = []
    for repetition in repetitions:
        value = (repetition.value or "").strip()
        if value:
            out.append(value)
    return out


def _usable(ids: list[str]) -> list[CX]:
    """Identifiers with an ISO assigning authority, normalised to their CX form."""
    usable: list[CX] = []
    for raw in ids:
        try:
            cx = CX.parse(raw, strict=False)
        except DatatypeError:
            continue
        if cx.id and cx.assigning_authority.universal_id:
            usable.append(cx)
    return usable


def handle_message(services: Services, text: str) -> FeedOutcome:
    try:
        message = parse_message(essential_segments(text), validation_level=VALIDATION_LEVEL.TOLERANT,
                                find_groups=False)
    except Exception as exc:
        return FeedOutcome("AR", f"message cannot be parsed: {exc}")
    control_id = _field(message.msh, "msh_10")
    event = _field(message.msh, "msh_9").split("^")
    trigger = event[1] if len(event) > 1 else ""
    outcome = FeedOutcome("AA", "", control_id, message)
    if event[0] != "ADT" or trigger not in CREATE_OR_UPDATE | MERGE:
        outcome.code, outcome.text = "AR", f"message type {'^'.join(event)} is not accepted by this listener"
        return outcome
    try:
        pid = message.pid
    except Exception:
        outcome.code, outcome.text = "AE", "PID segment is missing"
        return outcome
    ids = _usable(_identifiers(pid, "pid_3"))
    if not ids:
        outcome.code, outcome.text = "AE", "PID-3 has no identifier with an ISO assigning authority"
        return outcome
    demographics = {"name": _field(pid, "pid_5"), "birth_date": _field(pid, "pid_7"),
                    "sex": _field(pid, "pid_8"), "event": trigger,
                    "received": datetime.now(UTC).strftime("%Y%m%d%H%M%S")}
    registry = services.registry
    with registry.write() as conn:
        if trigger in MERGE:
            try:
                merged = _usable(_identifiers(message.mrg, "mrg_1"))
            except Exception:
                merged = []
            if not merged:
                outcome.code, outcome.text = "AE", "A40 needs MRG-1 with the merged patient's identifier"
                return outcome
            registry.upsert_patient(conn, ids, demographics)
            for prior in merged:
                registry.merge_patients(conn, ids[0], prior)
            log.info("ITI-8 A40: %s merged into %s", merged, ids[0])
        else:
            registry.upsert_patient(conn, ids, demographics)
            log.info("ITI-8 %s: patient %s", trigger, ids)
    return outcome


def ack(outcome: FeedOutcome, received_text: str) -> str:
    """An HL7 v2 ACK for the message (MSH fields mirrored, MSA with the outcome)."""
    fields = received_text.split("\r", 1)[0].split("|") if received_text.startswith("MSH") else []

    def f(i: int) -> str:
        return fields[i] if len(fields) > i else ""

    now = datetime.now(UTC).strftime("%Y%m%d%H%M%S")
    version = f(11) or "2.3.1"
    msh = f"MSH|^~\\&|{f(4) or 'PARTAGE'}|{f(5) or 'PARTAGE'}|{f(2)}|{f(3)}|{now}||ACK^{_trigger(f(8))}|" \
          f"ACK{now}{outcome.control_id[-8:]}|P|{version}"
    text = outcome.text.replace("|", "/").replace("\r", " ")
    segments = [msh, f"MSA|{outcome.code}|{outcome.control_id}|{text}"]
    if outcome.code != "AA":
        segments.append(f"ERR|^^^{'207' if outcome.code == 'AR' else '101'}&{text}")
    return "\r".join(segments) + "\r"


def _trigger(message_type: str) -> str:
    parts = message_type.split("^")
    return parts[1] if len(parts) > 1 else ""
