"""The access rules of the DMP as pure functions: who may open a record, see a document,
submit, and change or remove a document.

docs/access.md is the human form of these rules and of the tables below. Nothing here
reads a database: the caller passes the patient's record state (`RecordState`, kept by
the registry), the document (a model object) and the time. The one place that applies the
read rules to a query's result is `partage.access.gate`; the flows (ingest, lifecycle) ask
`submit_decision`, `modify_decision` and `masking_problem` before they write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ..metadata.datatypes import DTM, DatatypeError
from ..metadata.model import Author, AvailabilityStatus, Code, DocumentEntry
from ..registry.access_state import NONE, OPEN, RecordState
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

TRUSTED_KINDS = frozenset({INSECURE_DEV, SYSTEM})
PATIENT_KINDS = frozenset({PATIENT, REPRESENTATIVE})

# Confidentiality codes of the DMP (JDV J08, system 1.2.250.1.213.1.1.4.13).
CONFIDENTIALITY_SYSTEM = "1.2.250.1.213.1.1.4.13"
MASQUE_PS = "MASQUE_PS"
INVISIBLE_PATIENT = "INVISIBLE_PATIENT"
INVISIBLE_REPRESENTANTS_LEGAUX = "INVISIBLE_REPRESENTANTS_LEGAUX"
# The codes a replacement keeps from the document it replaces when it does not restate them: the
# patient's mask (every door: `replacement_codes`); on the HL7 feed without MODIF_CONF_CODE=Y, every
# MetaDMPMSS confidentiality flag (docs/hl7-feed.md).
PATIENT_MASK = frozenset({MASQUE_PS})
SUBMITTER_FLAGS = frozenset({MASQUE_PS, INVISIBLE_PATIENT, INVISIBLE_REPRESENTANTS_LEGAUX})
# Optional DocumentEntry slot: until when (DTM) a document stays hidden from the patient.
RELEASE_SLOT = "invisiblePatientUntil"
MAX_HIDDEN_DAYS = 15
# What a patient or legal representative may change on a document: its masking.
PATIENT_MAY_TOGGLE = frozenset({MASQUE_PS})

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
    def load(cls, path: str | Path) -> AccessTable:
        """The defaults, with the keys of a JSON file replacing them (ValueError if unusable)."""
        if not path:
            return DEFAULT_TABLE
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"access matrix {path}: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError(f"access matrix {path}: expected a JSON object")
        base = cls()
        sets: dict[str, frozenset[str]] = {}
        for key in ("forbidden_specialties", "forbidden_sectors", "emergency_professions",
                    "regulator_professions", "patient_submit_classes"):
            value = data.get(key, getattr(base, key))
            if not isinstance(value, list | frozenset) or not all(isinstance(v, str) for v in value):
                raise ValueError(f"access matrix {path}: {key} must be a list of codes")
            sets[key] = frozenset(value)
        classes = data.get("classes")
        if classes is None:
            table = base.classes
        elif isinstance(classes, dict) and all(v == ALL or isinstance(v, list) for v in classes.values()):
            table = {str(k): (ALL if v == ALL else frozenset(v)) for k, v in classes.items()}
        else:
            raise ValueError(f'access matrix {path}: classes must map professions to a list or "*"')
        return cls(classes=table, **sets)


DEFAULT_TABLE = AccessTable()


@dataclass(frozen=True)
class Decision:
    allowed: bool
    reason: str = ""

    def __bool__(self) -> bool:
        return self.allowed


PERMIT = Decision(True)


def deny(reason: str) -> Decision:
    return Decision(False, reason)


# --- facts about a document and an actor ----------------------------------------------------
def confidentiality(doc: DocumentEntry) -> set[str]:
    return {c.code for c in doc.confidentiality_codes if c.scheme == CONFIDENTIALITY_SYSTEM}


def is_author(actor: Actor, doc: DocumentEntry) -> bool:
    """The credential's id is an authorPerson or the legalAuthenticator of the document."""
    if not actor.id:
        return False
    if any(a.person is not None and a.person.id_number == actor.id for a in doc.authors):
        return True
    return doc.legal_authenticator is not None and doc.legal_authenticator.id_number == actor.id


def from_structure(actor: Actor, doc: DocumentEntry) -> bool:
    """The actor's structure is an author institution of the document (XON.10, or XON.3)."""
    if not actor.structure:
        return False
    return any(actor.structure in (xon.organization_identifier, xon.id_number)
               for author in doc.authors for xon in author.institutions)


def owns(actor: Actor, doc: DocumentEntry) -> bool:
    """Author of the document: the professional (or patient) named as its author, or the
    connector of the structure that authored it."""
    return from_structure(actor, doc) if actor.kind == CONNECTOR else is_author(actor, doc)


def _release(doc: DocumentEntry) -> datetime | None:
    text = (doc.extra_slots.get(RELEASE_SLOT) or [""])[0]
    try:
        return DTM.parse(text).to_datetime() if text else None
    except DatatypeError:
        return None


def hidden_from_patient(doc: DocumentEntry, now: datetime) -> bool:
    """INVISIBLE_PATIENT, unless its release date (at most 15 days after creation) has passed."""
    if INVISIBLE_PATIENT not in confidentiality(doc):
        return False
    until = _release(doc)
    if until is None:
        return True
    if doc.creation_time is not None:
        until = min(until, doc.creation_time.to_datetime() + timedelta(days=MAX_HIDDEN_DAYS))
    return now < until


# --- the record -------------------------------------------------------------------------------
def professional_record_access(actor: Actor, record: RecordState, table: AccessTable,
                               own_patient: bool | None = None) -> Decision:
    """May this professional open this patient's record at all (before document rules)?"""
    if actor.specialty in table.forbidden_specialties or actor.sector in table.forbidden_sectors:
        return deny(f"role {actor.role}/{actor.specialty or actor.sector} may never access the DMP")
    if not table.allowed_classes(actor.role):
        return deny(f"profession {actor.role or '(none)'} has no access to the DMP")
    if record.status == NONE:
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


def record_decision(actor: Actor, record: RecordState, table: AccessTable, *,
                    own_patient: bool | None = None) -> Decision:
    """May the actor open this patient's record (identity, submission sets, folders)?

    `own_patient`: whether the patient the credential names (or the patient the actor is)
    is this record's patient; None when the credential names none.
    """
    kind = actor.kind
    if kind in TRUSTED_KINDS:
        return PERMIT
    if kind in PATIENT_KINDS:
        return PERMIT if record.patient_pk is not None and own_patient else deny("not the actor's own record")
    if kind == CONNECTOR:
        return PERMIT if record.status == OPEN else deny("the patient's record is not open")
    if kind == PROFESSIONAL:
        return professional_record_access(actor, record, table, own_patient)
    if kind == ADMIN:
        return deny("administrators read the audit trail, not records")
    return deny(f"actor kind {kind!r} has no access")


def identity_decision(actor: Actor, record: RecordState, table: AccessTable, *,
                      own_patient: bool | None = None) -> Decision:
    """May the actor see the patient's identity (name, birth date, INS)? Whoever may open the
    record; connectors and administrators too (identity management, docs/access.md)."""
    if actor.kind in (CONNECTOR, ADMIN):
        return PERMIT
    return record_decision(actor, record, table, own_patient=own_patient)


def may_write_identity(actor: Actor) -> Decision:
    """Creating or changing a patient's identity: the identity feed, connectors, administrators."""
    if actor.kind in TRUSTED_KINDS or actor.kind in (CONNECTOR, ADMIN):
        return PERMIT
    return deny("only connectors and administrators create or change patients")


def class_allowed(actor: Actor, doc: DocumentEntry, table: AccessTable) -> bool:
    allowed = table.allowed_classes(actor.role)
    if allowed == ALL:
        return True
    return doc.class_code is not None and doc.class_code.code in allowed


def _class_name(doc: DocumentEntry) -> str:
    return doc.class_code.code if doc.class_code else "(none)"


# --- reading one document -------------------------------------------------------------------
def read_decision(actor: Actor, record: RecordState, doc: DocumentEntry | None, table: AccessTable,
                  *, own_patient: bool | None = None, now: datetime | None = None) -> Decision:
    """May `actor` see `doc` (None: the record itself), judged by this version's own codes?

    The gate also asks it of the newest versions of the document's lineage: a document is
    shown only if every one of them may be shown (docs/access.md, "Versions").
    """
    record_ok = record_decision(actor, record, table, own_patient=own_patient)
    if not record_ok or doc is None or actor.kind in TRUSTED_KINDS:
        return record_ok
    if doc.availability_status == AvailabilityStatus.DELETED and not owns(actor, doc):
        return deny("a deleted document is kept for its author and the audit trail only")
    codes = confidentiality(doc)
    if actor.kind in PATIENT_KINDS:
        if hidden_from_patient(doc, now or datetime.now(UTC)):
            return deny("document invisible to the patient")
        if actor.kind == REPRESENTATIVE and INVISIBLE_REPRESENTANTS_LEGAUX in codes:
            return deny("document invisible to legal representatives")
        return PERMIT
    if actor.kind == CONNECTOR:
        return PERMIT if from_structure(actor, doc) else deny(
            "a connector reads only its own structure's documents")
    if not class_allowed(actor, doc, table):
        return deny(f"profession {actor.role} may not read class {_class_name(doc)}")
    if MASQUE_PS in codes and not (is_author(actor, doc) or (
            record.medecin_traitant and actor.id == record.medecin_traitant)):
        return deny("document masked to professionals")
    return PERMIT


def tells_withheld(actor: Actor) -> bool:
    """May a view say that some documents are not shown (never how many or which)? To a
    professional or a connector, yes; not to the patient or a representative, whom it would
    tell that a document invisible to them exists."""
    return actor.kind not in PATIENT_KINDS


# --- writing ------------------------------------------------------------------------------------
def submit_decision(actor: Actor, record: RecordState, documents: list[DocumentEntry],
                    table: AccessTable, *, own_patient: bool | None = None) -> Decision:
    """May the actor file these documents in this record? The record as for any change, then
    each document: a patient's class, a connector's structure, a professional's class and
    authorship."""
    kind = actor.kind
    if kind not in TRUSTED_KINDS | PATIENT_KINDS | {CONNECTOR, PROFESSIONAL}:
        return deny(f"actor kind {kind!r} may not submit documents")
    decision = update_decision(actor, record, table, own_patient=own_patient)
    if not decision or kind in TRUSTED_KINDS:
        return decision
    for doc in documents:
        if kind in PATIENT_KINDS and (doc.class_code is None
                                      or doc.class_code.code not in table.patient_submit_classes):
            return deny("a patient may only submit documents of class "
                        + ", ".join(sorted(table.patient_submit_classes)))
        if kind == CONNECTOR and not from_structure(actor, doc):
            return deny(f"document {doc.unique_id}: the authenticated structure is not its "
                        "author institution")
        if kind == PROFESSIONAL and not class_allowed(actor, doc, table):
            return deny(f"profession {actor.role} may not submit class {_class_name(doc)}")
        if kind == PROFESSIONAL and not is_author(actor, doc):
            return deny(f"document {doc.unique_id}: the authenticated professional is not "
                        "one of its authors")
    return PERMIT


def update_decision(actor: Actor, record: RecordState, table: AccessTable, *,
                    own_patient: bool | None = None) -> Decision:
    """May the actor change anything in this record (before the per-document author rule)?"""
    kind = actor.kind
    if kind in TRUSTED_KINDS:
        return PERMIT
    if kind in PATIENT_KINDS:
        if record.patient_pk is None or not own_patient:
            return deny("not the actor's own record")
        return PERMIT if record.status == OPEN else deny("the patient's record is not open")
    if kind == CONNECTOR:
        return PERMIT if record.status == OPEN else deny("the patient's record is not open")
    if kind == PROFESSIONAL:
        return professional_record_access(actor, record, table, own_patient)
    return deny(f"actor kind {kind!r} may not change documents")


def modify_decision(actor: Actor, doc: DocumentEntry, action: str) -> Decision:
    """Authors alone change documents: replace, transform, new version, status change,
    removal (`action` names it in the reason). The patient's masking goes through
    `masking_problem` instead."""
    if actor.kind in TRUSTED_KINDS:
        return PERMIT
    if actor.kind == ADMIN:
        return deny(f"administrators do not {action} documents")
    if owns(actor, doc):
        return PERMIT
    # The reason names no document: the target may be one the actor may not see.
    if actor.kind in PATIENT_KINDS:
        return deny(f"a patient masks documents; only a document's author may {action} it")
    return deny(f"only the document's author may {action} it")


# Attributes a patient's new version may not change (everything but masking and identity).
_NOT_COMPARED = frozenset({"entry_uuid", "availability_status", "version", "lid",
                           "confidentiality_codes", "home_community_id"})
# Facts about the bytes: a new version may leave them out (the registry keeps the stored ones).
_MAY_OMIT = frozenset({"hash", "size", "repository_unique_id"})


def _meaning(value: object) -> object:
    """An attribute without its wire artefacts: a code is its concept (not its display name),
    an author is not the id of the ebRIM Classification that carried it."""
    if isinstance(value, Code):
        return (value.code, value.scheme)
    if isinstance(value, Author):
        return replace(value, classification_id="")
    if isinstance(value, list):
        return [_meaning(v) for v in value]
    return value


def masking_problem(new: DocumentEntry, previous: DocumentEntry) -> str:
    """A patient (or representative) manages masking, nothing else: the new version may only
    add or remove MASQUE_PS on the previous one, every other attribute unchanged."""
    for name in DocumentEntry.__dataclass_fields__:
        if name in _NOT_COMPARED or (name in _MAY_OMIT and not getattr(new, name)):
            continue
        if _meaning(getattr(new, name)) != _meaning(getattr(previous, name)):
            return "a patient may only change the masking (confidentiality codes) of a document"
    changed = {(c.code, c.scheme) for c in previous.confidentiality_codes} ^ \
              {(c.code, c.scheme) for c in new.confidentiality_codes}
    if any(scheme != CONFIDENTIALITY_SYSTEM or code not in PATIENT_MAY_TOGGLE for code, scheme in changed):
        return "a patient may only add or remove MASQUE_PS"
    return ""


def masque_ps() -> Code:
    return Code(MASQUE_PS, CONFIDENTIALITY_SYSTEM, "Masqué aux professionnels de santé")


def replacement_codes(replacement: DocumentEntry, replaced: DocumentEntry,
                      kept: frozenset[str] = PATIENT_MASK) -> list[Code]:
    """The confidentiality codes a replacement (RPLC, XFRM_RPLC) is registered with: its own,
    and those of `kept` the document it replaces carries. MASQUE_PS by default: the mask is the
    patient's choice (whoever wrote it on the document, the registry cannot tell): a replacement
    is the same logical document, so it keeps it; it is lifted by an explicit new version
    (ITI-57, PDSm PATCH), never by the side effect of a replacement that does not say it
    (docs/access.md, "Document visibility"). The HL7 feed's replacement without
    MODIF_CONF_CODE=Y keeps every MetaDMPMSS flag (`SUBMITTER_FLAGS`): it says it changes none."""
    codes = list(replacement.confidentiality_codes)
    own = confidentiality(replacement)
    for code in replaced.confidentiality_codes:
        if code.scheme == CONFIDENTIALITY_SYSTEM and code.code in kept and code.code not in own:
            codes.append(masque_ps() if code.code == MASQUE_PS else code)
            own.add(code.code)
    return codes
