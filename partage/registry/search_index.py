"""Search-parameter indexes, defined once: what each holds, and how a criterion becomes SQL.

Shaped after HAPI FHIR's search-parameter index tables (HFJ_SPIDX_TOKEN, _STRING, _DATE):

- **tokens** (`object_codes`): one row per coded value, carrying three 64-bit hashes —
  (attribute, system, value), (attribute, value) and (attribute, system) — so that
  `system|value`, `value` and `system|` are each one indexed equality. `token_hashes` computes
  them when a row is indexed (`partage.registry.indexing`) and again when a predicate is built
  (`partage.registry.search`): one function decides both sides.
- **strings** (`object_authors.family_norm`/`given_norm`, `patient_index.value_norm`): values
  `normalize`d (accents and case folded) for FHIR's default string search, a prefix match.
- **dates**: a value is a range `[low, high)` of 14-digit UTC seconds (`date_range`), so that a
  partial date ("1970", "1970-05") is searched as the range it covers, on both sides.

A criterion (`Criterion`) is an index and the alternatives a parameter value gives (OR);
several criteria AND. The FHIR door declares which index each search parameter uses
(`partage.fhir.searchparams`); this module knows nothing of FHIR.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Literal

from ..metadata.datatypes import DTM, DatatypeError

LOWEST, HIGHEST = "00000000000000", "99999999999999"   # open sides of a range
NORM_LENGTH = 200


def _hash(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def hash_sys_value(attribute: str, system: str, value: str) -> int:
    return _hash("sv", attribute, system, value)


def hash_value(attribute: str, value: str) -> int:
    return _hash("v", attribute, value)


def hash_sys(attribute: str, system: str) -> int:
    return _hash("s", attribute, system)


def token_hashes(attribute: str, system: str, value: str) -> dict[str, int]:
    """The hash columns of one token row (object_codes)."""
    return {"hash_sys_value": hash_sys_value(attribute, system, value),
            "hash_value": hash_value(attribute, value), "hash_sys": hash_sys(attribute, system)}


# Letters that no Unicode decomposition takes apart, written as French (and others) type them.
_LETTERS = str.maketrans({"æ": "ae", "œ": "oe", "ø": "o", "đ": "d", "ł": "l", "ı": "i"})


def normalize(text: str) -> str:
    """A string as FHIR's default string search compares it: accents, case, ligatures and
    repeated spaces folded ("Émilie  D'Arc" -> "emilie d'arc", "Lætitia" -> "laetitia")."""
    decomposed = unicodedata.normalize("NFKD", text)
    bare = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(bare.casefold().translate(_LETTERS).split())[:NORM_LENGTH]


def date_range(dtm: DTM) -> tuple[str, str]:
    """The seconds a DTM covers, `[low, high)`, as 14 digits: "1970" -> 19700101000000,
    19710101000000."""
    try:
        after = DTM(dtm.upper_bound()).to_datetime() + timedelta(seconds=1)
    except (OverflowError, DatatypeError):
        return dtm.lower_bound(), HIGHEST
    return dtm.lower_bound(), after.strftime("%Y%m%d%H%M%S")


# --- indexes ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class TokenIndex:
    """Coded values in object_codes under these attributes (registry.indexing.CODE_ATTRIBUTES)."""

    attributes: tuple[str, ...]


@dataclass(frozen=True)
class ColumnIndex:
    """A single-valued column of registry_objects compared as it is (status, uniqueId, ...)."""

    column: str


@dataclass(frozen=True)
class DateIndex:
    """A date of registry_objects: the range [low, high); `high` None: a point known to the
    second (the target is [low, low + 1 s)); several `low` columns: the first that is set."""

    low: tuple[str, ...]
    high: str | None = None


@dataclass(frozen=True)
class PeriodIndex:
    """A period: starts at `start` (a lower bound), ends before `stop_high`; a missing side is
    open; an object with neither has no period."""

    start: str
    stop_high: str


@dataclass(frozen=True)
class NameIndex:
    """A name part of the authors (object_authors.family_norm or given_norm)."""

    part: Literal["family", "given"]


@dataclass(frozen=True)
class PatientIndex:
    """A patient's demographics index (patient_index rows of this attribute)."""

    attribute: Literal["family", "given", "birthdate"]


@dataclass(frozen=True)
class PatientIdentifierIndex:
    """patient_identifiers: (authority OID, value)."""


@dataclass(frozen=True)
class PatientIdIndex:
    """The patient's FHIR logical id (its public id, or the id a FHIR client gave it)."""


Index = (TokenIndex | ColumnIndex | DateIndex | PeriodIndex | NameIndex | PatientIndex
         | PatientIdentifierIndex | PatientIdIndex)


# --- what a search asks ----------------------------------------------------------------------
@dataclass(frozen=True)
class TokenMatch:
    """`system|value`; None is "any" (`value` alone: any system; `system|`: any value)."""

    system: str | None
    value: str | None


DatePrefix = Literal["eq", "ne", "gt", "lt", "ge", "le", "sa", "eb"]


@dataclass(frozen=True)
class DateMatch:
    """A FHIR date comparison against the searched range [low, high)."""

    prefix: DatePrefix
    low: str
    high: str


@dataclass(frozen=True)
class StringMatch:
    value: str                  # as given; compared normalized unless `exact`
    exact: bool = False


Match = TokenMatch | DateMatch | StringMatch


@dataclass(frozen=True)
class Criterion:
    """One parameter value: its alternatives (OR), each an index and what to find there
    (`identifier` looks in two columns). No alternative: nothing matches."""

    alternatives: tuple[tuple[Index, Match], ...]

    @classmethod
    def on(cls, index: Index, matches: Iterable[Match]) -> Criterion:
        return cls(tuple((index, m) for m in matches))


@dataclass(frozen=True)
class Sort:
    index: DateIndex | ColumnIndex | PatientIndex
    descending: bool = False
