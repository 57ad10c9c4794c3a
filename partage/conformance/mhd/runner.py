"""`partage testkit mhd`: run the NIST MHD Document Recipient collections against a server.

Order: the Test_Patients scripts first (each searches its patient, creates it if absent and
saves the search to the run's cache, where the tests' `Patient/...` fixtures are read), then
each collection's tests in name order, a test's `DependsOn` prerequisite before it. One line
per test, then `N passed, N failed, N not run`; `--json` writes every report.

A test passes when asbestos' verdict on it would be a pass (`engine.py`), fails when it would
be a failure, and is *not run* when it fails only where this runner lacks one of asbestos'
own services. What HAPI changed in a fixture before sending it (a repeated single-valued
element, an unknown element) is printed under the test's line as a warning.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from . import hapi
from .engine import Engine
from .model import FAIL, PASS, Action, Environment, Report, TestContext, TestRecord

PASSED, FAILED, NOT_RUN = "pass", "fail", "not run"

DEFAULT_COLLECTIONS = ("MHDv420_DocumentRecipient_comprehensive", "MHDv420_DocumentRecipient_minimal")


@dataclass
class TestResult:
    __test__ = False   # not a pytest class
    collection: str
    test: str
    outcome: str
    reason: str = ""
    warnings: list[str] = field(default_factory=list)
    manual: list[str] = field(default_factory=list)
    report: Report | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"collection": self.collection, "test": self.test, "outcome": self.outcome, "reason": self.reason,
                "warnings": self.warnings, "manual_review_not_run": self.manual,
                "report": self.report.as_dict() if self.report else None}


def read_properties(path: Path) -> dict[str, str]:
    """Java .properties (key=value or key: value, backslash continuations)."""
    out: dict[str, str] = {}
    if not path.is_file():
        return out
    logical = ""
    for line in path.read_text(encoding="utf-8").splitlines():
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


def _walk(report: Report) -> list[Action]:
    out: list[Action] = []
    for action in report.actions():
        out.append(action)
        if action.module is not None:
            out += _walk(action.module)
    return out


def _notes(report: Report) -> tuple[list[str], list[str]]:
    """(HAPI parse warnings, manual-review parts not run) anywhere in the report."""
    warnings: list[str] = []
    manual: list[str] = []
    for action in _walk(report):
        for note in action.notes:
            if note.startswith("manual-review part not run"):
                manual.append(note)
            elif "found while parsing" in note and note not in warnings:
                warnings.append(note)
    return warnings, sorted(set(manual))


def first_reason(report: Report) -> str:
    """The first failing action, as deep as it goes, with the last HTTP answer before it."""
    last_log = ""

    def find(rep: Report) -> str:
        nonlocal last_log
        if rep.failures and not any(a.failed() for a in rep.actions()):
            return "; ".join(rep.failures)
        for action in rep.actions():
            if action.log:
                last_log = action.log
            if action.module is not None and action.failed() and not action.conditional:
                inner = find(action.module)
                if inner:
                    return inner
            if action.failed() and not action.conditional:
                text = f"{action.description}: {action.message or action.result}".strip(": ")
                return text + (f" [{last_log}]" if last_log else "")
            if action.module is not None:
                find_logs(action.module)
        return "; ".join(rep.failures)

    def find_logs(rep: Report) -> None:
        nonlocal last_log
        for action in rep.actions():
            if action.log:
                last_log = action.log
            if action.module is not None:
                find_logs(action.module)

    return find(report)


def run_script(env: Environment, script: Path, collection: str, test: str, properties: dict[str, str],
               definition_dir: Path) -> TestResult:
    ctx = TestContext(env, collection, test, properties)
    try:
        engine = Engine(script, ctx, cache_dirs=[definition_dir, None], name=test)
        report = engine.run()
    except Exception as exc:   # a script this runner cannot even read: not run, never passed
        return TestResult(collection, test, NOT_RUN, f"{type(exc).__name__}: {exc}")
    if report.result == PASS:
        outcome = PASSED
    else:
        outcome = NOT_RUN if report.not_run() else FAILED
    env.records[f"{properties.get('Id') or collection}/{test}"] = TestRecord(outcome == PASSED, ctx.modules)
    warnings, manual = _notes(report)
    reason = first_reason(report) if report.result == FAIL else ""
    return TestResult(collection, test, outcome, reason, warnings, manual, report)


def _print(result: TestResult, label: str, out: TextIO) -> None:
    note = result.reason or "; ".join(result.manual)
    print(f"  {label} {result.outcome:8} {result.collection}/{result.test}"
          + (f"  -- {note[:300]}" if note else ""), file=out, flush=True)
    for warning in result.warnings:
        print(f"      warning: {warning}", file=out, flush=True)


def load_patients(env: Environment, out: TextIO = sys.stdout) -> list[TestResult]:
    """The Test_Patients scripts: create each patient if absent, save it to the run's cache."""
    results: list[TestResult] = []
    patients_dir = env.collections / "Test_Patients"
    if not patients_dir.is_dir():
        print(f"  setup  no Test_Patients folder in {env.collections}", file=out)
        return results
    props = read_properties(patients_dir / "TestCollection.properties")
    for folder in sorted(p for p in patients_dir.iterdir() if p.is_dir()):
        own = folder / "TestScript.xml"
        script = own if own.is_file() else patients_dir / "TestScript.xml"
        result = run_script(env, script, "Test_Patients", folder.name, props, folder)
        results.append(result)
        _print(result, "setup ", out)
    return results


def run(collections: Path, fhir_base: str, names: list[str] | None = None, out: TextIO = sys.stdout,
        tests: list[str] | None = None, *, token: str | None = None, fmt: str = hapi.JSON,
        timeout: float = 60.0) -> list[TestResult]:
    """Every test of the named collections (or only `tests`, by folder name), in name order."""
    env = Environment(fhir_base.rstrip("/"), collections, fmt=fmt, token=token, timeout=timeout)
    load_patients(env, out)
    plan: list[tuple[str, Path, dict[str, str]]] = []
    for name in names or DEFAULT_COLLECTIONS:
        collection_dir = collections / name
        if not collection_dir.is_dir():
            raise FileNotFoundError(f"no collection {name} in {collections}")
        props = read_properties(collection_dir / "TestCollection.properties")
        test_dirs = sorted(p for p in collection_dir.iterdir() if (p / "TestScript.xml").is_file())
        wanted = _with_dependencies(test_dirs, tests)
        plan += _ordered([(name, d, props) for d in test_dirs if d.name in wanted])
    results: list[TestResult] = []
    width = len(str(len(plan)))
    for n, (name, test_dir, props) in enumerate(plan, 1):
        result = run_script(env, test_dir / "TestScript.xml", name, test_dir.name, props, test_dir)
        results.append(result)
        _print(result, f"[{n:>{width}}/{len(plan)}]", out)
    counts = {k: sum(r.outcome == k for r in results) for k in (PASSED, FAILED, NOT_RUN)}
    manual = sum(1 for r in results if r.outcome == PASSED and r.manual)
    if manual:
        print(f"({manual} of the passed tests include a part asbestos leaves to manual review that this "
              "runner does not run: FHIR IG StructureDefinition validation by asbestos' own service)", file=out)
    warned = sum(1 for r in results if r.warnings)
    if warned:
        print(f"({warned} tests sent a fixture that HAPI's parser changed: see the warnings above)", file=out)
    print(f"{counts[PASSED]} passed, {counts[FAILED]} failed, {counts[NOT_RUN]} not run", file=out, flush=True)
    return results


def _ordered(plan: list[tuple[str, Path, dict[str, str]]]) -> list[tuple[str, Path, dict[str, str]]]:
    """Name order, except that a test runs after the tests it depends on."""
    by_name = {d.name: (n, d, p) for n, d, p in plan}
    done: list[tuple[str, Path, dict[str, str]]] = []
    seen: set[str] = set()

    def visit(name: str, trail: tuple[str, ...] = ()) -> None:
        if name in seen or name not in by_name or name in trail:
            return
        for dependency in _depends_on(by_name[name][1]):
            visit(dependency, trail + (name,))
        seen.add(name)
        done.append(by_name[name])

    for _, test_dir, _ in plan:
        visit(test_dir.name)
    return done


def _depends_on(test_dir: Path) -> list[str]:
    depends = read_properties(test_dir / "Test.properties").get("DependsOn", "")
    return [x.strip() for x in depends.split(",") if x.strip()]


def _with_dependencies(test_dirs: list[Path], tests: list[str] | None) -> set[str]:
    """The selected tests plus what they depend on (Test.properties `DependsOn=`): a negative
    test compares its answer with its prerequisite's, which must have run in the same run."""
    names = {d.name for d in test_dirs}
    wanted = set(names if tests is None else tests) & names
    pending = list(wanted)
    while pending:
        current = pending.pop()
        for dependency in _depends_on(next(d for d in test_dirs if d.name == current)):
            if dependency in names and dependency not in wanted:
                wanted.add(dependency)
                pending.append(dependency)
    return wanted
