"""The audit trail: one append-only record per access (ATNA-like fields).

A request opens an `AuditContext` (the web app does it for every /xds and /fhir
request; the CLI and the MLLP listener record their own events); the door names the
actor once authenticated, the policy notes the patient, the documents returned and
the decision; when the request ends, one row is written to `audit_events`. A
successful bris de glace or centre 15 access also queues a notice to the patient.

Outcomes follow ATNA (DICOM EventOutcomeIndicator): 0 success, 4 minor failure (the
request was refused: authentication, policy, invalid request), 8 serious failure
(server error). `decision` says what the policy did: permit, filtered (some objects
were withheld), deny, or unauthenticated.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Sequence
from contextvars import ContextVar, Token
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from ..failures import Unavailable
from ..metadata.datatypes import CX, DatatypeError
from ..registry import audit_log
from ..registry.search_index import DateMatch
from ..registry.store import Registry
from .actor import BRIS_DE_GLACE, CENTRE_15, PATIENT, REPRESENTATIVE, Actor

log = logging.getLogger("partage.audit")

SUCCESS, MINOR_FAILURE, SERIOUS_FAILURE, MAJOR_FAILURE = 0, 4, 8, 12
MAX_OBJECTS = 200


@dataclass
class AuditContext:
    action: str
    request: str = ""
    address: str = ""
    actor: Actor | None = None
    patients: dict[str, int | None] = field(default_factory=dict)   # CX -> pk (insertion order)
    patient_pks: list[int] = field(default_factory=list)
    objects: list[str] = field(default_factory=list)
    denied: list[str] = field(default_factory=list)
    denied_patients: dict[int, str] = field(default_factory=dict)   # pk -> why the policy refused that record
    filtered: int = 0
    auth_error: str = ""
    failure: str = ""
    refusals: list[str] = field(default_factory=list)   # errors answered inside a 200 (an XDS Failure)
    remarks: list[str] = field(default_factory=list)


class AuditUnavailable(Unavailable):
    """The audit store refused the record: nothing may be sent or written (fail closed)."""


class Holder(Protocol):
    """What the audit trail reads of the process's Services (access sits below services.py)."""

    @property
    def registry(self) -> Registry: ...


_current: ContextVar[AuditContext | None] = ContextVar("partage_audit", default=None)


def begin(action: str, *, request: str = "", address: str = "") -> Token[AuditContext | None]:
    """Open the context of one access; returns the token `end` needs."""
    return _current.set(AuditContext(action=action, request=request, address=address))


def end(token: Token[AuditContext | None]) -> None:
    _current.reset(token)


def current() -> AuditContext | None:
    return _current.get()


def set_action(action: str) -> None:
    ctx = _current.get()
    if ctx is not None and action:
        ctx.action = action


def note_actor(actor: Actor) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.actor = actor


def note_auth_failure(reason: str) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.auth_error = reason


def note_patient(patient_id: str, pk: int | None = None) -> None:
    ctx = _current.get()
    if ctx is None:
        return
    if patient_id:
        if ctx.patients.get(patient_id) is None:
            ctx.patients[patient_id] = pk
    elif pk is not None and pk not in ctx.patient_pks:
        ctx.patient_pks.append(pk)


def note_objects(unique_ids: list[str]) -> None:
    ctx = _current.get()
    if ctx is None:
        return
    for uid in unique_ids:
        if uid and uid not in ctx.objects and len(ctx.objects) < MAX_OBJECTS:
            ctx.objects.append(uid)


def note_filtered(count: int) -> None:
    ctx = _current.get()
    if ctx is not None:
        ctx.filtered += count


def note_denied(reason: str, patient_pk: int | None = None) -> None:
    """The policy refused the request (or, `patient_pk`, that one patient's record)."""
    ctx = _current.get()
    if ctx is None:
        return
    if patient_pk is None:
        ctx.denied.append(reason)
    else:
        ctx.denied_patients.setdefault(patient_pk, reason)


def note_refusal(reason: str) -> None:
    """The door refused the request in its answer's body (an XDS RegistryResponse of status
    Failure, sent with HTTP 200): a minor failure (4), as an HTTP 4xx refusal is."""
    ctx = _current.get()
    if ctx is not None:
        ctx.refusals.append(reason)


def note_failure(reason: str) -> None:
    """The server failed the request and said so in its answer's body: a serious failure (8)."""
    ctx = _current.get()
    if ctx is not None and not ctx.failure:
        ctx.failure = reason


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def open_record(services: Holder, ctx: AuditContext) -> None:
    """Prove, before a write runs, that its audit record can be written (fail closed).

    The trail is append-only, so the proof is the record's insert itself, made in a
    transaction that is rolled back (`Registry.rehearsal`): the same triggers, rights and
    locks as the real record. AuditUnavailable if it fails: the write must not run.
    """
    row = dict(recorded_at=_now(), action=ctx.action[:80], request=ctx.request[:300], outcome=SERIOUS_FAILURE,
               decision="error", actor_id="unauthenticated", actor_name="", actor_kind="unknown",
               actor_role="", purpose="", reason="", structure="", address=ctx.address[:64], credential_id="",
               issuer="", patient_pk=None, patient_id="", objects="[]", detail="probe")
    try:
        with services.registry.rehearsal() as conn:
            audit_log.probe(conn, row)
    except Exception as exc:
        log.error("the audit store refused a record: %s", exc)
        raise AuditUnavailable("the audit trail cannot be written; nothing was done, try again later") from exc


def finish(services: Holder, ctx: AuditContext, status: int = 200) -> int | None:
    """Write the audit row of this access (one per patient it is about); returns the first key.

    AuditUnavailable when the store refuses it: the caller must then not send patient data.
    """
    try:
        return _write(services, ctx, status)
    except Exception as exc:
        log.error("the audit store refused a record: %s", exc)
        raise AuditUnavailable("the audit trail cannot be written; nothing was sent, try again later") from exc


def _write(services: Holder, ctx: AuditContext, status: int) -> int | None:
    actor = ctx.actor or Actor(id="unauthenticated", kind="unknown")
    registry = services.registry
    with registry.write(closing=True) as conn:   # the request's last write: its flush covers the rest
        # One row per patient the access is about (an answer may hold several: a PDQm search),
        # so that each patient's trail shows it; one row when it named none.
        named: dict[int, str] = {}
        unresolved = ""
        for cx, pk in ctx.patients.items():
            if pk is None:
                pk = registry.patient_pk(conn, _cx(cx))
            if pk is None:
                unresolved = unresolved or cx
            elif pk not in named or not named[pk]:
                named[pk] = cx
        for pk in ctx.patient_pks:
            named.setdefault(pk, "")
        targets: list[tuple[int | None, str]] = [(pk, cx) for pk, cx in named.items()] or [(None, unresolved)]
        if len(targets) == 1 and not targets[0][1]:
            targets = [(targets[0][0], unresolved)]
        first: int | None = None
        for patient_pk, patient_id in targets:
            outcome, decision, detail = _verdict(ctx, status, patient_pk)
            row = dict(recorded_at=_now(), action=ctx.action[:80], request=ctx.request[:300], outcome=outcome,
                       decision=decision, actor_id=actor.id[:128], actor_name=actor.name[:256],
                       actor_kind=actor.kind[:16],
                       actor_role="/".join(filter(None, [actor.role, actor.specialty]))[:32],
                       purpose=actor.purpose if ctx.actor else "", reason=actor.reason,
                       structure=actor.structure[:64], address=(ctx.address or actor.address)[:64],
                       credential_id=actor.credential_id[:128], issuer=actor.issuer[:256], patient_pk=patient_pk,
                       patient_id=patient_id[:256], objects=json.dumps(ctx.objects), detail=detail)
            pk = audit_log.append(conn, row)
            first = pk if first is None else first
            if (ctx.actor is not None and actor.purpose in (BRIS_DE_GLACE, CENTRE_15) and outcome == SUCCESS
                    and patient_pk is not None and actor.kind not in (PATIENT, REPRESENTATIVE)):
                # (the patient, or who acts for them, breaks no glass on their own record)
                # A notice owed to the patient, in the audit row's transaction; partage.notify
                # e-mails it (docs/notifications.md).
                mode = "emergency mode (bris de glace)" if actor.purpose == BRIS_DE_GLACE else "SAMU regulation (centre 15)"
                audit_log.add_notice(
                    conn, patient_pk=patient_pk, created_at=row["recorded_at"], kind=actor.purpose, audit_pk=pk,
                    notice_id=str(uuid.uuid4()),
                    message=f"{actor.name or actor.id} ({actor.structure}) accessed your record in {mode}: "
                            f"{actor.reason}")
    return first


def _verdict(ctx: AuditContext, status: int, patient_pk: int | None) -> tuple[int, str, str]:
    """Outcome, decision and detail of the row about `patient_pk`: a record the policy refused
    is a denial on that patient's row; on the row of a patient who was served, it was withheld."""
    refused = ctx.denied_patients.get(patient_pk) if patient_pk is not None else None
    if refused is None and patient_pk is None and ctx.denied_patients:
        refused = next(iter(ctx.denied_patients.values()))
    others = sum(1 for pk in ctx.denied_patients if pk != patient_pk) if refused is None else 0
    denied = [*ctx.denied, *([refused] if refused is not None else [])]
    if ctx.auth_error or status == 401:
        outcome, decision = MINOR_FAILURE, "unauthenticated"
    elif status >= 500 or ctx.failure:
        outcome, decision = SERIOUS_FAILURE, "error"
    elif denied or status == 403:
        outcome, decision = MINOR_FAILURE, "deny"
    elif status >= 400:
        outcome, decision = MINOR_FAILURE, "permit"
    else:   # a refusal answered in the body (an XDS Failure) is a minor failure, the policy's part as for a success
        outcome = MINOR_FAILURE if ctx.refusals else SUCCESS
        decision = "filtered" if ctx.filtered or others else "permit"
    detail = "; ".join(filter(None, [ctx.auth_error, *denied, ctx.failure, *ctx.refusals, *ctx.remarks,
                                     f"{ctx.filtered} object(s) withheld by the policy" if ctx.filtered else "",
                                     f"{others} other record(s) withheld by the policy" if others else ""]))
    return outcome, decision, detail


def record(services: Holder, action: str, actor: Actor, *, patient_id: str | CX = "", detail: str = "",
           outcome_status: int = 200) -> int | None:
    """One audit row for an access outside a web request (CLI, MLLP)."""
    ctx = AuditContext(action=action, actor=actor)
    if patient_id:
        ctx.patients[str(patient_id)] = None
    if detail:
        if outcome_status < 400:
            ctx.remarks.append(detail)
        else:
            ctx.failure = detail
    return finish(services, ctx, outcome_status)


def _cx(text: str | CX) -> CX | None:
    """The audit trail keeps patients as the HL7 text of their CX."""
    if isinstance(text, CX):
        return text
    try:
        return CX.parse(text, strict=False)
    except DatatypeError:
        return None


# ----------------------------------------------------------------- reading
def events(services: Holder, *, patient_id: str | CX = "", patient_pk: int | None = None, actor_id: str = "",
           limit: int = 100, since_pk: int = 0, before_pk: int = 0,
           dates: Sequence[DateMatch] = ()) -> list[dict[str, Any]]:
    """Audit rows, newest first, for a patient and/or an actor (recorded when `dates` say);
    `before_pk`: only rows older than that one (where a page of them goes on)."""
    registry = services.registry
    with registry.read() as conn:
        if patient_id:
            patient_pk = registry.patient_pk(conn, _cx(patient_id))
            if patient_pk is None:
                return []
        rows = audit_log.events(conn, patient_pk=patient_pk, actor_id=actor_id, limit=limit, since_pk=since_pk,
                                before_pk=before_pk, dates=dates)
    return [{**row, "objects": json.loads(row["objects"] or "[]")} for row in rows]



def notifications(services: Holder, patient_pk: int) -> list[dict[str, Any]]:
    with services.registry.read() as conn:
        return audit_log.notices(conn, patient_pk)
