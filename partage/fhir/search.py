"""ITI-67 / ITI-66 search parameters -> the model's query filters (and back to links).

Token parameters are `system|code` (comma = OR, repeated = AND, as ITI-18's code lists);
dates take the FHIR prefixes eq, ge, gt, le, lt, sa, eb at any precision. What SQL cannot
say exactly (author name parts, related identifiers) narrows in SQL and is finished by
`post_filter`. Unknown parameters are ignored, as FHIR allows, and not echoed in links.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from urllib.parse import urlencode

from ..metadata.datatypes import CX, DTM, DatatypeError
from ..metadata.model import AnyObject, Code
from ..metadata.query import DocumentFilter, FolderFilter, SubmissionSetFilter, TimeRange
from .codes import scheme_of
from .ids import paging_number
from .outcome import FhirError
from .patients import patient_token

MISSING = "XDSStoredQueryMissingParam"   # what ITI-18 answers for a missing required parameter

Params = dict[str, list[str]]

DOCUMENT_CODES = {"category": "class", "type": "type", "setting": "setting", "facility": "hcft",
                  "event": "event", "security-label": "conf", "format": "format"}
DOCUMENT_STATUS = {"current": ["Approved", "Archived"], "superseded": ["Deprecated"],
                   "entered-in-error": ["Deleted"]}
LIST_STATUS = {"current": ["Approved", "Archived"], "retired": ["Deprecated"],
               "entered-in-error": ["Deleted"]}
DOCUMENT_PARAMS = {"patient", "patient.identifier", "status", "identifier", "date", "creation",
                   "author.given", "author.family", "period", "period-start", "period-end",
                   "related", "related:identifier", "isArchived", *DOCUMENT_CODES}
LIST_PARAMS = {"patient", "patient.identifier", "status", "identifier", "code", "date",
               "designationType", "sourceId", "source.given", "source.family", "isArchived"}
PAGING = ("_count", "_offset", "_sort", "_format")
DEFAULT_COUNT, MAX_COUNT = 100, 1000


@dataclass
class Search:
    """A parsed search: who, which filter, and the paging asked for."""

    patient_ref: str = ""          # Patient/<id> (resolved by the caller)
    patient_identifier: CX | None = None
    patient_identifier_given: bool = False   # asked for, even if no patient can have it
    document: DocumentFilter | None = None
    submission_set: SubmissionSetFilter | None = None
    folder: FolderFilter | None = None
    list_codes: list[str] = field(default_factory=list)   # submissionset / folder
    identifiers: list[str] = field(default_factory=list)  # uniqueId or entryUUID alternatives
    post: list[Callable[[AnyObject], bool]] = field(default_factory=list)
    count: int = DEFAULT_COUNT
    offset: int = 0
    sort: list[str] = field(default_factory=list)
    echo: Params = field(default_factory=dict)            # the parameters understood, for links

    def keep(self, obj: AnyObject) -> bool:
        return all(test(obj) for test in self.post)


def _tokens(value: str) -> list[tuple[str, str]]:
    out = []
    for alternative in value.split(","):
        system, sep, code = alternative.partition("|")
        out.append((system, code) if sep else ("", system))
    return out


def _codes(value: str) -> list[Code]:
    return [Code(code, scheme_of(system)) for system, code in _tokens(value)]


def _date_range(values: list[str], name: str) -> TimeRange:
    window = TimeRange()
    for raw in values:
        prefix, text = (raw[:2], raw[2:]) if raw[:2] in ("eq", "ge", "gt", "le", "lt", "sa", "eb", "ne") else ("eq", raw)
        try:
            dtm = DTM.from_iso(text) if ("T" in text and ("Z" in text or "+" in text[10:] or "-" in text[10:])) \
                else DTM(text.replace("-", "").replace("T", "").replace(":", ""))
        except DatatypeError as exc:
            raise FhirError.one(400, f"{name}={raw}: {exc}") from exc
        low = dtm.lower_bound()
        after = (DTM(dtm.upper_bound()).to_datetime() + timedelta(seconds=1)).strftime("%Y%m%d%H%M%S")
        if prefix == "ne":
            raise FhirError.one(400, f"{name}: the ne prefix is not supported", "not-supported")
        if prefix in ("eq", "ge", "sa", "gt"):
            new_low = low if prefix in ("eq", "ge") else after
            window.low = max(window.low, new_low) if window.low else new_low
        if prefix in ("eq", "le", "eb", "lt"):
            new_high = after if prefix in ("eq", "le") else low
            window.high = min(window.high, new_high) if window.high else new_high
    return window


def _bounds(raw: str, name: str) -> tuple[str, str, str]:
    """`[prefix]date` -> (prefix, first second, first second after), as 14 DTM digits."""
    prefix, text = (raw[:2], raw[2:]) if raw[:2] in ("eq", "ge", "gt", "le", "lt", "sa", "eb", "ne") else ("eq", raw)
    window = _date_range([text], name)
    return prefix, window.low, window.high


def _period_test(raw: str) -> Callable[[AnyObject], bool]:
    """FHIR date search on the service period (serviceStartTime..serviceStopTime).

    A missing start or stop leaves that side open (an act still going on has no stop);
    an entry with neither has no period and matches nothing. eq: the asked time contains
    the period; ge/le: the period reaches into the time from/until the value; gt/lt: the
    same beyond the value; sa/eb: the period starts after / ends before the value.
    """
    prefix, low, after = _bounds(raw, "period")
    if prefix == "ne":
        raise FhirError.one(400, "period: the ne prefix is not supported", "not-supported")

    def test(obj: AnyObject) -> bool:
        start_time, stop_time = getattr(obj, "service_start_time", None), getattr(obj, "service_stop_time", None)
        if start_time is None and stop_time is None:
            return False
        start = start_time.lower_bound() if start_time is not None else ""
        stop = _after(stop_time) if stop_time is not None else ""
        if prefix == "eq":
            return bool(start) and bool(stop) and low <= start and stop <= after
        if prefix in ("ge", "gt"):      # reaches past the value: no stop = still going on
            return not stop or stop > (low if prefix == "ge" else after)
        if prefix in ("le", "lt"):
            return not start or start < (after if prefix == "le" else low)
        if prefix == "sa":
            return bool(start) and start >= after
        return bool(stop) and stop <= low   # eb
    return test


def _after(dtm: DTM) -> str:
    return (DTM(dtm.upper_bound()).to_datetime() + timedelta(seconds=1)).strftime("%Y%m%d%H%M%S")


def _statuses(values: list[str], table: dict[str, list[str]], name: str) -> list[str]:
    out: list[str] = []
    for value in values:
        for status in value.split(","):
            if status not in table:
                raise FhirError.one(400, f"{name}={status}: expected one of {', '.join(table)}")
            out += table[status]
    return out


def _archived(values: list[str], statuses: list[str]) -> list[str]:
    """PDSm isArchived: true keeps only Archived entries, false drops them."""
    if not values:
        return statuses
    wanted = values[-1].lower() == "true"
    base = statuses or ["Approved", "Archived", "Deprecated", "Deleted"]
    return ["Archived"] if wanted else [s for s in base if s != "Archived"] or ["-"]


def _person_test(attr: str, field_name: str, value: str) -> Callable[[AnyObject], bool]:
    prefixes = [v.lower() for v in value.split(",")]

    def test(obj: AnyObject) -> bool:
        for author in getattr(obj, attr, []):
            xcn = author.person
            if xcn is None:
                continue
            names = [xcn.family_name] if field_name == "family" else [xcn.given_name, xcn.further_given_names]
            if any(n.lower().startswith(p) for n in names if n for p in prefixes):
                return True
        return False
    return test


def _related_test(value: str) -> Callable[[AnyObject], bool]:
    wanted = [(scheme_of(s), c) for s, c in _tokens(value)]

    def test(obj: AnyObject) -> bool:
        for cx in getattr(obj, "reference_ids", []):
            if any(c == cx.id and (not s or s == cx.assigning_authority.universal_id) for s, c in wanted):
                return True
        return False
    return test


def _common(params: Params, allowed: set[str]) -> Search:
    s = Search()
    for name in (*allowed, *PAGING, "patient:identifier"):
        if name in params:
            s.echo[name] = params[name]
    patients = params.get("patient", [])
    identifiers = params.get("patient.identifier", []) + params.get("patient:identifier", [])
    if not patients and not identifiers:
        raise FhirError.one(400, "patient or patient.identifier is required", "required", MISSING)
    if patients:
        s.patient_ref = patients[-1]
    if identifiers:
        s.patient_identifier = patient_token(identifiers[-1])
        s.patient_identifier_given = True
    if "status" not in params:
        raise FhirError.one(400, "status is required (e.g. status=current)", "required", MISSING)
    try:
        s.count = paging_number(str(params.get("_count", [DEFAULT_COUNT])[-1]), DEFAULT_COUNT, lowest=-1,
                                highest=MAX_COUNT)
        s.offset = paging_number(params.get("_offset", ["0"])[-1], 0)
    except ValueError as exc:
        raise FhirError.one(400, f"_count/_offset must be integers: {exc}") from exc
    if s.count < 0:
        raise FhirError.one(400, "_count must not be negative")
    s.sort = [k for v in params.get("_sort", []) for k in v.split(",") if k]
    for value in params.get("identifier", []):
        s.identifiers += [code for _system, code in _tokens(value)]
    return s


def document_search(params: Params) -> Search:
    """ITI-67 Find Document References (MHD 4.2 and PDSm parameters)."""
    s = _common(params, DOCUMENT_PARAMS)
    f = DocumentFilter()
    f.statuses = _archived(params.get("isArchived", []),
                           _statuses(params.get("status", []), DOCUMENT_STATUS, "status"))
    for name, attribute in DOCUMENT_CODES.items():
        groups = [_codes(v) for v in params.get(name, [])]
        if groups:
            f.codes[attribute] = groups
    f.creation_time = _date_range(params.get("date", []) + params.get("creation", []), "creation")
    f.service_start = _date_range(params.get("period-start", []), "period-start")
    f.service_stop = _date_range(params.get("period-end", []), "period-end")
    for raw in params.get("period", []):
        s.post.append(_period_test(raw))
    for name, part in (("author.given", "given"), ("author.family", "family")):
        for value in params.get(name, []):   # FHIR string search: case-insensitive prefix
            s.post.append(_person_test("authors", part, value))
    for value in params.get("related", []) + params.get("related:identifier", []):
        s.post.append(_related_test(value))
    s.document = f
    return s


def list_search(params: Params) -> Search:
    """ITI-66 Find Lists: SubmissionSets and Folders."""
    s = _common(params, LIST_PARAMS)
    codes = [c for v in params.get("code", []) for _, c in _tokens(v)] or ["submissionset", "folder"]
    unknown = set(codes) - {"submissionset", "folder"}
    if unknown:
        raise FhirError.one(400, f"code={','.join(unknown)}: only submissionset and folder Lists are served")
    s.list_codes = codes
    statuses = _archived(params.get("isArchived", []), _statuses(params.get("status", []), LIST_STATUS, "status"))
    window = _date_range(params.get("date", []), "date")
    designations = [_codes(v) for v in params.get("designationType", [])]
    s.submission_set = SubmissionSetFilter(statuses=statuses, submission_time=window,
                                           source_ids=[v.removeprefix("urn:oid:") for value in
                                                       params.get("sourceId", []) for _, v in _tokens(value)],
                                           content_types=designations)
    s.folder = FolderFilter(statuses=statuses, last_update_time=window, codes=designations)
    for name, part in (("source.given", "given"), ("source.family", "family")):
        for value in params.get(name, []):
            s.post.append(_person_test("authors", part, value))
    return s


def identifier_matches(obj: AnyObject, identifiers: list[str]) -> bool:
    if not identifiers:
        return True
    unique_id = getattr(obj, "unique_id", "")
    for value in identifiers:
        if value in (obj.entry_uuid, unique_id) or value.removeprefix("urn:oid:") == unique_id:
            return True
    return False


def _time(obj: AnyObject, *attrs: str) -> str:
    """The first of these DTM attributes the object has, as 14 sortable digits ('' if none)."""
    for attr in attrs:
        value = getattr(obj, attr, None)
        if value is not None:
            return str(value.lower_bound())
    return ""


SORT_KEYS: dict[str, Callable[[AnyObject], str]] = {
    "date": lambda o: _time(o, "creation_time", "submission_time", "last_update_time"),
    "creation": lambda o: _time(o, "creation_time"),
    "period": lambda o: _time(o, "service_start_time"),
    "period-start": lambda o: _time(o, "service_start_time"),
    "period-end": lambda o: _time(o, "service_stop_time"),
}


def sort_objects(objects: list[AnyObject], keys: list[str]) -> list[AnyObject]:
    """Stable multi-key sort; unknown keys are ignored. Default: newest first."""
    if not keys:
        keys = ["-date"]
    for key in reversed(keys):
        name = key.lstrip("-")
        if name not in SORT_KEYS:
            continue
        getter = SORT_KEYS[name]
        objects = sorted(objects, key=getter, reverse=key.startswith("-"))
    return objects


def page_links(base: str, search: Search, total: int) -> list[dict[str, str]]:
    def url(offset: int) -> str:
        params = {k: v for k, v in search.echo.items() if k not in ("_offset", "_count")}
        query = [(k, x) for k, vs in params.items() for x in vs]
        query += [("_count", str(search.count)), ("_offset", str(offset))]
        return f"{base}?{urlencode(query)}"
    links = [{"relation": "self", "url": url(search.offset)}]
    if search.count and search.offset + search.count < total:
        links.append({"relation": "next", "url": url(search.offset + search.count)})
    if search.offset > 0:
        links.append({"relation": "previous", "url": url(max(search.offset - search.count, 0))})
    links.append({"relation": "first", "url": url(0)})
    return links

