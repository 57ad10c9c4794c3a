"""What a run of the MHD test kit produces and shares, as asbestos models it: fixtures
(FixtureComponent), the actions of a TestReport and their verdicts (TestEngine.propagateStatus,
doReportResult, getErrorMessage), the run's environment and the test being run."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

from . import hapi

PASS, FAIL, ERROR, WARNING, SKIP = "pass", "fail", "error", "warning", "skip"


class Unsupported(Exception):
    """Something asbestos does with a service of its own, which this runner does not have."""


class ScriptError(Exception):
    """What asbestos reports as an error of the script or of the run (an ERROR result)."""


class CircularReference(ScriptError):
    """A module imports the script that imported it."""


# --- the report -------------------------------------------------------------------------------------

@dataclass
class Fixture:
    """A FixtureComponent: a resource (as HAPI holds it) and the HTTP exchange behind it, if any."""

    id: str
    resource: dict[str, Any] | None = None
    status: int | None = None                 # None: a static fixture, no HTTP behind it
    headers: dict[str, str] = field(default_factory=dict)   # response headers, lower-case names
    method: str = ""
    url: str = ""
    sub: tuple[str, str] | None = None        # (source fixture id, FHIRPath) of a sub-fixture
    warnings: list[str] = field(default_factory=list)
    _view: Any = None

    @property
    def has_http(self) -> bool:
        return self.status is not None

    def view(self) -> Any:
        """The resource as HAPI holds it in memory (what FHIRPath reads)."""
        if self.resource is None:
            return None
        if self._view is None:
            self._view = hapi.memory_view(self.resource)
        return self._view

    def response_type(self) -> str | None:
        return hapi.class_name(self.resource["resourceType"]) if self.resource else None


@dataclass
class Action:
    """One action of a TestReport: an operation (possibly a module call) or an assertion."""

    kind: str
    description: str
    result: str = PASS
    message: str = ""
    assert_id: str = ""
    conditional: bool = False
    not_run: bool = False
    notes: list[str] = field(default_factory=list)
    log: str = ""                     # the HTTP exchange, for the reader of the report
    module: Report | None = None
    response: Fixture | None = None

    def error(self, message: str, *, not_run: bool = False) -> None:
        """Reporter.reportError: ERROR, messages appended."""
        self.result = ERROR
        self.not_run = self.not_run or not_run
        self.message = f"{self.message}\n{message}".strip() if self.message else message

    def fail(self, message: str, warning_only: bool = False) -> bool:
        self.result = WARNING if warning_only else FAIL
        self.message = f"{self.message}\n{message}".strip() if self.message else message
        return False

    def failed(self) -> bool:
        return self.result in (FAIL, ERROR)

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "description": self.description, "result": self.result}
        for key, value in (("id", self.assert_id), ("message", self.message)):
            if value:
                out[key] = value
        if self.not_run:
            out["not_run"] = True
        if self.conditional:
            out["conditional"] = True
        if self.log:
            out["log"] = self.log
        if self.notes:
            out["notes"] = self.notes
        if self.module is not None:
            out["module"] = self.module.as_dict()
        return out


@dataclass
class Section:
    label: str
    setup: bool = False
    actions: list[Action] = field(default_factory=list)


@dataclass
class Report:
    """A TestReport: its sections, its result and, when it stopped on an error, why."""

    name: str
    sections: list[Section] = field(default_factory=list)
    result: str | None = None
    entered_in_error: bool = False
    failures: list[str] = field(default_factory=list)
    stopped_not_run: bool = False    # stopped on something this runner cannot do

    def actions(self) -> Iterator[Action]:
        for section in self.sections:
            yield from section.actions

    def tests(self) -> list[Section]:
        return [s for s in self.sections if not s.setup]

    def terminal_failure(self, message: str, *, not_run: bool = False) -> None:
        self.entered_in_error = True
        self.result = FAIL
        self.failures.append(message)
        if not_run:
            self.failures.append("(not run: this runner does not have what it needs)")
            self.stopped_not_run = True

    def propagate_status(self) -> bool:
        """TestEngine.propagateStatus: FAIL as soon as any action failed or erred."""
        self.result = FAIL if any(a.failed() for a in self.actions()) else PASS
        return self.result == FAIL

    def finish(self) -> None:
        """TestEngine.doReportResult: the result from the actions, failed conditions excepted."""
        if self.entered_in_error:
            return
        self.result = FAIL if any(a.failed() and not a.conditional for a in self.actions()) else PASS

    def has_error(self) -> bool:
        return self.result == FAIL

    def error_report(self) -> tuple[str, str] | None:
        """TestEngine.getErrorMessage: (result, message) of a failed report — the ids of its own
        failed assertions, `'a'|'b'`, else the messages of its failed operations."""
        failed_asserts = [a for a in self.actions() if a.kind == "assert" and a.failed()]
        if failed_asserts:
            ids = [a.assert_id for a in failed_asserts if a.assert_id]
            return failed_asserts[0].result, "|".join(f"'{i}'" for i in ids)
        failed_ops = [a for a in self.actions() if a.kind == "operation" and a.failed()]
        if failed_ops:
            return failed_ops[0].result, "|".join(a.message for a in failed_ops if a.message)
        return None

    def not_run(self) -> bool:
        """The report failed only because of what this runner could not run (no genuine failure)."""
        if self.result != FAIL:
            return False
        failing = [a for a in self.actions() if a.failed() and not a.conditional]
        if self.stopped_not_run:
            return all(a.not_run for a in failing)
        return bool(failing) and all(a.not_run for a in failing)

    def any_not_run(self) -> bool:
        """Something in this report or the modules it called could not be run here."""
        return self.stopped_not_run or any((a.failed() and a.not_run) or (a.module is not None and a.module.any_not_run())
                                    for a in self.actions())

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "result": self.result}
        if self.failures:
            out["failures"] = self.failures
        out["sections"] = [{"label": s.label, "setup": s.setup, "actions": [a.as_dict() for a in s.actions]}
                           for s in self.sections]
        return out


# --- the run's shared state ---------------------------------------------------------------------------

@dataclass
class TestRecord:
    """What eventPart reads of a test run earlier: did it pass, and its modules' reports."""

    __test__ = False   # not a pytest class
    passed: bool
    modules: dict[str, Report]


@dataclass
class Environment:
    """One run: the server, the collections, the format of the run, the caches, the events."""

    fhir_base: str
    collections: Path
    fmt: str = hapi.JSON
    token: str | None = None
    timeout: float = 60.0
    cache: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # (type, name) -> resource
    records: dict[str, TestRecord] = field(default_factory=dict)                 # "<Id>/<test>" -> record
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, url: str, headers: dict[str, str], body: bytes | None = None) -> requests.Response:
        headers = dict(headers)
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        return self.session.request(method, url, data=body, headers=headers, timeout=self.timeout)


@dataclass
class TestContext:
    """The top-level test being run (modules run with it: its collection, its properties)."""

    __test__ = False
    env: Environment
    collection: str                 # the test collection's folder name
    test: str                       # the test's folder name
    properties: dict[str, str]
    modules: dict[str, Report] = field(default_factory=dict)
