"""docs/cda-rules.md names every rule id the engine can report (a rule nobody can look up is
a report nobody can act on)."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from partage.cda import crosscheck, parser, rules, terminology

DOC = (Path(__file__).resolve().parents[2] / "docs" / "cda-rules.md").read_text(encoding="utf-8")


def test_every_rule_id_is_documented():
    ids = set(rules.RULE_TABLE) | {b.id for b in terminology.BINDINGS}
    ids |= set(re.findall(r'"(xds-[A-Za-z-]+)"', inspect.getsource(crosscheck)))
    ids |= set(re.findall(r'_reject\("([a-z-]+)"', inspect.getsource(parser)))
    missing = sorted(i for i in ids if f"`{i}`" not in DOC)
    assert not missing, f"rule ids missing from docs/cda-rules.md: {missing}"
