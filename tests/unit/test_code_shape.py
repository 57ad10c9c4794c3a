"""What the redesign keeps true of the code's shape, measured on the source: imports at module
level (a function-local import hides a cycle or a cost), and HL7 v2 values split only by the
one reader (`metadata/datatypes.py`, `metadata/er7.py`). The package layering and the
registry's ownership of its tables are import contracts (test_import_contracts.py)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

PARTAGE = Path(__file__).resolve().parents[2] / "partage"
HL7_READERS = {PARTAGE / "metadata" / "datatypes.py", PARTAGE / "metadata" / "er7.py"}
# An HL7 separator split by hand: ^ (components), ~ (repetitions), and | or & where they are HL7
# (the FHIR door's token syntax `system|code` and URL query strings are not HL7).
HAND_SPLIT = re.compile(r"""\.(r?split|r?partition)\(\s*["'](\^+|~)["']""")


def _sources() -> list[Path]:
    return [p for p in PARTAGE.rglob("*.py") if "migrations" not in p.parts]


def test_imports_are_at_module_level():
    local = []
    for path in _sources():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                local += [f"{path.relative_to(PARTAGE)}:{n.lineno}" for n in ast.walk(node)
                          if isinstance(n, ast.Import | ast.ImportFrom)]
    assert local == []


def test_hl7_values_are_split_by_the_one_reader_only():
    found = [f"{path.relative_to(PARTAGE)}:{n}: {line.strip()}"
             for path in _sources() if path not in HL7_READERS
             for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if HAND_SPLIT.search(line)]
    assert found == []


def test_the_measurements_can_fail(tmp_path):
    """The two checks see what they look for (a check that cannot fail is a defect)."""
    sample = 'def f(value):\n    import json\n    return value.split("^")[0], value.partition("^^")\n'
    tree = ast.parse(sample)
    assert [n for n in ast.walk(tree.body[0]) if isinstance(n, ast.Import)]
    assert len([line for line in sample.splitlines() if HAND_SPLIT.search(line)]) == 1
