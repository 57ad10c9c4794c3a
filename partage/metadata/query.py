"""Queries in the model's terms: what ITI-18 stored queries and ITI-67/66 searches ask.

Both doors build these; `partage.query` runs them. Code filters are lists of OR-groups
that are ANDed together (the ITI-18 AND/OR semantics of eventCodeList,
confidentialityCode and folder codeList; single OR-group for the others).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .model import Code

CodeFilter = list[list[Code]]   # AND of ORs


@dataclass
class TimeRange:
    low: str = ""    # inclusive, DTM digits
    high: str = ""   # exclusive, DTM digits (ITI-18: "...TimeTo" is strictly less than)

    def __bool__(self) -> bool:
        return bool(self.low or self.high)


@dataclass
class DocumentFilter:
    """Filters that narrow DocumentEntries (FindDocuments and the Get...Contents queries)."""

    statuses: list[str] = field(default_factory=list)          # short names: Approved, ...
    object_types: list[str] = field(default_factory=list)      # "S" stable, "O" on-demand
    codes: dict[str, CodeFilter] = field(default_factory=dict)  # indexing attribute -> AND of ORs
    creation_time: TimeRange = field(default_factory=TimeRange)
    service_start: TimeRange = field(default_factory=TimeRange)
    service_stop: TimeRange = field(default_factory=TimeRange)
    author_persons: list[str] = field(default_factory=list)   # LIKE patterns with % and _
    reference_ids: list[list[str]] = field(default_factory=list)   # AND of ORs of whole CX texts
    unique_ids: list[str] = field(default_factory=list)
    entry_uuids: list[str] = field(default_factory=list)
    titles: list[str] = field(default_factory=list)


@dataclass
class SubmissionSetFilter:
    statuses: list[str] = field(default_factory=list)
    source_ids: list[str] = field(default_factory=list)
    submission_time: TimeRange = field(default_factory=TimeRange)
    author_persons: list[str] = field(default_factory=list)
    content_types: CodeFilter = field(default_factory=list)


@dataclass
class FolderFilter:
    statuses: list[str] = field(default_factory=list)
    last_update_time: TimeRange = field(default_factory=TimeRange)
    codes: CodeFilter = field(default_factory=list)
