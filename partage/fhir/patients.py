"""FHIR Patient resources over the registry's patients (`partage.registry.patients`).

The registry knows a patient by CX identifiers and names it outside by an opaque public id.
A Patient created by FHIR (the MHD test kit loads its Test_Patients that way) is upserted
with its `urn:oid:` identifiers plus its FHIR logical id under `FHIR_ID_AUTHORITY`, so
`Patient/<id>` resolves to it; any other patient's FHIR id is its public id.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from sqlalchemy import Connection

from ..metadata.datatypes import CX, DTM, XPN
from ..mhd import datatypes as dt
from ..mhd.codes import system_of
from ..mhd.datatypes import cx_to_identifier, identifier_cx
from ..mhd.outcome import FhirError
from ..registry import patients as registry_patients
from ..registry.patients import FHIR_ID_AUTHORITY, PatientRecord, fhir_id_cx
from ..registry.search import patient_meta
from ..services import Services
from . import door
from .searchparams import token

Json = dict[str, Any]
_ID_RE = re.compile(r"[A-Za-z0-9\-.]{1,64}")


def patient_token(text: str) -> CX | None:
    """A `patient.identifier` search token (`system|value`, read as every token is: backslash
    escapes, searchparams.token) as a CX; None when the system is not an OID (no patient here
    has such an identifier); 400 without a value."""
    system, value = token(text)
    if not value:
        raise FhirError.one(400, f"patient.identifier {text!r} has no value (system|value)")
    return identifier_cx({"system": system or "", "value": value})


def reference_id(reference: str) -> str | None:
    """`Patient/x`, `<base>/Patient/x`, `<base>/Patient/x/_history/1` -> `x`; None for a
    Patient of another server (another base)."""
    parts = door.local_reference(reference).rstrip("/").split("/")
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
        return registry_patients.by_public_id(conn, rid)

    def record(self, rid: str) -> PatientRecord | None:
        with self.registry.read() as conn:
            pk = self.pk_of_id(conn, rid)
            return registry_patients.record(conn, pk) if pk is not None else None

    def resolve(self, ref: Json) -> CX | None:
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
            record = registry_patients.record(conn, pk)
        return record.xds_patient_id if record else None

    def searched(self, refs: list[str], tokens: list[str]) -> CX | None:
        """The patient a search names by its `patient` references and `patient.identifier`
        tokens. Every value is ANDed (FHIR R4 search.html#combining): values naming two
        patients, or one naming none, match no document (None: an empty page), never the last
        value's patient."""
        if len(refs) + len(tokens) == 1:
            return self.patient_id_for_search(reference_id(refs[0]) or refs[0]) if refs else self.identified(tokens[0])
        named = {self.xds_id_of(cx) if (cx := self.identified(token)) else None for token in tokens}
        named |= {self.patient_id_for_search(reference_id(ref) or ref) for ref in refs}
        return named.pop() if len(named) == 1 else None

    def identified(self, text: str) -> CX | None:
        """The patient a `patient.identifier` token names (the chained `Patient?identifier=`,
        search.html#chaining): `system|value` that identifier; a value alone (any system,
        search.html#token) the one patient holding it under any authority, and a 400
        XDSResultNotSinglePatient when several do (one patient per search, as ITI-18)."""
        system, value = token(text)
        if system is not None or not value:
            return patient_token(text)
        with self.registry.read() as conn:
            pks = registry_patients.patient_pks_by_value(conn, value)
            if len(pks) > 1:
                raise FhirError.one(400, f"patient.identifier {text!r} (any system) names several patients; "
                                    "give the system of the identifier", "not-supported", "XDSResultNotSinglePatient")
            record = registry_patients.record(conn, pks.pop()) if pks else None
        return record.xds_patient_id if record else None

    def xds_id_of(self, cx: CX) -> CX | None:
        """The XDS patient id of the patient known by `cx` (any of its identifiers), else None."""
        with self.registry.read() as conn:
            pk = self.registry.patient_pk(conn, cx)
            record = registry_patients.record(conn, pk) if pk is not None else None
        return record.xds_patient_id if record else None

    def patient_id_for_search(self, rid: str) -> CX | None:
        record = self.record(rid)
        return record.xds_patient_id if record else None

    def reference_for(self, cx: CX) -> Json:
        """How a DocumentReference/List points at its patient: by id, and by identifier."""
        identifier = cx_to_identifier(cx)
        identifier.pop("extension", None)
        with self.registry.read() as conn:
            pk = self.registry.patient_pk(conn, cx)
            record = registry_patients.record(conn, pk) if pk is not None else None
        rid = record.fhir_id if record else ""
        out: Json = {"identifier": identifier}
        if rid:
            out["reference"] = f"Patient/{rid}"
        return out

    # --- reads -------------------------------------------------------------------------------
    def meta(self, pk: int) -> Any:
        """(revision, updated_at) of a patient's row."""
        with self.registry.read() as conn:
            return patient_meta(conn, pk)

    def resource(self, record: PatientRecord, row: Any = None) -> Json:
        """The Patient; `row` (revision, updated_at) gives meta.versionId and meta.lastUpdated."""
        stored = record.demographics.get("fhir")
        res: Json = dict(stored) if isinstance(stored, dict) else _from_feed(record.demographics)
        res["resourceType"] = "Patient"
        res["id"] = record.fhir_id
        known = {(i.get("system"), i.get("value")) for i in res.get("identifier", [])}
        for cx in record.identifiers:
            if cx.assigning_authority.universal_id == FHIR_ID_AUTHORITY:
                continue
            ident = {"system": system_of(cx.assigning_authority.universal_id), "value": cx.id}
            if (ident["system"], ident["value"]) not in known:
                res.setdefault("identifier", []).append(ident)
        res.pop("meta", None)
        if row is not None:
            res["meta"] = {"versionId": str(row.revision or 1),
                           "lastUpdated": dt.dtm_to_instant(DTM(row.updated_at[:14])) or ""}
        return res

    # --- writes ------------------------------------------------------------------------------
    def save(self, resource: Json, rid: str | None = None) -> tuple[str, bool]:
        """Create (POST, rid None) or create-or-update (PUT); returns (id, created).

        A PUT's `If-Match` is judged in the write's own transaction (door.check_if_match). An
        identifier that already names another patient is a 409: a create or an update at a new
        id never folds into, nor rewrites, another Patient (FHIR R4 http.html#create: the
        Location names the resource created; #read: a read answers the id asked for)."""
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
        demographics = {"name": XPN(name.get("family", ""), " ".join(name.get("given", []))).format(),
                        "birth_date": (resource.get("birthDate") or "").replace("-", ""),
                        "sex": resource.get("gender", ""), "event": "FHIR", "fhir": stored}
        with self.registry.write() as conn:
            existing = self.pk_of_id(conn, rid)
            row = patient_meta(conn, existing) if existing is not None else None
            door.check_if_match(str(row.revision or 1) if row is not None else None, f"Patient/{rid}")
            if existing is not None:
                record = registry_patients.record(conn, existing)
                if record and fhir_id_cx(rid) not in record.identifiers:
                    identifiers.append(fhir_id_cx(rid))
            for cx in identifiers[1:]:
                other = self.registry.patient_pk(conn, cx)
                if other is not None and other != existing:
                    raise FhirError.one(409, f"identifier {cx.format()} belongs to another patient", "duplicate")
            self.registry.upsert_patient(conn, identifiers, demographics)
        return rid, existing is None


def _from_feed(demo: Json) -> Json:
    res: Json = {}
    xpn = XPN.parse(demo.get("name") or "")
    family, given = xpn.family_name, xpn.given_name
    if family or given:
        res["name"] = [{k: v for k, v in (("family", family), ("given", [given] if given else None)) if v}]
    birth = demo.get("birth_date") or ""
    if len(birth) >= 8 and birth[:8].isdigit():
        res["birthDate"] = f"{birth[:4]}-{birth[4:6]}-{birth[6:8]}"
    sex = {"M": "male", "F": "female", "U": "unknown", "O": "other"}.get(demo.get("sex") or "")
    if sex:
        res["gender"] = sex
    return res
