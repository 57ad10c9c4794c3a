"""The patients' search index: name parts and birth date, as Patient search compares them.

Rows of `patient_index`, rebuilt whenever a patient's demographics are written
(`patients.upsert`): one per family name and per given name (normalized, and as given), one
for the birth date as the range of seconds it covers, so that `birthdate=1970` and
`birthdate=ge1970-05` compare ranges on both sides. Demographics come from the ITI-8 feed
(`name`: an XPN, `birth_date`: DTM digits) or from a FHIR Patient (`fhir`: the resource as
stored, whose every name and given name is indexed).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, delete

from ..metadata.datatypes import DTM, XPN, DatatypeError
from . import schema
from .search_index import date_range, normalize

FAMILY, GIVEN, BIRTHDATE = "family", "given", "birthdate"


def _names(demographics: dict[str, Any]) -> list[tuple[str, list[str]]]:
    """(family, [given...]) of every name the demographics hold."""
    stored = demographics.get("fhir")
    if isinstance(stored, dict) and isinstance(stored.get("name"), list):
        out = []
        for name in stored["name"]:
            if isinstance(name, dict):
                given = [g for g in name.get("given") or [] if isinstance(g, str)]
                family = name.get("family") if isinstance(name.get("family"), str) else ""
                out.append((family or "", given))
        return out
    try:
        xpn = XPN.parse(demographics.get("name") or "")
    except (DatatypeError, ValueError):
        return []
    names = f"{xpn.given_name} {xpn.further_given_names}"
    return [(xpn.family_name, [g for g in names.split(" ") if g])]


def _birth(demographics: dict[str, Any]) -> DTM | None:
    stored = demographics.get("fhir")
    text = ""
    if isinstance(stored, dict) and isinstance(stored.get("birthDate"), str):
        text = stored["birthDate"].replace("-", "")
    else:
        text = str(demographics.get("birth_date") or "")
    try:
        return DTM(text[:8]) if text else None
    except DatatypeError:
        return None


def index_rows(demographics: dict[str, Any]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    seen: set[tuple[str, str]] = set()
    for family, given in _names(demographics):
        for attribute, value in [(FAMILY, family), *((GIVEN, g) for g in given)]:
            if value and (attribute, value) not in seen:
                seen.add((attribute, value))
                rows.append({"attribute": attribute, "value_norm": normalize(value), "value_exact": value[:200]})
    birth = _birth(demographics)
    if birth is not None:
        low, high = date_range(birth)
        rows.append({"attribute": BIRTHDATE, "low": low, "high": high})
    return rows


def reindex(conn: Connection, patient_pk: int, demographics: dict[str, Any]) -> None:
    t = schema.patient_index
    conn.execute(delete(t).where(t.c.patient_pk == patient_pk))
    rows = index_rows(demographics)
    if rows:
        conn.execute(t.insert(), [{"patient_pk": patient_pk, "value_norm": None, "value_exact": None,
                                   "low": None, "high": None, **r} for r in rows])
