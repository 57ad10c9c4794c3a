"""FHIR Patient resources over the registry's patients (the ITI-8 feed's table).

The registry knows a patient by CX identifiers. A Patient created by FHIR (the MHD test
kit loads its Test_Patients that way) is upserted with its `urn:oid:` identifiers plus
one more: its FHIR logical id under `FHIR_ID_AUTHORITY`, so `Patient/<id>` resolves with
the registry's own `patient_pk`. A patient sent by the feed has no such id and gets a
derived one, `<authority OID>-<id>`, that resolves without being stored.

`_patient_rows` and `_search_rows` read the registry's patient tables directly: they
belong in `Registry` (proposed there as `patient_record` / `find_patients`) and are kept
small here until it has them.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, select

from ..metadata.datatypes import CX, HD, DatatypeError, is_oid
from ..registry import schema
from ..services import Services
from .codes import scheme_of, system_of
from .ids import numeric_id
from .outcome import FhirError

Json = dict[str, Any]
# "FHIR Patient logical ids of this Partage server", in the UUID-derived arc 2.25.
FHIR_ID_AUTHORITY = "2.25.211310386435413264734375473219935735847"
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


@dataclass
class PatientRecord:
    pk: int
    identifiers: list[str] = field(default_factory=list)   # CX, in registration order
    demographics: Json = field(default_factory=dict)

    @property
    def fhir_id(self) -> str:
        for cx in self.identifiers:
            parsed = CX.parse(cx, strict=False)
            if parsed.assigning_authority.universal_id == FHIR_ID_AUTHORITY:
                return parsed.id
        for cx in self.identifiers:
            derived = derived_id(cx)
            if derived:
                return derived
        return f"pk-{self.pk}"

    @property
    def xds_patient_id(self) -> str:
        """The CX that XDS metadata carries: the first identifier that is not our FHIR id."""
        for cx in self.identifiers:
            if CX.parse(cx, strict=False).assigning_authority.universal_id != FHIR_ID_AUTHORITY:
                return cx
        return ""


def fhir_id_cx(rid: str) -> str:
    return CX(rid, HD.iso(FHIR_ID_AUTHORITY)).format()


def derived_id(cx_text: str) -> str:
    try:
        cx = CX.parse(cx_text, strict=False)
    except DatatypeError:
        return ""
    rid = f"{cx.assigning_authority.universal_id}-{cx.id}"
    return rid if cx.assigning_authority.universal_id and _ID_RE.fullmatch(rid) else ""


def identifier_cx(identifier: Json) -> str | None:
    """A FHIR Identifier whose system is an OID, as the registry's CX; None otherwise."""
    authority = scheme_of(identifier.get("system", "") or "")
    value = identifier.get("value", "") or ""
    if not value or not is_oid(authority):
        return None
    return CX(value, HD.iso(authority)).format()


def reference_id(reference: str) -> str | None:
    """`Patient/x`, `<base>/Patient/x`, `<base>/Patient/x/_history/1` -> `x`."""
    parts = reference.rstrip("/").split("/")
    if "_history" in parts:
        parts = parts[:parts.index("_history")]
    if len(parts) >= 2 and parts[-2] == "Patient":
        return parts[-1]
    return None


class Patients:
    """Patient lookups and writes for one request (each call is its own transaction)."""

    def __init__(self, services: Services) -> None:
        self.registry = services.registry

    # --- resolution ------------------------------------------------------------------------
    def pk_of_id(self, conn: Connection, rid: str) -> int | None:
        pk = self.registry.patient_pk(conn, fhir_id_cx(rid))
        if pk is not None:
            return pk
        if rid.startswith("pk-") and numeric_id(rid[3:]) is not None:
            row = self._patient_rows(conn, numeric_id(rid[3:]))
            return row.pk if row else None
        authority, _, value = rid.partition("-")
        if is_oid(authority) and value:
            return self.registry.patient_pk(conn, CX(value, HD.iso(authority)).format())
        return None

    def record(self, rid: str) -> PatientRecord | None:
        with self.registry.read() as conn:
            pk = self.pk_of_id(conn, rid)
            return self._patient_rows(conn, pk) if pk is not None else None

    def resolve(self, ref: Json) -> str | None:
        """A subject Reference -> the XDS patient id (CX) of a patient known here, else None."""
        with self.registry.read() as conn:
            target = ref.get("reference") or ""
            if target:
                rid = reference_id(target)
                pk = self.pk_of_id(conn, rid) if rid else None
            else:
                cx = identifier_cx(ref.get("identifier") or {})
                pk = self.registry.patient_pk(conn, cx) if cx else None
            if pk is None:
                return None
            record = self._patient_rows(conn, pk)
        return record.xds_patient_id if record else None

    def patient_id_for_search(self, rid: str) -> str | None:
        record = self.record(rid)
        return record.xds_patient_id if record else None

    def reference_for(self, cx_text: str) -> Json:
        """How a DocumentReference/List points at its patient: by id, and by identifier."""
        from .datatypes import cx_to_identifier

        identifier = cx_to_identifier(cx_text)
        identifier.pop("extension", None)
        with self.registry.read() as conn:
            pk = self.registry.patient_pk(conn, cx_text)
            record = self._patient_rows(conn, pk) if pk is not None else None
        rid = record.fhir_id if record else derived_id(cx_text)
        out: Json = {"identifier": identifier}
        if rid:
            out["reference"] = f"Patient/{rid}"
        return out

    # --- reads -------------------------------------------------------------------------------
    def _patient_rows(self, conn: Connection, pk: int) -> PatientRecord | None:
        p, t = schema.patients, schema.patient_identifiers
        row = conn.execute(select(p.c.pk, p.c.demographics).where(p.c.pk == pk)).first()
        if row is None:
            return None
        ids = conn.execute(select(t.c.value, t.c.authority, t.c.id_type)
                           .where(t.c.patient_pk == pk).order_by(t.c.pk)).all()
        return PatientRecord(pk, [CX(i.value, HD.iso(i.authority), i.id_type or "").format() for i in ids],
                             json.loads(row.demographics or "{}"))

    def resource(self, record: PatientRecord) -> Json:
        stored = record.demographics.get("fhir")
        res: Json = dict(stored) if isinstance(stored, dict) else _from_feed(record.demographics)
        res["resourceType"] = "Patient"
        res["id"] = record.fhir_id
        known = {(i.get("system"), i.get("value")) for i in res.get("identifier", [])}
        for cx_text in record.identifiers:
            cx = CX.parse(cx_text, strict=False)
            if cx.assigning_authority.universal_id == FHIR_ID_AUTHORITY:
                continue
            ident = {"system": system_of(cx.assigning_authority.universal_id), "value": cx.id}
            if (ident["system"], ident["value"]) not in known:
                res.setdefault("identifier", []).append(ident)
        res.pop("meta", None)
        return res

    def search(self, params: dict[str, list[str]]) -> list[Json]:
        """identifier, _id, family, given, birthdate (exact, case-insensitive names)."""
        with self.registry.read() as conn:
            pks: set[int] | None = None
            for value in params.get("identifier", []):
                found = set()
                for alternative in value.split(","):
                    system, _, ident = alternative.rpartition("|")
                    cx = identifier_cx({"system": system, "value": ident})
                    pk = self.registry.patient_pk(conn, cx) if cx else None
                    if pk is not None:
                        found.add(pk)
                pks = found if pks is None else pks & found
            for rid in params.get("_id", []):
                pk = self.pk_of_id(conn, rid)
                found = {pk} if pk is not None else set()
                pks = found if pks is None else pks & found
            records = [self._patient_rows(conn, pk) for pk in sorted(pks)] if pks is not None \
                else self._search_rows(conn)
        out = []
        for record in records:
            if record is None:
                continue
            res = self.resource(record)
            if _matches(res, params):
                out.append(res)
        return out

    def _search_rows(self, conn: Connection) -> list[PatientRecord]:
        p = schema.patients
        pks = conn.execute(select(p.c.pk).where(p.c.merged_into.is_(None)).order_by(p.c.pk).limit(1000))
        return [self._patient_rows(conn, pk) for pk in pks.scalars().all()]

    # --- writes ------------------------------------------------------------------------------
    def save(self, resource: Json, rid: str | None = None) -> tuple[str, bool]:
        """Create (POST, rid None) or create-or-update (PUT); returns (id, created)."""
        created = rid is None
        rid = rid or uuid.uuid4().hex
        if not _ID_RE.fullmatch(rid):
            raise FhirError.one(400, f"{rid!r} is not a valid FHIR id")
        identifiers = [fhir_id_cx(rid)]
        for ident in resource.get("identifier", []) or []:
            cx = identifier_cx(ident)
            if cx:
                identifiers.append(cx)
        stored = {k: v for k, v in resource.items() if k not in ("id", "meta", "text")}
        name = (resource.get("name") or [{}])[0]
        demographics = {"name": f"{name.get('family', '')}^{' '.join(name.get('given', []))}",
                        "birth_date": (resource.get("birthDate") or "").replace("-", ""),
                        "sex": resource.get("gender", ""), "event": "FHIR", "fhir": stored}
        with self.registry.write() as conn:
            existing = self.pk_of_id(conn, rid)
            if existing is not None:
                created = False
                record = self._patient_rows(conn, existing)
                if record and fhir_id_cx(rid) not in record.identifiers:
                    identifiers.append(fhir_id_cx(rid))
            for cx in identifiers[1:]:
                other = self.registry.patient_pk(conn, cx)
                if other is not None and existing is not None and other != existing:
                    raise FhirError.one(409, f"identifier {cx} belongs to another patient", "conflict")
            self.registry.upsert_patient(conn, identifiers, demographics)
        return rid, created


def _from_feed(demo: Json) -> Json:
    res: Json = {}
    family, _, given = (demo.get("name") or "").partition("^")
    given = given.split("^")[0]
    if family or given:
        res["name"] = [{k: v for k, v in (("family", family), ("given", [given] if given else None)) if v}]
    birth = demo.get("birth_date") or ""
    if len(birth) >= 8 and birth[:8].isdigit():
        res["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}"
    sex = {"M": "male", "F": "female", "U": "unknown", "O": "other"}.get(demo.get("sex") or "")
    if sex:
        res["gender"] = sex
    return res


def _matches(res: Json, params: dict[str, list[str]]) -> bool:
    names = res.get("name") or []
    families = {(n.get("family") or "").lower() for n in names}
    givens = {g.lower() for n in names for g in n.get("given") or []}
    for value in params.get("family", []):
        if not any(f.startswith(v.lower()) for v in value.split(",") for f in families):
            return False
    for value in params.get("given", []):
        if not any(g.startswith(v.lower()) for v in value.split(",") for g in givens):
            return False
    for value in params.get("birthdate", []):
        if res.get("birthDate") not in [v.removeprefix("eq") for v in value.split(",")]:
            return False
    return True
