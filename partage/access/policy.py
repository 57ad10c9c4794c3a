"""The one policy decision point: may this actor do this to this patient's record?

Deny by default, table-driven; docs/access.md is the human form of the tables below.
Every door calls these functions (through the flows) and nothing else decides:

- `check_submit` (ITI-41/42/65), `check_update` (ITI-57/62/86, PDSm PATCH) raise
  `AccessDenied`;
- `may_read` and `visible` filter what queries and retrievals return, so that an
  object the actor may not see is neither returned nor counted.

Decisions need the patient's record state (consent, blocks, médecin traitant), read
from the registry through `records`; pass `services`. Without it only the trusted
kinds (internal system actors and the explicit insecure development actor) pass.
Each decision is noted on the request's audit record (`audit`).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..metadata.model import AnyObject, DocumentEntry
from . import audit, records
from .actor import (
    ADMIN,
    BRIS_DE_GLACE,
    CENTRE_15,
    CONNECTOR,
    INSECURE_DEV,
    NORMAL,
    PATIENT,
    PROFESSIONAL,
    REPRESENTATIVE,
    SYSTEM,
    Actor,
)
from .records import NO_RECORD, OPEN, RecordState

TRUSTED_KINDS = frozenset({INSECURE_DEV, SYSTEM})

# Confidentiality codes of the DMP (JDV J08, system 1.2.250.1.213.1.1.4.13).
CONFIDENTIALITY_SYSTEM = "1.2.250.1.213.1.1.4.13"
MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
# Optional DocumentEntry slot: until when (DTM) a document stays hidden from the patient.
RELEASE_SLOT = "invisiblePatientUntil"
MAX_HIDDEN_DAYS = 15

ALL = "*"


@dataclass(frozen=True)
class AccessTable:
    """The configurable tables. Profession codes: TRE_G15; specialties: TRE_R38 (J01);
    classes: J06 classCode (TRE_A03)."""

    # profession -> document classes it may read and submit ("*": every class)
    classes: dict[str, frozenset[str] | str] = field(default_factory=lambda: {
        "10": ALL,                                                     # médecin
        "40": ALL,                                                     # chirurgien-dentiste
        "50": ALL,                                                     # sage-femme
        "21": frozenset({"11", "42", "43", "44", "45", "90"}),         # pharmacien
        "60": frozenset({"10", "11", "42", "43", "44", "45", "90"}),   # infirmier
        "70": frozenset({"10", "11", "31", "42", "44", "90"}),         # masseur-kinésithérapeute
        "80": frozenset({"11", "42", "44", "90"}),                     # pédicure-podologue
    })
    # always refused, whatever the profession: occupational medicine (SM25, C41, CAPA11)
    forbidden_specialties: frozenset[str] = frozenset({"SM25", "C41", "CAPA11"})
    # always refused: sectors of insurers, occupational health services (TRE_R02, configurable)
    forbidden_sectors: frozenset[str] = frozenset()
    # professions that may use bris_de_glace (with a reason) and centre_15
    emergency_professions: frozenset[str] = frozenset({"10", "50", "60"})
    regulator_professions: frozenset[str] = frozenset({"10"})
    # classes a patient (or a legal representative) may submit
    patient_submit_classes: frozenset[str] = frozenset({"90"})

    def allowed_classes(self, profession: str) -> frozenset[str] | str:
        return self.classes.get(profession, frozenset())

    @classmethod
    def load(cls, path: str) -> AccessTable:
        """The defaults, with the keys of a JSON file replacing them."""
        if not path:
            return DEFAULT_TABLE
        data = json.loads(open(path, encoding="utf-8").read())
        base = cls()
        values = {}
        for key in ("forbidden_specialties", "forbidden_sectors", "emergency_professions",
                    "regulator_professions", "patient_submit_classes"):
            values[key] = frozenset(data[key]) if key in data else getattr(base, key)
        classes = data.get("classes")
        values["classes"] = base.classes if classes is None else {
            k: (ALL if v == ALL else frozenset(v)) for k, v in classes.items()}
        return cls(**values)


DEFAULT_TABLE = AccessTable()
_tables: dict[str, AccessTable] = {}


def table_for(settings) -> AccessTable:
    path = getattr(settings, "access_matrix", "") or ""
    if path not in _tables:
        _tables[path] = AccessTable.load(path)
    return _tables[path]


class AccessDenied(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


PERMIT = Decision(True)


def deny(reason: str) -> Decision:
    return Decision(False, reason)


# ----------------------------------------------------------------- the pure decisions
def _confidentiality(doc: DocumentEntry) -> set[str]:
    return {c.code for c in doc.confidentiality_codes if c.scheme == CONFIDENTIALITY_SYSTEM}


def _is_author(actor: Actor, doc: DocumentEntry) -> bool:
    for author in doc.authors:
        if author.person and author.person.split("^", 1)[0] == actor.id:
            return True
    return bool(doc.legal_authenticator) and doc.legal_authenticator.split("^", 1)[0] == actor.id


def _from_structure(actor: Actor, doc: DocumentEntry) -> bool:
    if not actor.structure:
        return False
    for author in doc.authors:
        for xon in author.institutions:
            parts = xon.split("^")
            if actor.structure in (parts[9] if len(parts) > 9 else "", parts[2] if len(parts) > 2 else ""):
                return True
    return False


def _dtm(value: str) -> datetime | None:
    digits = "".join(ch for ch in value if ch.isdigit())[:14]
    if len(digits) < 8:
        return None
    try:
        return datetime.strptime(digits.ljust(14, "0"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return None


def hidden_from_patient(doc: DocumentEntry, now: datetime) -> bool:
    """INVISIBLE_PATIENT, unless its release date (at most 15 days after creation) has passed."""
    if INVISIBLE_PATIENT not in _confidentiality(doc):
        return False
    until = _dtm((doc.extra_slots.get(RELEASE_SLOT) or [""])[0])
    if until is None:
        return True
    created = _dtm(doc.creation_time)
    if created is not None:
        until = min(until, created + timedelta(days=MAX_HIDDEN_DAYS))
    return now < until


def professional_record_access(actor: Actor, record: RecordState, table: AccessTable,
                               own_patient: bool | None = None) -> Decision:
    """May this professional open this patient's record at all (before document rules)?"""
    if actor.specialty in table.forbidden_specialties or actor.sector in table.forbidden_sectors:
        return deny(f"role {actor.role}/{actor.specialty or actor.sector} may never access the DMP")
    if not table.allowed_classes(actor.role):
        return deny(f"profession {actor.role or '(none)'} has no access to the DMP")
    if record.status == records.NONE:
        return deny("the patient has no record (no consent)")
    if record.status != OPEN:
        return deny("the patient's record is closed")
    if actor.id in record.blocked and actor.id != record.medecin_traitant:
        return deny("the patient has blocked this professional")
    if own_patient is False:
        return deny("the credential names another patient")
    if actor.purpose == BRIS_DE_GLACE:
        if not actor.reason.strip():
            return deny("bris de glace needs a reason")
        if actor.role not in table.emergency_professions:
            return deny(f"profession {actor.role} may not use bris de glace")
        if record.bdg_opposed:
            return deny("the patient opposed bris de glace access")
    elif actor.purpose == CENTRE_15:
        if actor.role not in table.regulator_professions:
            return deny(f"profession {actor.role} may not use the centre 15 access mode")
    elif actor.purpose != NORMAL:
        return deny(f"unknown access mode {actor.purpose!r}")
    return PERMIT


def class_allowed(actor: Actor, doc: DocumentEntry, table: AccessTable) -> bool:
    allowed = table.allowed_classes(actor.role)
    if allowed == ALL:
        return True
    return doc.class_code is not None and doc.class_code.code in allowed


def read_decision(actor: Actor, record: RecordState, obj: AnyObject | None, table: AccessTable,
                  *, own_patient: bool | None = None, now: datetime | None = None) -> Decision:
    """May `actor` see `obj` (None: the record itself) of the patient whose state is `record`?

    `own_patient`: whether the patient the actor's credential names is this record's
    patient (None: the credential names none).
    """
    kind = actor.kind
    if kind in TRUSTED_KINDS:
        return PERMIT
    doc = obj if isinstance(obj, DocumentEntry) else None
    if kind in (PATIENT, REPRESENTATIVE):
        if record.patient_pk is None or not own_patient:
            return deny("not the actor's own record")
        if doc is not None:
            codes = _confidentiality(doc)
            if hidden_from_patient(doc, now or datetime.now(UTC)):
                return deny("document invisible to the patient")
            if kind == REPRESENTATIVE and INVISIBLE_REPRESENTANTS_LEGAUX in codes:
                return deny("document invisible to legal representatives")
        return PERMIT
    if kind == CONNECTOR:
        if record.status != OPEN:
            return deny("the patient's record is not open")
        if doc is not None and not _from_structure(actor, doc):
            return deny("a connector reads only its own structure's documents")
        return PERMIT
    if kind == PROFESSIONAL:
        decision = professional_record_access(actor, record, table, own_patient)
        if not decision or doc is None:
            return decision
        if not class_allowed(actor, doc, table):
            return deny(f"profession {actor.role} may not read class "
                        f"{doc.class_code.code if doc.class_code else '(none)'}")
        if MASQUE_PS in _confidentiality(doc) and not (
                _is_author(actor, doc) or (record.medecin_traitant and actor.id == record.medecin_traitant)):
            return deny("document masked to professionals")
        return PERMIT
    if kind == ADMIN:
        return deny("administrators read the audit trail, not documents")
    return deny(f"actor kind {kind!r} has no access")


def submit_decision(actor: Actor, record: RecordState, documents: Iterable[DocumentEntry],
                    table: AccessTable, *, own_patient: bool | None = None) -> Decision:
    kind = actor.kind
    if kind in TRUSTED_KINDS:
        return PERMIT
    documents = list(documents)
    if kind in (PATIENT, REPRESENTATIVE):
        if record.patient_pk is None or not own_patient:
            return deny("not the actor's own record")
        if record.status != OPEN:
            return deny("the patient's record is not open")
        for doc in documents:
            if doc.class_code is None or doc.class_code.code not in table.patient_submit_classes:
                return deny("a patient may only submit documents of class "
                            + ", ".join(sorted(table.patient_submit_classes)))
        return PERMIT
    if kind == CONNECTOR:
        if record.status != OPEN:
            return deny("the patient's record is not open")
        for doc in documents:
            if not _from_structure(actor, doc):
                return deny(f"document {doc.unique_id}: the authenticated structure is not its "
                            "author institution")
        return PERMIT
    if kind == PROFESSIONAL:
        decision = professional_record_access(actor, record, table, own_patient)
        if not decision:
            return decision
        for doc in documents:
            if not class_allowed(actor, doc, table):
                return deny(f"profession {actor.role} may not submit class "
                            f"{doc.class_code.code if doc.class_code else '(none)'}")
            if not _is_author(actor, doc):
                return deny(f"document {doc.unique_id}: the authenticated professional is not "
                            "one of its authors")
        return PERMIT
    return deny(f"actor kind {kind!r} may not submit documents")


def update_decision(actor: Actor, record: RecordState, table: AccessTable, *,
                    own_patient: bool | None = None) -> Decision:
    kind = actor.kind
    if kind in TRUSTED_KINDS:
        return PERMIT
    if kind in (PATIENT, REPRESENTATIVE):
        if record.patient_pk is None or not own_patient:
            return deny("not the actor's own record")
        return PERMIT if record.status == OPEN else deny("the patient's record is not open")
    if kind == CONNECTOR:
        return PERMIT if record.status == OPEN else deny("the patient's record is not open")
    if kind == PROFESSIONAL:
        return professional_record_access(actor, record, table, own_patient)
    return deny(f"actor kind {kind!r} may not update metadata")


# ----------------------------------------------------------------- with the registry
class Policy:
    """Decisions for one actor, with the record states it needs, cached per instance."""

    def __init__(self, actor: Actor, services) -> None:
        self.actor = actor
        self.services = services
        self.registry = services.registry if services is not None else None
        self.table = table_for(services.settings) if services is not None else DEFAULT_TABLE
        self._by_cx: dict[str, int | None] = {}
        self._states: dict[int | None, RecordState] = {}
        self._actor_pk: int | None | bool = False     # False: not looked up yet

    def _pk(self, cx: str) -> int | None:
        if cx not in self._by_cx:
            with self.registry.read() as conn:
                self._by_cx[cx] = self.registry.patient_pk(conn, cx) if cx else None
        return self._by_cx[cx]

    def state(self, pk: int | None) -> RecordState:
        if pk is None:
            return NO_RECORD
        if pk not in self._states:
            with self.registry.read() as conn:
                self._states[pk] = records.load(conn, pk)
        return self._states[pk]

    def own_patient(self, pk: int | None) -> bool | None:
        if not self.actor.patient_id:
            return None
        if self._actor_pk is False:
            self._actor_pk = self._pk(self.actor.patient_id)
        return self._actor_pk is not None and self._actor_pk == pk

    def _patient_of(self, obj: AnyObject) -> tuple[str, int | None]:
        cx = getattr(obj, "patient_id", "") or ""
        return cx, (self._pk(cx) if cx else None)

    def read(self, obj: AnyObject) -> Decision:
        if self.actor.kind in TRUSTED_KINDS:
            return PERMIT
        if self.registry is None:
            return deny("no policy state available")
        if obj.kind == "Association":
            return PERMIT if self.actor.kind != ADMIN else deny("administrators read no documents")
        cx, pk = self._patient_of(obj)
        return read_decision(self.actor, self.state(pk), obj, self.table, own_patient=self.own_patient(pk))

    def submit(self, patient_id: str, documents: Iterable[DocumentEntry]) -> Decision:
        if self.actor.kind in TRUSTED_KINDS:
            return PERMIT
        if self.registry is None:
            return deny("no policy state available")
        pk = self._pk(patient_id)
        return submit_decision(self.actor, self.state(pk), documents, self.table, own_patient=self.own_patient(pk))

    def update(self, pk: int | None) -> Decision:
        if self.actor.kind in TRUSTED_KINDS:
            return PERMIT
        if self.registry is None:
            return deny("no policy state available")
        return update_decision(self.actor, self.state(pk), self.table, own_patient=self.own_patient(pk))


# ----------------------------------------------------------------- the doors' API
def check_submit(actor: Actor, patient_id: str, *, services=None,
                 documents: Iterable[DocumentEntry] = ()) -> None:
    documents = list(documents)
    policy = Policy(actor, services)
    decision = policy.submit(patient_id, documents)
    audit.note_patient(patient_id, policy._by_cx.get(patient_id))
    if not decision:
        audit.note_denied(decision.reason)
        raise AccessDenied(f"actor {actor.id} may not submit documents for {patient_id}: {decision.reason}")
    audit.note_objects([d.unique_id for d in documents])


PATIENT_MAY_TOGGLE = frozenset({MASQUE_PS})
_NOT_COMPARED = ("entry_uuid", "availability_status", "version", "lid", "confidentiality_codes",
                 "home_community_id")


def _previous_version(services, lid: str) -> DocumentEntry | None:
    from sqlalchemy import select

    from ..registry import schema
    from ..registry.indexing import object_from_row

    t = schema.registry_objects
    with services.registry.read() as conn:
        row = conn.execute(select(t.c.body).where(t.c.lid == lid, t.c.kind == schema.KIND_DOCUMENT,
                                                  t.c.status != "Deprecated")
                           .order_by(t.c.version.desc())).first()
    return object_from_row(row.body) if row is not None else None


def patient_update_problem(policy: Policy, request) -> str:
    """A patient (or representative) manages masking, nothing else (CI-SIS flows): each new
    version may only add or remove MASQUE_PS on a document they can see."""
    from dataclasses import asdict

    if request.folders or any(str(a.association_type).endswith("UpdateAvailabilityStatus")
                              for a in request.associations):
        return "a patient may only change the masking of documents"
    for doc in request.documents:
        previous = _previous_version(policy.services, doc.lid) if doc.lid else None
        if previous is None:
            return "a patient may only change the masking of existing documents"
        if not policy.read(previous):
            return "a patient may not change a document they cannot see"
        before, after = asdict(previous), asdict(doc)
        if any(before[k] != after[k] for k in before if k not in _NOT_COMPARED):
            return "a patient may only change the masking (confidentiality codes) of a document"
        changed = {(c.code, c.scheme) for c in previous.confidentiality_codes} ^ \
                  {(c.code, c.scheme) for c in doc.confidentiality_codes}
        if any(scheme != CONFIDENTIALITY_SYSTEM or code not in PATIENT_MAY_TOGGLE for code, scheme in changed):
            return "a patient may only add or remove MASQUE_PS"
    return ""


def author_update_problem(policy: Policy, request) -> str:
    """DMP: only an author (direct authentication) or the author's structure (indirect) may
    replace or update a document: both the new version and the one it replaces."""
    actor = policy.actor
    owns = _is_author if actor.kind == PROFESSIONAL else _from_structure
    for doc in request.documents:
        previous = _previous_version(policy.services, doc.lid) if doc.lid else None
        for version in filter(None, (doc, previous)):
            if not owns(actor, version):
                return f"document {version.unique_id}: only its author may update it"
    return ""


def removal_problem(actor: Actor, objects: list[AnyObject]) -> str:
    """Removing metadata or bytes (ITI-62, ITI-86): a professional removes only documents they
    authored, a connector those of its structure; patients cannot remove (they mask)."""
    if actor.kind in (PATIENT, REPRESENTATIVE):
        return "a patient masks documents; removing them is for their author"
    owns = _is_author if actor.kind == PROFESSIONAL else _from_structure
    for obj in objects:
        if isinstance(obj, DocumentEntry) and not owns(actor, obj):
            return f"document {obj.unique_id}: only its author may remove it"
    return ""


def check_update(actor: Actor, patient: str | int | None, *, services=None, request=None,
                 removing: Iterable[AnyObject] = ()) -> None:
    """`patient`: the patient's CX, or its registry key; `request`: the ITI-57 submission, if
    any; `removing`: the objects an ITI-62 / ITI-86 removes."""
    policy = Policy(actor, services)
    if isinstance(patient, str) and not patient.isdigit():
        pk = policy._pk(patient) if policy.registry is not None else None
        audit.note_patient(patient, pk)
    else:
        pk = int(patient) if patient is not None else None
        audit.note_patient("", pk)
    decision = policy.update(pk)
    if decision and request is not None and actor.kind in (PATIENT, REPRESENTATIVE):
        problem = patient_update_problem(policy, request)
        decision = deny(problem) if problem else decision
    elif decision and request is not None and actor.kind in (PROFESSIONAL, CONNECTOR):
        problem = author_update_problem(policy, request)
        decision = deny(problem) if problem else decision
    removing = list(removing)
    if decision and removing and actor.kind not in TRUSTED_KINDS:
        problem = removal_problem(actor, removing)
        decision = deny(problem) if problem else decision
    if not decision:
        audit.note_denied(decision.reason)
        raise AccessDenied(f"actor {actor.id} may not update metadata for {patient}: {decision.reason}")


def note_record_access(actor: Actor, patient_id: str, pk: int | None, *, services=None) -> None:
    """For the audit trail: a query names this patient; a refused record access is noted.

    Decides nothing by itself: the objects are still filtered one by one.
    """
    if audit.current() is None:
        return
    audit.note_patient(patient_id, pk)
    if pk is None or actor.kind in TRUSTED_KINDS or services is None:
        return
    p = Policy(actor, services)
    decision = read_decision(actor, p.state(pk), None, p.table, own_patient=p.own_patient(pk))
    if not decision:
        audit.note_denied(decision.reason)


def may_read(actor: Actor, obj: AnyObject, *, services=None) -> bool:
    policy = Policy(actor, services)
    decision = policy.read(obj)
    _note_read(policy, [obj] if decision else [], 0 if decision else 1, [obj])
    return bool(decision)


def visible(actor: Actor, objects: Iterable[AnyObject], *, services=None) -> list[AnyObject]:
    """The objects this actor may see; associations only when both ends are visible."""
    policy = Policy(actor, services)
    objects = list(objects)
    allowed = [o for o in objects if policy.read(o)]
    shown = {o.entry_uuid for o in allowed}
    hidden = {o.entry_uuid for o in objects} - shown
    result = [o for o in allowed if o.kind != "Association"
              or (o.source_uuid not in hidden and o.target_uuid not in hidden)]
    _note_read(policy, result, len(objects) - len(result), objects)
    return result


def _note_read(policy: Policy, shown: list[AnyObject], hidden: int, considered: list[AnyObject]) -> None:
    if audit.current() is None:
        return
    for obj in considered:
        cx = getattr(obj, "patient_id", "") or ""
        if cx:
            audit.note_patient(cx, policy._by_cx.get(cx))
    audit.note_objects([o.unique_id for o in shown if o.kind == "DocumentEntry"])
    if hidden:
        audit.note_filtered(hidden)


def may_see_patient(actor: Actor, patient_pk: int | None, *, services=None) -> bool:
    """May the actor see this patient's identity and demographics (FHIR Patient)?

    Professionals: when the record is open to them; patients and representatives: their
    own; connectors and administrators (identity management): every patient.
    """
    if actor.kind in TRUSTED_KINDS or actor.kind in (CONNECTOR, ADMIN):
        return True
    if services is None or patient_pk is None:
        return False
    p = Policy(actor, services)
    return bool(read_decision(actor, p.state(patient_pk), None, p.table, own_patient=p.own_patient(patient_pk)))


def check_patient_write(actor: Actor) -> None:
    """Creating or changing a patient's identity: the identity feed, connectors, administrators."""
    if actor.kind not in TRUSTED_KINDS and actor.kind not in (CONNECTOR, ADMIN):
        audit.note_denied("only connectors and administrators create or change patients")
        raise AccessDenied(f"actor {actor.id} may not create or change patients")
