"""`partage testkit mhd`: run the NIST MHD Document Recipient collections against a server.

Order: the Test_Patients scripts first (they create the patients the tests reference,
and fill the Patient cache), then each MHDv420 collection's tests in name order (the
`1_Prerequisite...` test first, as the others depend on it). Prints one line per test,
then `N passed, N failed, N not run`; `--json` writes every step.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

from .cli import DEFAULT_COLLECTIONS
from .engine import FAIL, MANUAL_REVIEW, NOT_RUN, PASS, Environment, Script, Step, verdict


@dataclass
class TestResult:
    __test__ = False   # not a pytest class
    collection: str
    test: str
    outcome: str
    reason: str = ""
    steps: list[Step] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {"collection": self.collection, "test": self.test, "outcome": self.outcome,
                "reason": self.reason, "steps": [s.as_dict() for s in self.steps]}


def read_properties(path: Path) -> dict[str, str]:
    """Java .properties (key=value or key: value, backslash continuations)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    logical, lines = "", path.read_text().splitlines()
    for line in lines:
        if line.rstrip().endswith("\\"):
            logical += line.rstrip()[:-1]
            continue
        logical += line
        text = logical.strip()
        logical = ""
        if not text or text.startswith(("#", "!")):
            continue
        sep = min((i for i in (text.find("="), text.find(":")) if i >= 0), default=-1)
        if sep > 0:
            out[text[:sep].strip()] = text[sep + 1:].strip()
    return out


def first_reason(steps: list[Step], outcome: str) -> str:
    """The first step with this outcome, and what the server said to the request before it."""
    said: list[str] = []

    def find(items: list[Step]) -> str:
        for step in items:
            if step.kind == "operation" and " -> HTTP " in step.message:
                said.append(step.message.split(" -> ", 1)[1])
            if step.outcome == outcome:
                deeper = find(step.children)
                return deeper or f"{step.description}: {step.message}".strip(": ")
            find_said(step.children)
        return ""

    def find_said(items: list[Step]) -> None:
        for step in items:
            if step.kind == "operation" and " -> HTTP " in step.message:
                said.append(step.message.split(" -> ", 1)[1])
            find_said(step.children)

    reason = find(steps)
    if reason and said and "(" in said[-1] and outcome == FAIL:
        reason += f" [server: {said[-1]}]"
    return reason


def run_test(env: Environment, script: Path, collection: str, name: str) -> TestResult:
    try:
        steps = Script(script, env).run()
    except Exception as exc:   # a script this runner cannot even read: not run, never passed
        return TestResult(collection, name, NOT_RUN, f"{type(exc).__name__}: {exc}")
    outcome = verdict(steps)
    reason = first_reason(steps, outcome) if outcome != PASS else ""
    return TestResult(collection, name, outcome, reason, steps)


def load_patients(collections: Path, base: str, cache: dict, out=sys.stdout) -> list[TestResult]:
    """Run the Test_Patients scripts: create each patient if absent, fill the Patient cache."""
    results: list[TestResult] = []
    patients_dir = collections / "Test_Patients"
    if not patients_dir.is_dir():
        print(f"  setup  no Test_Patients folder in {collections}", file=out)
        return results
    props = read_properties(patients_dir / "TestCollection.properties")
    for folder in sorted(p for p in patients_dir.iterdir() if (p / "Patient").is_dir()):
        env = Environment(base, collections, props, patients_dir, folder, cache)
        script = folder / "TestScript.xml" if (folder / "TestScript.xml").is_file() else \
            patients_dir / "TestScript.xml"
        result = run_test(env, script, "Test_Patients", folder.name)
        results.append(result)
        print(f"  setup  {result.outcome:8} Test_Patients/{folder.name}"
              + (f"  -- {result.reason[:300]}" if result.reason else ""), file=out, flush=True)
    return results


def run(collections: Path, fhir_base: str, names: list[str] | None = None, out=sys.stdout,
        tests: list[str] | None = None) -> list[TestResult]:
    """Every test of the named collections (or only `tests`, by folder name), in name order."""
    base = fhir_base.rstrip("/")
    cache: dict = {}
    events: dict = {}
    load_patients(collections, base, cache, out)
    plan: list[tuple[str, Path, dict]] = []
    for name in names or DEFAULT_COLLECTIONS:
        collection_dir = collections / name
        if not collection_dir.is_dir():
            raise FileNotFoundError(f"no collection {name} in {collections}")
        props = read_properties(collection_dir / "TestCollection.properties")
        test_dirs = sorted(p for p in collection_dir.iterdir() if (p / "TestScript.xml").is_file())
        wanted = _with_dependencies(test_dirs, tests)
        plan += [(name, d, props) for d in test_dirs if d.name in wanted]
    results: list[TestResult] = []
    width = len(str(len(plan)))
    for n, (name, test_dir, props) in enumerate(plan, 1):
        env = Environment(base, collections, props, collections / name, test_dir, cache, events)
        result = run_test(env, test_dir / "TestScript.xml", name, test_dir.name)
        results.append(result)
        note = result.reason or _manual_note(result.steps)
        print(f"  [{n:>{width}}/{len(plan)}] {result.outcome:8} {name}/{test_dir.name}"
              + (f"  -- {note[:300]}" if note else ""), file=out, flush=True)
    counts = {k: sum(r.outcome == k for r in results) for k in (PASS, FAIL, NOT_RUN)}
    manual = sum(1 for r in results if r.outcome == PASS and _manual_note(r.steps))
    if manual:
        print(f"({manual} of the passed tests include a part asbestos leaves to manual review "
              "that this runner does not run: FHIR IG StructureDefinition validation)", file=out)
    print(f"{counts[PASS]} passed, {counts[FAIL]} failed, {counts[NOT_RUN]} not run", file=out, flush=True)
    return results


def _with_dependencies(test_dirs: list[Path], tests: list[str] | None) -> set[str]:
    """The selected tests plus what they depend on (Test.properties `DependsOn=`): a negative
    test compares its answer with its prerequisite's, which must have run in the same run."""
    names = {d.name for d in test_dirs}
    wanted = set(names if tests is None else tests) & names
    pending = list(wanted)
    while pending:
        current = pending.pop()
        depends = read_properties(next(d for d in test_dirs if d.name == current) / "Test.properties")
        for dependency in (x.strip() for x in depends.get("DependsOn", "").split(",")):
            if dependency in names and dependency not in wanted:
                wanted.add(dependency)
                pending.append(dependency)
    return wanted


def _manual_note(steps: list[Step]) -> str:
    """Parts asbestos leaves to manual review that could not run here (said, never hidden)."""
    reasons = sorted(_manual_reasons(steps))
    return f"manual-review part not run ({'; '.join(reasons)})" if reasons else ""


def _manual_reasons(steps: list[Step]) -> set[str]:
    out: set[str] = set()
    for step in steps:
        if step.outcome == MANUAL_REVIEW:
            out |= _not_run_reasons(step.children) or {step.message}
        out |= _manual_reasons(step.children)
    return out


def _not_run_reasons(steps: list[Step]) -> set[str]:
    out: set[str] = set()
    for step in steps:
        if step.outcome == NOT_RUN and step.kind == "operation" and not step.children:
            out.add(step.message)
        out |= _not_run_reasons(step.children)
    return out
