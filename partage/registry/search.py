"""The SQL of FHIR searches: filtered, sorted and cut in keyset order by the database.

`objects(...)` answers a search over one patient's registry objects (DocumentReference,
List), `patients(...)` one over patients, each as candidate rows in a total order (the sort
keys, then the primary key) starting after a keyset position. They decide nothing about
access: the query flow (`partage.query.paging`) passes the candidates through the one gate
and asks for more until a page is full. Every predicate comes from an index definition of
`search_index`, the same definitions the rows were indexed with.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    false,
    func,
    literal,
    not_,
    or_,
    select,
    true,
)

from . import schema
from .patients import FHIR_ID_AUTHORITY
from .queries import COLUMNS
from .search_index import (
    HIGHEST,
    LOWEST,
    ColumnIndex,
    Criterion,
    DateIndex,
    DateMatch,
    Index,
    NameIndex,
    PatientIdentifierIndex,
    PatientIdIndex,
    PatientIndex,
    PeriodIndex,
    Sort,
    StringMatch,
    TokenIndex,
    TokenMatch,
    hash_sys,
    hash_sys_value,
    hash_value,
    normalize,
)

OBJ = schema.registry_objects
CODES = schema.object_codes
AUTHORS = schema.object_authors
PATIENTS = schema.patients
PATIENT_INDEX = schema.patient_index
PATIENT_IDS = schema.patient_identifiers
# the query rows (queries.COLUMNS, what the policy reads) and what a FHIR answer adds
OBJECT_COLUMNS = (*COLUMNS, OBJ.c.revision, OBJ.c.updated_at, OBJ.c.registered_at)
Key = tuple[Any, ...]     # the sort values of a row, then its pk


class SearchError(ValueError):
    """A criterion this index cannot answer (a door bug, not a client's)."""


@dataclass
class ObjectSearch:
    """A search over one patient's registry objects of these kinds."""

    kinds: tuple[str, ...]
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[Sort] = field(default_factory=list)
    descending: bool = True          # the direction of the final tie-break on pk


@dataclass
class PatientSearch:
    criteria: list[Criterion] = field(default_factory=list)
    sort: list[Sort] = field(default_factory=list)


# --- predicates --------------------------------------------------------------------------------
def _like_prefix(value: str) -> str:
    return value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"


def _token_clause(index: TokenIndex, matches: Sequence[TokenMatch], patient_pk: int) -> ColumnElement[bool]:
    by_sv, by_v, by_s, any_value = set(), set(), set(), False
    for m in matches:
        for attribute in index.attributes:
            if m.system is not None and m.value is not None:
                by_sv.add(hash_sys_value(attribute, m.system, m.value))
            elif m.value is not None:
                by_v.add(hash_value(attribute, m.value))
            elif m.system is not None:
                by_s.add(hash_sys(attribute, m.system))
            else:
                any_value = True
    tests = []
    if by_sv:
        tests.append(CODES.c.hash_sys_value.in_(sorted(by_sv)))
    if by_v:
        tests.append(CODES.c.hash_value.in_(sorted(by_v)))
    if by_s:
        tests.append(CODES.c.hash_sys.in_(sorted(by_s)))
    if any_value:
        tests.append(CODES.c.attribute.in_(list(index.attributes)))
    if not tests:
        return false()
    return OBJ.c.pk.in_(select(CODES.c.object_pk).where(CODES.c.patient_pk == patient_pk, or_(*tests)))


def _column_clause(column: ColumnElement[Any], matches: Sequence[TokenMatch]) -> ColumnElement[bool]:
    values = sorted({m.value for m in matches if m.value is not None})
    tests: list[ColumnElement[bool]] = [column.in_(values)] if values else []
    if any(m.value is None for m in matches):
        tests.append(column.is_not(None))
    return or_(*tests) if tests else false()


def _range_test(low: ColumnElement[Any], high: ColumnElement[Any], m: DateMatch) -> ColumnElement[bool]:
    """FHIR date search between the target [low, high) and the searched [m.low, m.high).

    eq: the searched range contains the target; ne: it does not; ge / gt: the target reaches
    the searched range's start / goes past its end; le / lt: the target begins before its end /
    its start; sa: the target starts after it; eb: the target ends before it (HAPI's reading)."""
    eq = and_(low >= m.low, high <= m.high)
    return {
        "eq": eq, "ne": not_(eq), "ge": high > m.low, "gt": high > m.high,
        "le": low < m.high, "lt": low < m.low, "sa": low >= m.high, "eb": high <= m.low,
    }[m.prefix]


def _date_clause(index: DateIndex, matches: Sequence[DateMatch]) -> ColumnElement[bool]:
    low = _date_low(index)
    if index.high is None:   # a point to the second: the target is [t, t + 1 s)
        return or_(*[_point_test(low, m) for m in matches]) if matches else false()
    high = getattr(OBJ.c, index.high)
    return or_(*[and_(low.is_not(None), _range_test(low, high, m)) for m in matches]) if matches else false()


def _point_test(t: ColumnElement[Any], m: DateMatch) -> ColumnElement[bool]:
    # high > x  <=>  t + 1 s > x  <=>  t >= x ; high <= x  <=>  t < x (whole seconds)
    eq = and_(t >= m.low, t < m.high)
    test = {"eq": eq, "ne": not_(eq), "ge": t >= m.low, "gt": t >= m.high, "le": t < m.high,
            "lt": t < m.low, "sa": t >= m.high, "eb": t < m.low}[m.prefix]
    return and_(t.is_not(None), test)


def _date_low(index: DateIndex) -> ColumnElement[Any]:
    columns = [getattr(OBJ.c, c) for c in index.low]
    return columns[0] if len(columns) == 1 else func.coalesce(*columns)


def _period_clause(index: PeriodIndex, matches: Sequence[DateMatch]) -> ColumnElement[bool]:
    start, stop = getattr(OBJ.c, index.start), getattr(OBJ.c, index.stop_high)
    low, high = func.coalesce(start, LOWEST), func.coalesce(stop, HIGHEST)
    has_period = or_(start.is_not(None), stop.is_not(None))
    return and_(has_period, or_(*[_range_test(low, high, m) for m in matches])) if matches else false()


def _name_clause(index: NameIndex, matches: Sequence[StringMatch], patient_pk: int) -> ColumnElement[bool]:
    column = AUTHORS.c.family_norm if index.part == "family" else AUTHORS.c.given_norm
    tests = []
    for m in matches:   # (no :exact here: only the folded names are indexed)
        value = normalize(m.value)
        if index.part == "family":
            tests.append(column.like(_like_prefix(value), escape="\\"))
        else:   # any of the given names begins with the value
            tests += [column.like(_like_prefix(value), escape="\\"),
                      column.like("% " + _like_prefix(value), escape="\\")]
    if not tests:
        return false()
    return OBJ.c.pk.in_(select(AUTHORS.c.object_pk).where(AUTHORS.c.patient_pk == patient_pk, or_(*tests)))


def _grouped(criterion: Criterion) -> dict[Index, list[Any]]:
    groups: dict[Index, list[Any]] = {}
    for index, match in criterion.alternatives:
        groups.setdefault(index, []).append(match)
    return groups


def object_clause(criterion: Criterion, patient_pk: int) -> ColumnElement[bool]:
    """The alternatives of one criterion, ORed (nothing matches a criterion without any)."""
    clauses = [_object_index_clause(index, alts, patient_pk) for index, alts in _grouped(criterion).items()]
    return or_(*clauses) if clauses else false()


def _object_index_clause(index: Index, alts: list[Any], patient_pk: int) -> ColumnElement[bool]:
    if isinstance(index, TokenIndex):
        return _token_clause(index, _only(alts, TokenMatch), patient_pk)
    if isinstance(index, ColumnIndex):
        return _column_clause(getattr(OBJ.c, index.column), _only(alts, TokenMatch))
    if isinstance(index, DateIndex):
        return _date_clause(index, _only(alts, DateMatch))
    if isinstance(index, PeriodIndex):
        return _period_clause(index, _only(alts, DateMatch))
    if isinstance(index, NameIndex):
        return _name_clause(index, _only(alts, StringMatch), patient_pk)
    raise SearchError(f"{type(index).__name__} is not an index of registry objects")


def _only(alternatives: Sequence[Any], kind: type) -> list[Any]:
    wrong = [a for a in alternatives if not isinstance(a, kind)]
    if wrong:
        raise SearchError(f"{type(wrong[0]).__name__} given to an index of {kind.__name__}")
    return list(alternatives)


# --- keyset order --------------------------------------------------------------------------------
def _sort_expression(sort: Sort, table: Any = OBJ) -> ColumnElement[Any]:
    """The sort value: a missing one sorts as "" (first ascending, last descending) on every
    database; a column that is never missing is used as it is, so that an index can give the order."""
    index = sort.index
    names = index.low if isinstance(index, DateIndex) else (index.column,) if isinstance(index, ColumnIndex) else ()
    if not names:
        raise SearchError(f"cannot sort on {type(index).__name__}")
    columns: list[ColumnElement[Any]] = [table.c[c] for c in names]
    if len(columns) == 1 and not getattr(columns[0], "nullable", True):
        return columns[0]
    return func.coalesce(*columns, "")


def _after(keys: Sequence[tuple[ColumnElement[Any], bool]], position: Key) -> ColumnElement[bool]:
    """Rows strictly after `position` in the order of `keys` ((expression, descending) pairs)."""
    if len(position) != len(keys):
        raise SearchError("a keyset position does not fit this search's order")
    alternatives = []
    for i, (expression, descending) in enumerate(keys):
        equal = [keys[j][0] == literal(position[j]) for j in range(i)]
        beyond = expression < literal(position[i]) if descending else expression > literal(position[i])
        alternatives.append(and_(*equal, beyond))
    return or_(*alternatives)


def _ordered(keys: Sequence[tuple[ColumnElement[Any], bool]]) -> list[Any]:
    return [e.desc() if d else e.asc() for e, d in keys]


# --- objects -------------------------------------------------------------------------------------
def objects(conn: Connection, search: ObjectSearch, patient_pk: int, after: Key | None,
            limit: int) -> list[Any]:
    """Candidate rows (OBJECT_COLUMNS and `k0..kn`) after `after`, in the search's order."""
    keys = [(_sort_expression(s), s.descending) for s in search.sort] + [(OBJ.c.pk, search.descending)]
    labelled = [expression.label(f"k{i}") for i, (expression, _) in enumerate(keys)]
    # Order and cut narrow rows (the keys, from the indexes), then read the page's whole rows:
    # sorting a heavy patient's rows with their JSON bodies would cost the record, not the page.
    inner = select(*labelled).where(
        OBJ.c.patient_pk == patient_pk, OBJ.c.kind.in_(list(search.kinds)),
        *[object_clause(c, patient_pk) for c in search.criteria])
    if after is not None:
        inner = inner.where(_after(keys, after))
    cut = inner.order_by(*_ordered(keys)).limit(limit).subquery()
    page_keys = [(cut.c[f"k{i}"], descending) for i, (_, descending) in enumerate(keys)]
    query = select(*OBJECT_COLUMNS, *(cut.c[f"k{i}"] for i in range(len(keys)))).join(
        cut, OBJ.c.pk == cut.c[f"k{len(keys) - 1}"])
    return list(conn.execute(query.order_by(*_ordered(page_keys))).all())


def position(row: Any, size: int) -> Key:
    """The keyset position of a candidate row of a search with `size` keys (sorts + pk)."""
    return tuple(getattr(row, f"k{i}") for i in range(size))


def key_count(search: ObjectSearch | PatientSearch) -> int:
    return len(search.sort) + 1


def object_meta(conn: Connection, entry_uuids: Sequence[str]) -> dict[str, Any]:
    """entryUUID -> (revision, updated_at, registered_at) of these objects (FHIR meta)."""
    if not entry_uuids:
        return {}
    rows = conn.execute(select(OBJ.c.entry_uuid, OBJ.c.revision, OBJ.c.updated_at, OBJ.c.registered_at)
                        .where(OBJ.c.entry_uuid.in_(list(entry_uuids)))).all()
    return {r.entry_uuid: r for r in rows}


# --- patients ------------------------------------------------------------------------------------
def _patient_clause(criterion: Criterion) -> ColumnElement[bool]:
    clauses = [_patient_index_clause(index, alts) for index, alts in _grouped(criterion).items()]
    return or_(*clauses) if clauses else false()


def _patient_index_clause(index: Index, alts: list[Any]) -> ColumnElement[bool]:
    if isinstance(index, PatientIndex) and index.attribute == "birthdate":
        matches = _only(alts, DateMatch)
        rows = select(PATIENT_INDEX.c.patient_pk).where(
            PATIENT_INDEX.c.attribute == "birthdate",
            or_(*[_range_test(PATIENT_INDEX.c.low, PATIENT_INDEX.c.high, m) for m in matches]) if matches
            else false())
        return PATIENTS.c.pk.in_(rows)
    if isinstance(index, PatientIndex):
        tests = []
        for m in _only(alts, StringMatch):
            tests.append(PATIENT_INDEX.c.value_exact == m.value if m.exact
                         else PATIENT_INDEX.c.value_norm.like(_like_prefix(normalize(m.value)), escape="\\"))
        if not tests:
            return false()
        return PATIENTS.c.pk.in_(select(PATIENT_INDEX.c.patient_pk).where(
            PATIENT_INDEX.c.attribute == index.attribute, or_(*tests)))
    if isinstance(index, PatientIdentifierIndex):
        tests = []
        for m in _only(alts, TokenMatch):
            parts = []
            if m.system is not None:
                parts.append(PATIENT_IDS.c.authority == m.system)
            if m.value is not None:
                parts.append(PATIENT_IDS.c.value == m.value)
            tests.append(and_(*parts) if parts else true())
        if not tests:
            return false()
        return PATIENTS.c.pk.in_(select(PATIENT_IDS.c.patient_pk).where(or_(*tests)))
    if isinstance(index, PatientIdIndex):
        values = sorted({m.value for m in _only(alts, TokenMatch) if m.value is not None})
        if not values:
            return false()
        by_fhir_id = select(PATIENT_IDS.c.patient_pk).where(PATIENT_IDS.c.authority == FHIR_ID_AUTHORITY,
                                                            PATIENT_IDS.c.value.in_(values))
        return or_(PATIENTS.c.public_id.in_(values), PATIENTS.c.pk.in_(by_fhir_id))
    raise SearchError(f"{type(index).__name__} is not an index of patients")


def patients(conn: Connection, search: PatientSearch, after: Key | None, limit: int) -> list[Any]:
    """Candidate patients (pk, public_id, k0..kn) not merged into another, after `after`."""
    keys: list[tuple[ColumnElement[Any], bool]] = []
    for s in search.sort:
        if not (isinstance(s.index, PatientIndex) and s.index.attribute == "birthdate"):
            raise SearchError("patients sort on birthdate only")
        keys.append((func.coalesce(select(PATIENT_INDEX.c.low).where(
            PATIENT_INDEX.c.patient_pk == PATIENTS.c.pk, PATIENT_INDEX.c.attribute == "birthdate")
            .limit(1).scalar_subquery(), ""), s.descending))
    keys.append((PATIENTS.c.pk, False))
    labelled = [expression.label(f"k{i}") for i, (expression, _) in enumerate(keys)]
    query = select(PATIENTS.c.pk, PATIENTS.c.public_id, PATIENTS.c.revision, PATIENTS.c.updated_at,
                   *labelled).where(
        PATIENTS.c.merged_into.is_(None), *[_patient_clause(c) for c in search.criteria])
    if after is not None:
        query = query.where(_after(keys, after))
    return list(conn.execute(query.order_by(*_ordered(keys)).limit(limit)).all())


def patient_meta(conn: Connection, patient_pk: int) -> Any:
    """(revision, updated_at) of a patient (FHIR meta)."""
    return conn.execute(select(PATIENTS.c.revision, PATIENTS.c.updated_at).where(PATIENTS.c.pk == patient_pk)).first()


__all__ = ["ObjectSearch", "PatientSearch", "SearchError", "TokenMatch", "objects", "patients", "position",
           "key_count", "object_meta", "patient_meta", "object_clause"]
