"""Model objects to and from plain JSON-able dicts: the registry's stored form.

Pure functions, no I/O. Field names are the dataclass names, so a new attribute is
stored without touching this module; unknown keys are ignored on the way back so an
older server reads a newer row. HL7 values are stored as their HL7 text (`format()`),
which is also the form rows written before the model was typed hold.
"""

from __future__ import annotations

from dataclasses import fields
from enum import StrEnum
from functools import lru_cache
from typing import Any

from .datatypes import CX, DTM, XCN, XON, XTN, Recipient
from .model import (
    AnyObject,
    Association,
    AssociationType,
    Author,
    AvailabilityStatus,
    Code,
    DocumentEntry,
    Folder,
    ObjectType,
    SubmissionSet,
)

CLASSES: dict[str, type[AnyObject]] = {c.kind: c for c in (DocumentEntry, SubmissionSet, Folder, Association)}
_FIELD_NAMES = {cls: {f.name for f in fields(cls)} for cls in CLASSES.values()}
_DEFAULTS = {cls: {f.name: getattr(cls(), f.name) for f in fields(cls)} for cls in CLASSES.values()}


def _code_out(code: Code) -> list[str]:
    return [code.code, code.scheme, code.display]


def _code_in(value: list[str] | None) -> Code | None:
    return Code(*value) if value else None


_HL7_SINGLE = {"patient_id": CX, "source_patient_id": CX, "legal_authenticator": XCN,
               "creation_time": DTM, "service_start_time": DTM, "service_stop_time": DTM,
               "submission_time": DTM, "last_update_time": DTM}
_HL7_LIST = {"reference_ids": CX, "intended_recipients": Recipient}
HL7Value = CX | XCN | XON | XTN | DTM | Recipient
_AUTHOR_HL7 = {"person": XCN, "institutions": XON, "telecoms": XTN}


@lru_cache(maxsize=8192)
def _hl7_in(kind: type[HL7Value], text: str) -> HL7Value:
    """The value behind a stored HL7 text. Remembered (bounded): the values are immutable
    and a registry's answers repeat the same authors, institutions, patients and times, whose
    parsing was most of the time spent reading a row into the model."""
    if issubclass(kind, DTM):
        return kind.parse(text)
    return kind.parse(text, strict=False)


def _hl7_text(value: HL7Value | list[HL7Value]) -> str | list[str]:
    """An HL7 value, or a list of them, as stored: its HL7 text."""
    return [v.format() for v in value] if isinstance(value, list) else value.format()


def _author_out(author: Author) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Author):
        value = getattr(author, f.name)
        if not value:
            continue
        if f.name in _AUTHOR_HL7:
            value = _hl7_text(value)
        out[f.name] = value
    return out


def _author_in(data: dict[str, Any]) -> Author:
    kwargs = dict(data)
    if kwargs.get("person"):
        kwargs["person"] = _hl7_in(XCN, kwargs["person"])
    else:
        kwargs.pop("person", None)
    for name in ("institutions", "telecoms"):
        if name in kwargs:
            kwargs[name] = [_hl7_in(_AUTHOR_HL7[name], v) for v in kwargs[name]]
    return Author(**kwargs)


def to_dict(obj: AnyObject) -> dict[str, Any]:
    """Serialise an object; values equal to their field's default are left out."""
    out: dict[str, Any] = {"kind": obj.kind}
    for f in fields(obj):
        value = getattr(obj, f.name)
        if value == _DEFAULTS[type(obj)][f.name]:
            continue
        if isinstance(value, Code):
            value = _code_out(value)
        elif f.name in ("confidentiality_codes", "event_codes", "codes"):
            value = [_code_out(c) for c in value]
        elif f.name == "authors":
            value = [_author_out(a) for a in value]
        elif isinstance(value, StrEnum):
            value = value.value
        elif f.name in _HL7_SINGLE or f.name in _HL7_LIST:
            value = _hl7_text(value)
        out[f.name] = value
    return out


def from_dict(data: dict[str, Any]) -> AnyObject:
    cls = CLASSES[data["kind"]]
    names = _FIELD_NAMES[cls]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        if key not in names:
            continue
        if key in ("class_code", "type_code", "format_code", "healthcare_facility_type_code",
                   "practice_setting_code", "content_type_code", "documentation"):
            value = _code_in(value)
        elif key in ("confidentiality_codes", "event_codes", "codes"):
            value = [Code(*c) for c in value]
        elif key == "authors":
            value = [_author_in(a) for a in value]
        elif key in _HL7_SINGLE:
            value = _hl7_in(_HL7_SINGLE[key], value) if value else None
        elif key in _HL7_LIST:
            value = [_hl7_in(_HL7_LIST[key], v) for v in value]
        elif key == "availability_status":
            value = AvailabilityStatus(value)
        elif key == "object_type":
            value = ObjectType(value)
        elif key == "association_type":
            value = _association_type(value)
        kwargs[key] = value
    return cls(**kwargs)


def _association_type(value: str) -> AssociationType | str:
    try:
        return AssociationType(value)
    except ValueError:
        return value
