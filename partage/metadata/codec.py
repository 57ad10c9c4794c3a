"""Model objects to and from plain JSON-able dicts: the registry's stored form.

Pure functions, no I/O. Field names are the dataclass names, so a new attribute is
stored without touching this module; unknown keys are ignored on the way back so an
older server reads a newer row.
"""

from __future__ import annotations

from dataclasses import fields
from enum import StrEnum
from typing import Any

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

CLASSES: dict[str, type] = {c.kind: c for c in (DocumentEntry, SubmissionSet, Folder, Association)}
_FIELD_NAMES = {cls: {f.name for f in fields(cls)} for cls in CLASSES.values()}
_DEFAULTS = {cls: {f.name: getattr(cls(), f.name) for f in fields(cls)} for cls in CLASSES.values()}


def _code_out(code: Code) -> list[str]:
    return [code.code, code.scheme, code.display]


def _code_in(value: list[str] | None) -> Code | None:
    return Code(*value) if value else None


def _author_out(author: Author) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in fields(Author):
        value = getattr(author, f.name)
        if value:
            out[f.name] = value
    return out


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
            value = [Author(**a) for a in value]
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
