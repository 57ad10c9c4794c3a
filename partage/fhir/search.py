"""A FHIR search request, read against the declarations of `searchparams`, and its links.

`parse` turns the query parameters of a search into registry criteria (`partage.registry.
search_index`), the sort, the page asked for, and what was applied. FHIR's rules (R4
search.html): repeated parameters AND, comma-separated values OR, `\\,` `\\|` `\\$` `\\\\`
escapes; tokens are `system|value`, `value` (any system), `|value` (no system), `system|`
(any value); dates take the prefixes eq ne gt lt ge le sa eb at any precision (a value without
a time zone is read as UTC); strings match a prefix, accents and case folded (`:exact`:
as written).

`Prefer: handling=strict` refuses (400) a parameter, modifier, `_sort` key or `_total` the
server does not support; lenient (the default) ignores it, says so in an OperationOutcome
entry of the Bundle, and leaves it out of the self link, which shows what was applied.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from ..metadata.datatypes import CX, DTM, DatatypeError
from ..mhd.outcome import FhirError, Issue
from ..query.paging import Key, PageRequest
from ..registry.search import ObjectSearch, PatientSearch
from ..registry.search_index import (
    Criterion,
    DateMatch,
    DatePrefix,
    Index,
    Match,
    Sort,
    StringMatch,
    date_range,
)
from . import searchparams as SP
from .ids import paging_number
from .patients import patient_token
from .searchparams import split_escaped, token, unescape

Params = dict[str, list[str]]
MISSING = "XDSStoredQueryMissingParam"   # what ITI-18 answers for a missing required parameter
DEFAULT_COUNT, MAX_COUNT = 20, 1000   # HAPI FHIR pages by 20 too
PREFIXES: tuple[DatePrefix, ...] = ("eq", "ne", "gt", "lt", "ge", "le", "sa", "eb")
MAX_CURSOR = 2048
# Bounds on one search (docs/robustness.md): each criterion is a predicate of its own, and a
# database refuses (SQLite: expression depth) or slows down on thousands of them.
MAX_CRITERIA = 64        # parameter values AND'ed together
MAX_ALTERNATIVES = 100   # values OR'ed in one parameter value (comma-separated)


@dataclass
class Parsed:
    """A search as understood: criteria for the registry, and what the links must repeat."""

    resource: SP.ResourceSearch
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[Sort] = field(default_factory=list)
    sort_keys: list[str] = field(default_factory=list)       # as applied, e.g. ["-date"]
    count: int = DEFAULT_COUNT
    after: Key | None = None
    total: str = ""                                         # none | estimate | accurate | ""
    patient_refs: list[str] = field(default_factory=list)
    patient_identifiers: list[str] = field(default_factory=list)
    content: list[str] = field(default_factory=list)        # _content words
    applied: list[tuple[str, str]] = field(default_factory=list)   # (key, raw value) in request order
    ignored: list[str] = field(default_factory=list)        # lenient: what was not applied, and why

    @property
    def page(self) -> PageRequest:
        return PageRequest(self.count, self.after, self.total in ("accurate", "estimate") or self.count == 0)

    @property
    def signature(self) -> str:
        """What a cursor of this search is bound to: its order (or relevance for _content)."""
        return "_content" if self.content else ",".join(self.sort_keys)

    def has(self, name: str) -> bool:
        return any(k.split(":")[0] == name for k, _ in self.applied)

    def patient_identifier(self) -> CX | None:
        return patient_token(self.patient_identifiers[-1]) if self.patient_identifiers else None


# --- values --------------------------------------------------------------------------------------
def date_match(text: str, name: str) -> DateMatch:
    prefix: DatePrefix = "eq"
    if text[:2] in PREFIXES:
        prefix, text = text[:2], text[2:]   # type: ignore[assignment]
    elif text[:2] == "ap":
        raise FhirError.one(400, f"{name}: the ap prefix is not supported", "not-supported")
    if "T" in text and not (text.endswith("Z") or "+" in text[10:] or "-" in text[10:]):
        text += "Z"   # no time zone: read as UTC
    try:
        low, high = date_range(DTM.from_iso(text))
    except DatatypeError as exc:
        raise FhirError.one(400, f"{name}={text}: {exc}") from exc
    return DateMatch(prefix, low, high)


def _alternatives(param: SP.SearchParam, raw: str, modifier: str) -> list[tuple[Index, Match]]:
    values = split_escaped(raw, ",", MAX_ALTERNATIVES)
    if len(values) > MAX_ALTERNATIVES:
        raise FhirError.one(400, f"{param.name}: at most {MAX_ALTERNATIVES} values separated by commas",
                            "too-costly")
    out: list[tuple[Index, Match]] = []
    if param.type == "token":
        assert param.tokens is not None
        for value in values:
            out += param.tokens(*token(value))
    elif param.type == "reference":   # `related` (the patient is read apart: `patient_refs`)
        assert param.tokens is not None
        for value in values:
            if modifier == "identifier":   # the Identifier of the Reference: a token
                out += param.tokens(*token(value))
            elif len(split_escaped(value, "|")) > 1:
                raise FhirError.one(400, f"{param.name}={value}: a reference is [type]/[id], [id] or a URL "
                                    f"(FHIR R4 search.html#reference); an identifier is searched with "
                                    f"{param.name}:identifier=system|value", "invalid")
            # else a literal reference: none is held here (the identifiers have no reference), no match
    elif param.type == "date":
        assert param.index is not None
        out += [(param.index, date_match(v, param.name)) for v in values if v]
    elif param.type == "string":
        assert param.index is not None
        for value in values:
            text = unescape(value)
            if text:
                out += [(index, StringMatch(text, exact=modifier == "exact"))
                        for index in (param.index, *param.also)]
    return out


# --- the cursor (where a next page starts) -------------------------------------------------------
def encode_cursor(signature: str, position: Key) -> str:
    raw = json.dumps([signature, *position], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(text: str, signature: str, size: int) -> Key:
    """A position of `size` values: the sort values (text), then a key or an offset (an integer)."""
    try:
        if len(text) > MAX_CURSOR:
            raise ValueError("too long")
        value = json.loads(base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)))
        if (not isinstance(value, list) or len(value) != size + 1 or value[0] != signature
                or not all(isinstance(v, str) and "\x00" not in v for v in value[1:-1])
                or not isinstance(value[-1], int) or isinstance(value[-1], bool) or not 0 <= value[-1] < 2 ** 62):
            raise ValueError("not a position of this search")
    except (ValueError, binascii.Error) as exc:
        raise FhirError.one(400, f"{SP.PAGE_PARAM}: not a page of this search ({exc}); start again from "
                            "the first page", "invalid") from exc
    return tuple(value[1:])


# --- the request ----------------------------------------------------------------------------------
def parse(resource: SP.ResourceSearch, params: Params, *, strict: bool) -> Parsed:
    parsed = Parsed(resource)
    problems: list[str] = []

    def refuse(key: str, why: str) -> None:
        problems.append(f"{key}: {why}")

    cursor = ""
    if any("\x00" in key or any("\x00" in v for v in values) for key, values in params.items()):
        raise FhirError.one(400, "a search parameter holds a NUL character")
    for key, given in params.items():
        # FHIR R4 search.html#errors: "Empty parameters are not an error - they are just ignored by the
        # server" (whatever their type; not applied, so not in the self link).
        values = [v for v in given if v != ""]
        if not values:
            continue
        name, _, modifier = key.partition(":")
        if key in SP.FORMAT_PARAMS:
            parsed.applied += [(key, v) for v in values]
            continue
        if key == SP.PAGE_PARAM:
            cursor = values[-1]
            continue
        if key == "_count":
            parsed.count = _count(values[-1])
            parsed.applied.append((key, values[-1]))
            continue
        if key == "_total":
            mode = values[-1]
            if mode in ("none", "estimate", "accurate"):
                parsed.total = mode
                parsed.applied.append((key, mode))
            else:
                refuse(key, f"{mode!r} is not none, estimate or accurate")
            continue
        if key == "_sort":
            _sort(parsed, values, refuse)
            continue
        param = resource.by_name.get(name)
        if param is None:
            refuse(key, f"{resource.resource_type} has no search parameter {name!r} here")
            continue
        if modifier and modifier not in param.modifiers:
            refuse(key, f"the modifier :{modifier} is not supported")
            continue
        if name == "patient" and modifier == "identifier" or name == "patient.identifier":
            parsed.patient_identifiers += values
        elif name == "patient":
            parsed.patient_refs += values
        elif name == "_content":
            parsed.content += values
        else:
            for value in values:
                parsed.criteria.append(Criterion(tuple(_alternatives(param, value, modifier))))
        if len(parsed.criteria) + len(parsed.patient_refs) + len(parsed.patient_identifiers) > MAX_CRITERIA:
            raise FhirError.one(400, f"a search may combine at most {MAX_CRITERIA} parameter values", "too-costly")
        parsed.applied += [(key, v) for v in values]
    if problems and strict:
        raise FhirError(400, [Issue(p, "not-supported") for p in problems])
    parsed.ignored = problems
    if not parsed.sort:
        for key in resource.default_sort:
            param = resource.by_name[key.lstrip("-")]
            assert param.sort is not None
            parsed.sort.append(Sort(param.sort, key.startswith("-")))
    if parsed.content and parsed.sort_keys:
        if strict:
            raise FhirError.one(400, "_sort: _content results are ranked by relevance", "not-supported")
        parsed.ignored.append("_sort: _content results are ranked by relevance")
        parsed.applied = [(k, v) for k, v in parsed.applied if k != "_sort"]
    if cursor:   # a keyset position (sort values, pk); for _content, an offset in the ranking
        parsed.after = decode_cursor(cursor, parsed.signature, 1 if parsed.content else len(parsed.sort) + 1)
    return parsed


def _count(text: str) -> int:
    """`_count` as a plain decimal number (ids.paging_number: bounded length), at most MAX_COUNT."""
    try:
        count = paging_number(text, DEFAULT_COUNT, lowest=-1, highest=MAX_COUNT)
    except ValueError as exc:
        raise FhirError.one(400, f"_count must be an integer: {exc}") from exc
    if count < 0:
        raise FhirError.one(400, "_count must not be negative")
    return count


def _sort(parsed: Parsed, values: list[str], refuse: Any) -> None:
    for value in values:
        for key in (k.strip() for k in value.split(",")):
            if not key:
                continue
            param = parsed.resource.by_name.get(key.lstrip("-"))
            if param is None or param.sort is None:
                refuse(f"_sort={key}", f"{parsed.resource.resource_type} cannot be sorted on {key.lstrip('-')!r}")
                continue
            if any(k.lstrip("-") == key.lstrip("-") for k in parsed.sort_keys):   # the first one decides
                refuse(f"_sort={key}", f"already sorted on {key.lstrip('-')!r}")
                continue
            parsed.sort.append(Sort(param.sort, key.startswith("-")))
            parsed.sort_keys.append(key)
    if parsed.sort_keys:
        parsed.applied.append(("_sort", ",".join(parsed.sort_keys)))


# --- per resource -----------------------------------------------------------------------------------
def _require_patient_and_status(parsed: Parsed) -> None:
    if not parsed.patient_refs and not parsed.patient_identifiers:
        raise FhirError.one(400, "patient or patient.identifier is required", "required", MISSING)
    if not parsed.has("status"):
        raise FhirError.one(400, "status is required (e.g. status=current)", "required", MISSING)
    if any(len(split_escaped(v, ",")) > 1 for v in parsed.patient_refs + parsed.patient_identifiers):
        # a comma is OR (FHIR R4 search.html#combining): one patient per search here, as ITI-18
        raise FhirError.one(400, "patient / patient.identifier: a search names one patient, not a list",
                            "not-supported", "XDSResultNotSinglePatient")


def document_search(params: Params, *, strict: bool = False) -> tuple[Parsed, ObjectSearch]:
    """ITI-67 Find Document References (MHD 4.2 and PDSm parameters)."""
    if "_content" in params and "status" not in params:   # keyword search: current documents by default
        params = {**params, "status": ["current"]}
    parsed = parse(SP.DOCUMENT_REFERENCE, params, strict=strict)
    _require_patient_and_status(parsed)
    return parsed, ObjectSearch(SP.DOCUMENT_KINDS, parsed.criteria, parsed.sort)


def list_search(params: Params, *, strict: bool = False) -> tuple[Parsed, ObjectSearch]:
    """ITI-66 Find Document Lists: SubmissionSets and Folders."""
    parsed = parse(SP.LIST, params, strict=strict)
    _require_patient_and_status(parsed)
    return parsed, ObjectSearch(SP.LIST_KINDS_ALL, parsed.criteria, parsed.sort)


def patient_search(params: Params, *, strict: bool = False) -> tuple[Parsed, PatientSearch]:
    parsed = parse(SP.PATIENT, params, strict=strict)
    return parsed, PatientSearch(parsed.criteria, parsed.sort)


# --- the Bundle's links ------------------------------------------------------------------------------
def links(base: str, parsed: Parsed, next_position: Key | None, cursor: str = "") -> list[dict[str, str]]:
    """self (what was applied), first, and next when another page follows."""
    def url(extra: list[tuple[str, str]]) -> str:
        query = [(k, v) for k, v in parsed.applied if k != "_count"] + [("_count", str(parsed.count))] + extra
        return f"{base}?{urlencode(query)}"
    out = [{"relation": "self", "url": url([(SP.PAGE_PARAM, cursor)] if cursor else [])},
           {"relation": "first", "url": url([])}]
    if next_position is not None:
        out.append({"relation": "next",
                    "url": url([(SP.PAGE_PARAM, encode_cursor(parsed.signature, next_position))])})
    return out


def outcome_entry(parsed: Parsed) -> list[dict[str, Any]]:
    """Lenient handling: an OperationOutcome entry saying what was not applied."""
    if not parsed.ignored:
        return []
    return [{"resource": {"resourceType": "OperationOutcome", "issue": [
        {"severity": "warning", "code": "not-supported", "diagnostics": f"ignored: {why}"}
        for why in parsed.ignored]}, "search": {"mode": "outcome"}}]


def bundle(base_url: str, link_base: str, parsed: Parsed, resources: list[dict[str, Any]],
           next_position: Key | None, total: int | None, cursor: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset"}
    if total is not None and parsed.total != "none":
        out["total"] = total
    out["link"] = links(link_base, parsed, next_position, cursor)
    entries = [{"fullUrl": f"{base_url}/{r['resourceType']}/{r['id']}", "resource": r,
                "search": {"mode": "match"}} for r in resources]
    out["entry"] = entries + outcome_entry(parsed)
    if not out["entry"]:
        del out["entry"]
    return out
