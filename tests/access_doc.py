"""docs/access.md read as the specification it is: its tables (after `<!-- table:NAME -->`)
and the few lists its prose states, for the tests that check the code against the page
(tests/unit/test_access_policy.py, and the oracle of tests/access_oracle.py)."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[1] / "docs" / "access.md"


def text() -> str:
    return DOC.read_text(encoding="utf-8")


def table(name: str) -> list[dict[str, str]]:
    """The markdown table after `<!-- table:NAME -->` in docs/access.md, as dicts."""
    lines = text().splitlines()
    start = lines.index(f"<!-- table:{name} -->") + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip().strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return [dict(zip(header, row, strict=True)) for row in body]


def yes(cell: str) -> bool:
    assert cell in ("yes", "no"), cell
    return cell == "yes"


def listed(pattern: str) -> list[str]:
    """Codes the page's prose lists, e.g. `Occupational medicine \\(specialties ([^)]*)\\)`:
    the first group, split on commas and "and"."""
    found = re.search(pattern, text())
    assert found, f"docs/access.md no longer says {pattern!r}"
    return [c.strip() for c in re.split(r",|\band\b", found.group(1)) if c.strip()]
