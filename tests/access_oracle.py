"""The access rules of docs/access.md, written from that page alone: its tables (parsed here)
and its rules ("The record's state", "Document visibility", "Roles x document classes",
"Submitting and updating", "Visibility: one decision on the whole result", "Changing
documents: authors alone"), as the oracle of tests/integration/test_access_property.py.

Nothing here imports or calls `partage.access`: the code and this file are two readings of
the same page, so that a rule the code applies wrongly, or on the wrong data (a stale
version, a relation's far end, a count), shows as a disagreement. It works on the test's
own model of a record (`Version`, containers, associations), not on registry rows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from tests.access_doc import listed, table, yes

J08 = ("MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX")
MODES = ("normal", "bris_de_glace", "bdg-no-reason", "centre_15")
APPROVED, DEPRECATED, DELETED = "Approved", "Deprecated", "Deleted"

RECORD_ACCESS = table("record-access")
VISIBILITY = {row["actor"]: row for row in table("document-visibility")}
ROLE_CLASS = {row["profession"].split()[0]: {k: yes(v) for k, v in row.items() if k != "profession"}
              for row in table("role-class")}
# "Occupational medicine (specialties SM25, C41, CAPA11) is refused whatever the profession"
OCCUPATIONAL = set(listed(r"Occupational medicine \(specialties ([^)]*)\)"))
# "Patients and legal representatives submit class 90 only."
PATIENT_CLASSES = set(listed(r"Patients and legal representatives submit class (\S+) only"))
# The tables name professionals by their part: "`gp` is the médecin traitant; `author` a
# doctor who wrote the document; `doctor` another doctor"; nurse and pharmacist by profession.
PROFESSION_ROWS = {"10": "doctor", "60": "nurse", "21": "pharmacist"}

PROFESSIONAL, PATIENT, REPRESENTATIVE, CONNECTOR, ADMIN = (
    "professional", "patient", "representative", "connector", "admin")


@dataclass(frozen=True)
class Who:
    """The actor as the page describes it."""

    kind: str
    id: str = ""
    profession: str = ""
    specialty: str = ""
    mode: str = "normal"          # one of MODES
    structure: str = ""
    names: str | None = None      # the patient the credential names: "own", "other" or None


@dataclass(frozen=True)
class Record:
    status: str = "none"          # none | open | closed
    medecin_traitant: str = ""
    blocked: frozenset[str] = frozenset()
    bdg_opposed: bool = False


@dataclass
class Version:
    """One DocumentEntry (one version of a logical document) of the test's model."""

    uuid: str
    uid: str
    lid: str
    lineage: str                  # the logical document: ITI-57 versions and RPLC / XFRM_RPLC replacements
    seq: int                      # registration order
    codes: frozenset[str]         # its J08 confidentiality codes
    klass: str
    authors: frozenset[str]       # authorPerson ids and the legalAuthenticator id
    institutions: frozenset[str]  # author institutions (structure ids)
    status: str = APPROVED


@dataclass
class Oracle:
    who: Who
    record: Record
    versions: Mapping[str, Version]
    containers: Mapping[str, set[str]] = field(default_factory=dict)   # SubmissionSet / Folder -> its document members
    associations: Mapping[str, tuple[str, str]] = field(default_factory=dict)   # id -> (source, target)
    transforms: Sequence[tuple[str, str]] = ()    # XFRM associations: (the transform, the document it transforms)

    # --- the record ---------------------------------------------------------------------------
    def _row(self, name: str | None) -> dict[str, str] | None:
        for row in RECORD_ACCESS:
            if row["actor"] == name and row["mode"] in (self.who.mode, "any"):
                return row
        return None

    def _professional_row(self) -> str | None:
        who = self.who
        if who.specialty in OCCUPATIONAL:
            return "occupational"
        if who.id and who.id == self.record.medecin_traitant:
            return "gp"
        return PROFESSION_ROWS.get(who.profession)

    def record_ok(self) -> bool:
        """The record-access table, for this actor, mode and record state."""
        who, record = self.who, self.record
        if who.kind in (PATIENT, REPRESENTATIVE):
            row = self._row("patient" if who.kind == PATIENT else "guardian")
            own = who.names == "own"   # "patient: the patient who is / is represented by the actor"
        elif who.kind == CONNECTOR:
            row, own = self._row("connector"), True
        elif who.kind == ADMIN:
            row, own = self._row("admin"), True
        else:
            row = self._row(self._professional_row())
            # "A professional whose credential names a patient may act only on that patient's record."
            own = who.names != "other"
        if row is None or not own:
            return False
        if record.status != "open":
            return yes(row[record.status])
        columns = ["open"]
        if who.kind == PROFESSIONAL and who.id in record.blocked:   # blocks name professionals
            columns.append("blocked")
        if record.bdg_opposed:
            columns.append("opposed")
        return all(yes(row[c]) for c in columns)

    def identity_ok(self) -> bool:
        """Patient search and read: whoever may open the record, and connectors and administrators."""
        return self.record_ok() or self.who.kind in (CONNECTOR, ADMIN)

    # --- one version, by its own codes ------------------------------------------------------------
    def owns(self, v: Version) -> bool:
        """Changing documents: a professional named as author (or legal authenticator), a
        connector whose structure is an author institution."""
        if self.who.kind == PROFESSIONAL:
            return bool(self.who.id) and self.who.id in v.authors
        if self.who.kind == CONNECTOR:
            return bool(self.who.structure) and self.who.structure in v.institutions
        return False

    def _visibility_row(self, v: Version) -> str | None:
        who = self.who
        if who.kind == PATIENT:
            return "patient"
        if who.kind == REPRESENTATIVE:
            return "guardian"
        if who.kind == CONNECTOR:
            return "connector"
        if who.kind != PROFESSIONAL:
            return None
        if who.id == self.record.medecin_traitant:
            return "gp"
        if who.id in v.authors:
            return "author"
        return PROFESSION_ROWS.get(who.profession)

    def own_codes_ok(self, v: Version) -> bool:
        if not self.record_ok():
            return False
        if v.status == DELETED and not self.owns(v):
            return False     # "A deleted document ... is visible to its author only"
        row = VISIBILITY.get(self._visibility_row(v) or "")
        if row is None:
            return False
        if not all(yes(row[c]) for c in (v.codes or {"N"})):
            return False
        if self.who.kind == CONNECTOR and self.who.structure not in v.institutions:
            return False     # "A connector sees only documents whose author institution is its own structure"
        if self.who.kind == PROFESSIONAL:
            return ROLE_CLASS.get(self.who.profession, {}).get(v.klass, False)
        return True

    # --- visibility on the whole result --------------------------------------------------------
    def newest(self, lineage: str) -> list[Version]:
        """The newest versions of a lineage: those not Deprecated; when every one is, the last."""
        members = [v for v in self.versions.values() if v.lineage == lineage]
        live = [v for v in members if v.status != DEPRECATED]
        return live or ([max(members, key=lambda v: v.seq)] if members else [])

    def document_visible(self, v: Version, _seen: frozenset[str] = frozenset()) -> bool:
        """"judged by its own codes and by those of the newest versions of its lineage"; "A
        transform (XFRM) ... is visible only when the document it transforms is visible too,
        judged the same way"."""
        if not (self.own_codes_ok(v) and all(self.own_codes_ok(h) for h in self.newest(v.lineage))):
            return False
        for source, target in self.transforms:
            if source in self.versions and self.versions[source].lineage == v.lineage and target in self.versions:
                original = self.versions[target]
                if original.lineage in _seen | {v.lineage} or \
                        not self.document_visible(original, _seen | {v.lineage}):
                    return False
        return True

    def visible(self, oid: str, _seen: frozenset[str] = frozenset()) -> bool:
        """Any object of the model: document version, SubmissionSet or Folder, association."""
        if oid in self.versions:
            return self.document_visible(self.versions[oid])
        if oid in self.containers:
            docs = [d for d in self.containers[oid] if d in self.versions]
            return self.record_ok() and (not docs or any(self.visible(d) for d in docs))
        if oid in self.associations and oid not in _seen:
            return all(self.visible(end, _seen | {oid}) for end in self.associations[oid])
        return False

    def visible_ids(self) -> set[str]:
        return {o for o in [*self.versions, *self.containers, *self.associations] if self.visible(o)}

    # --- writing ---------------------------------------------------------------------------------
    def may_submit(self, klass: str, authors: Iterable[str], institutions: Iterable[str]) -> bool:
        """Submitting: record access, class and authorship (professional); structure
        (connector); class 90 to the own open record (patient, representative)."""
        who = self.who
        if who.kind == PROFESSIONAL:
            return (self.record_ok() and ROLE_CLASS.get(who.profession, {}).get(klass, False)
                    and who.id in set(authors))
        if who.kind == CONNECTOR:
            return self.record.status == "open" and who.structure in set(institutions)
        if who.kind in (PATIENT, REPRESENTATIVE):
            return who.names == "own" and self.record.status == "open" and klass in PATIENT_CLASSES
        return False

    def may_update(self) -> bool:
        """Updating needs record access (professionals), the own open record (patients,
        representatives), an open record (connectors)."""
        who = self.who
        if who.kind == PROFESSIONAL:
            return self.record_ok()
        if who.kind in (PATIENT, REPRESENTATIVE):
            return who.names == "own" and self.record.status == "open"
        if who.kind == CONNECTOR:
            return self.record.status == "open"
        return False

    def may_change(self, *documents: Version) -> bool:
        """Replace, transform, new version, status change, removal: authors alone."""
        return self.may_update() and all(self.owns(d) for d in documents)

    def may_mask(self, v: Version) -> bool:
        """The patient or a representative: the masking (MASQUE_PS) of a document they can see."""
        return (self.who.kind in (PATIENT, REPRESENTATIVE) and self.may_update()
                and self.document_visible(v))
