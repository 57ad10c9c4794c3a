"""A TestScript engine that runs the NIST MHD collections as asbestos' TestEngine runs them.

What it follows, from the asbestos source (gov.nist.asbestos.testEngine.engine):

- the control flow of TestEngine: setup, then each test; in a test the first failing
  assertion or erroring operation ends that test (no `urn:multipleErrors`); a test marked
  `urn:noErrors` (and every test after it) does not run once the script has failed; a
  failing conditional action (`TestScript-Conditional`) ends its test without failing the
  script; `mayHaveBugsWhichRequireManualReview` turns a failure into a warning;
- module imports (`TestScript-Import`): arguments matched by position with the module's
  header, input variables evaluated in the caller and passed as text, output fixtures handed
  back, output variables evaluated as FHIRPath and injected into the caller;
- an `expectFailure` action passes when the ids of the assertions that failed in the module
  it calls are, as a set, exactly the expected list (FHIRPath `~`), gathered the way
  TestEngine.getErrorMessage gathers them (a module's own failed assertions, else the
  messages of its failed operations);
- variables as VariableMgr resolves them (external before local, `'literal'` arguments,
  `${...}` substituted one at a time, an unresolved one written as the empty set `{}`),
  assertions as AssertionRunner dispatches them, FHIRPath results turned into text and
  booleans as FhirPathEngineBuilder does (`fhirpath.py`);
- operations as OperationRunner: `read`, `search`, `create`, `transaction`,
  `mhd-pdb-transaction` (identifiers renumbered, the fixture sent as HAPI re-serialises it,
  in the run's format), `save-to-cache`, `eventPart`, `internalFtkRequest` (`ftkLoadFixture`,
  `fixtures.py`).

What asbestos does with its own services and this runner cannot do (FHIR IG validation,
`ftkValidate` / `ftkFunctionCode`) is *not run*: a test whose verdict depends on it is
reported "not run", never passed; asbestos itself leaves these parts to manual review.
"""

from __future__ import annotations

import copy
import json
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote_plus, urljoin

import requests
from lxml import etree

from ...xmlsafe import parse_xml
from . import fixtures as fixture_service
from . import hapi
from .fhirpath import FhirPathError, eval_for_boolean, eval_for_entry_resource, eval_for_string

F = "{http://hl7.org/fhir}"
IMPORT = "https://github.com/usnistgov/asbestos/wiki/TestScript-Import"
CONDITIONAL = "https://github.com/usnistgov/asbestos/wiki/TestScript-Conditional"
NO_ERRORS = "urn:noErrors"
MULTI_ERRORS = "urn:multipleErrors"
EXPECT_FAILURE = "urn:asbestos:test:action:expectFailure"
ASSERTION_IDS = "urn:asbestos:test:action:assertionIdList"
MANUAL = "urn:asbestos:test:action:mayHaveBugsWhichRequireManualReview"
SUB_FIXTURE = "urn:subFixture"

PASS, FAIL, ERROR, WARNING, SKIP = "pass", "fail", "error", "warning", "skip"
EMPTY_SET = "{}"
PUT_POST = {"update", "updateCreate", "create", "transaction", "mhd-pdb-transaction", "ftkValidate"}
RESPONSE_NAMES = {200: "okay", 201: "created", 204: "noContent", 304: "notModified", 400: "bad", 403: "forbidden",
                  404: "notFound", 405: "methodNotAllowed", 409: "conflict", 410: "gone",
                  412: "preconditionFailed", 422: "unprocessable", 500: "server failure"}
_PROPERTY = re.compile(r"#\{([^}]*)\}")


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
            self._not_run = True

    _not_run: bool = False

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
        if self._not_run:
            return all(a.not_run for a in failing)
        return bool(failing) and all(a.not_run for a in failing)

    def any_not_run(self) -> bool:
        """Something in this report or the modules it called could not be run here."""
        return self._not_run or any((a.failed() and a.not_run) or (a.module is not None and a.module.any_not_run())
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


# --- helpers ---------------------------------------------------------------------------------------------

def _value(element: etree._Element | None, name: str) -> str | None:
    if element is None:
        return None
    child = element.find(F + name)
    return child.get("value") if child is not None else None


def _extension(element: etree._Element, url: str) -> etree._Element | None:
    for ext in element.findall(F + "modifierExtension"):
        if ext.get("url") == url:
            return ext
    return None


def _ext_values(ext: etree._Element) -> list[tuple[str, str]]:
    out = []
    for item in ext.findall(F + "extension"):
        value = next((c.get("value") for c in item if isinstance(c.tag, str) and c.get("value") is not None), "")
        out.append((item.get("url", ""), value or ""))
    return out


def java_hash_order(keys: list[str]) -> list[str]:
    """The iteration order of a java.util.HashMap holding these String keys (asbestos puts a
    module's input fixtures in one; the last becomes the module's "last operation")."""
    def java_hash(text: str) -> int:
        h = 0
        for ch in text.encode("utf-16-be").decode("utf-16-be"):
            h = (31 * h + ord(ch)) & 0xFFFFFFFF
        return h
    capacity = 16
    while len(keys) > capacity * 0.75:
        capacity *= 2

    def bucket(key: str) -> int:
        h = java_hash(key)
        return (h ^ (h >> 16)) & (capacity - 1)
    return sorted(keys, key=lambda k: (bucket(k), keys.index(k)))


def property_value(properties: dict[str, str], text: str) -> str:
    """AsbestosPropertyReference.getValue: the first `#{TestCollection.properties:Name}` replaced."""
    match = _PROPERTY.search(text)
    if not match:
        return text
    parts = match.group(1).split(":", 2)
    if len(parts) < 2 or parts[0] != "TestCollection.properties":
        return text
    value = properties.get(parts[1])
    if value is None:
        if len(parts) > 2 and parts[2] == "DefaultToGlobalServiceProperty":
            raise Unsupported(f"{match.group(0)} names asbestos' own service properties")
        raise ScriptError(f"Null property {parts[1]} in TestCollection.properties")
    return text[:match.start()] + value + text[match.end():]


def _query(url: str) -> dict[str, str]:
    """Request.getParametersMap: the raw name=value pairs of a query string."""
    query = url.split("?", 1)[1] if "?" in url else ""
    out: dict[str, str] = {}
    for part in query.split("&"):
        if part:
            name, _, value = part.partition("=")
            out[name] = value
    return out


def _resource_type_of(url: str) -> str:
    """Ref.getResourceType of a FHIR URL: the capitalised segment after the base."""
    path = url.split("?", 1)[0].rstrip("/")
    segments = [s for s in path.split("/") if s]
    for segment in reversed(segments):
        if segment[:1].isupper():
            return segment
    return ""


# --- the engine -------------------------------------------------------------------------------------------

class Engine:
    """One TestScript (a test or a module) being run: asbestos' TestEngine."""

    def __init__(self, path: Path, ctx: TestContext, *, parent: Engine | None = None,
                 fixtures_in: dict[str, Fixture] | None = None, external: dict[str, str | None] | None = None,
                 fmt: str | None = None, cache_dirs: list[Path | None] | None = None, name: str = "") -> None:
        self.path, self.ctx, self.env, self.parent = path, ctx, ctx.env, parent
        self.root = parse_xml(path.read_bytes())
        self.name = name or path.stem
        self.report = Report(self.name)
        self.fixtures: dict[str, Fixture] = {}
        self.last_op: str | None = None
        self.external: dict[str, str | None] = dict(external or {})
        self.fmt = fmt or self.env.fmt
        # where static fixtures are read: a folder, or None for the run's cache of saved resources
        self.cache_dirs: list[Path | None] = cache_dirs if cache_dirs is not None else [path.parent, None]
        self.variables: list[dict[str, str | None]] = []
        self._op_counter = 0
        for var in self.root.findall(F + "variable"):
            self.variables.append({k: _value(var, k) for k in
                                   ("name", "defaultValue", "expression", "sourceId", "headerField", "path")})
        for name_, fixture in (fixtures_in or {}).items():
            self._put(name_, fixture)

    # --- fixtures ---------------------------------------------------------------------------------------
    def _put(self, name: str, fixture: Fixture) -> None:
        self.fixtures[name] = fixture
        self.last_op = name

    def fixture(self, name: str | None) -> Fixture | None:
        fixture = self.fixtures.get(name) if name is not None else None
        if fixture is not None and fixture.sub is not None and fixture.resource is None and not fixture.has_http:
            self._resolve_sub(fixture)
        return fixture

    def _resolve_sub(self, fixture: Fixture) -> None:
        """FixtureSub.get: the resource of the one Bundle entry the FHIRPath selects."""
        source_id, path = fixture.sub  # type: ignore[misc]
        source = self.fixture(source_id)
        if source is None:
            raise ScriptError(f"Fixture {source_id} does not exist in Fixture Manager")
        if source.resource is None:
            raise ScriptError(f"Fixture {source_id} does not contain a resource")
        if source.resource.get("resourceType") != "Bundle":
            raise ScriptError(f"Fixture {source_id} does not contain a Bundle")
        fixture.resource = eval_for_entry_resource(source.view(), path)
        fixture._view = None

    def _materialised(self, fixture: Fixture) -> Fixture:
        """FixtureSub.getSubFixture: a sub-fixture passed to a module is evaluated now."""
        if fixture.sub is None:
            return fixture
        out = Fixture(fixture.id, sub=fixture.sub)
        self._resolve_sub(out)
        out.sub = None
        return out

    def _load_static(self, fid: str, reference: str) -> Fixture:
        """FixtureComponent.loadStatic: a reference `Type/name[.xml|.json]` read from the cache
        folders (the script's, its callers', and the resources saved during the run)."""
        kind, _, name = reference.partition("/")
        stem = name[:-4] if name.endswith(".xml") else name[:-5] if name.endswith(".json") else name
        for where in self.cache_dirs:
            if where is None:
                saved = self.env.cache.get((kind, stem))
                if saved is not None:
                    resource = copy.deepcopy(saved)
                    resource["id"] = stem
                    return Fixture(fid, resource)
                continue
            for candidate in (where / kind / f"{stem}.xml", where / kind / f"{stem}.json"):
                if candidate.is_file():
                    data = candidate.read_bytes()
                    parsed = hapi.read(data, hapi.XML if candidate.suffix == ".xml" else hapi.JSON)
                    parsed.resource["id"] = stem
                    return Fixture(fid, parsed.resource, warnings=parsed.warnings)
        raise ScriptError(f"Static Fixture {reference} cannot be loaded")

    # --- variables (VariableMgr) ------------------------------------------------------------------------
    def _variable(self, name: str) -> dict[str, str | None] | None:
        return next((v for v in self.variables if v["name"] == name), None)

    def eval_variable(self, name: str, action: Action, props: dict[str, str] | None = None) -> str | None:
        local = self._variable(name)
        if local is not None and name in self.external:
            return self.external[name]
        if local is None:
            if name in self.external:
                return self.external[name]
            if name.startswith("'"):
                return self._anonymous(name, action)
            action.error(f"Variable {name} is referenced but not defined.")
            return None
        if local.get("sourceId") == "GENERATEUUID":   # a fresh urn:uuid, kept for the script
            local["sourceId"], local["defaultValue"] = None, f"urn:uuid:{uuid.uuid4()}"
        default = local.get("defaultValue")
        if default is not None:
            if props is not None:
                default = property_value(props, default)
            return self.update_reference(default, action, props)
        source_id = local.get("sourceId")
        if source_id is None:
            action.error(f"Variable {name} does not have a source and does not define a defaultValue")
            return None
        expression = local.get("expression")
        if source_id not in self.fixtures and not (expression is not None and source_id == "anonymous"):
            action.error(f"Variable {name} references source {source_id} which does not exist.")
            return None
        fixture = self.fixture(source_id)
        if local.get("headerField") is not None:
            if fixture is None or not fixture.has_http:
                action.error(f"Variable {name} source {source_id} does not have a HTTP header behind it")
                return None
            return fixture.headers.get(str(local["headerField"]).lower())
        if expression is not None:
            if props is not None:
                expression = property_value(props, expression)
            if fixture is None:   # source "anonymous"
                if expression.startswith("'"):
                    return self._anonymous(expression, action)
                raise ScriptError(f"variable {name}: the anonymous source holds no resource for {expression}")
            if "${" in expression:
                expression = self.update_reference(expression, action, props) or expression
            return eval_for_string(fixture.view(), expression)
        action.error(f"Variable {name} does not define one of headerField, expression, path, defaultValue")
        return None

    def _anonymous(self, literal: str, action: Action) -> str | None:
        """AnonymousVariableEval: a quoted argument is a FHIRPath literal, evaluated on nothing."""
        try:
            return eval_for_string({"resourceType": "Bundle"}, literal)
        except FhirPathError as exc:
            action.error(f"Anonymous variable eval exception: {exc}", not_run=True)
            return None

    def update_reference(self, text: str | None, action: Action, props: dict[str, str] | None = None) -> str | None:
        """VariableMgr.updateReference: `${name}` replaced one at a time, left to right; a first
        variable without value stops the replacing and becomes the empty set `{}`; a second one
        left unresolved is an error (None)."""
        if text is None:
            return None
        count = text.count("${")
        for i in range(1, 51):
            if "${" not in text:
                return text
            text = self._replace_next(text, action, props, empty=False)
            if text.count("${") != count - i:
                break
        if "${" in text:
            name = text[text.index("${") + 2:text.index("}", text.index("${"))] if "}" in text else text
            text = self._replace_next(text, action, props, empty=True)
            if "${" not in text:
                return text
            action.error(f"ASBTS variable {name} cannot be resolved.")
            return None
        return text

    def _replace_next(self, text: str, action: Action, props: dict[str, str] | None, *, empty: bool) -> str:
        start = text.index("${")
        stop = text.find("}", start)
        if stop < 0:
            action.error(f"reference {text} has no closing }}")
            raise ScriptError(f"reference {text} has no closing }}")
        name = text[start + 2:stop]
        value = self.eval_variable(name, action, props)
        if value is None:
            if not empty:
                return text
            value = f"{EMPTY_SET}/* {name} is an unresolved variable. */"
        return text[:start] + value + text[stop + 1:]

    # --- running (TestEngine.doWorkflow) ---------------------------------------------------------------
    def run(self) -> Report:
        try:
            self._load_fixtures()
            if not self._error_out():
                setup = self.root.find(F + "setup")
                if setup is not None:
                    self._setup(setup)
                if not self._error_out():
                    self._tests()
                    self._error_out()
        except Unsupported as exc:
            self.report.terminal_failure(f"not run: {exc}", not_run=True)
        except (ScriptError, FhirPathError, hapi.FormatError) as exc:
            self.report.terminal_failure(f"TestEngine error: {exc}", not_run=isinstance(exc, FhirPathError))
        return self.report

    def _error_out(self) -> bool:
        self.report.finish()
        return self.report.has_error()

    def _load_fixtures(self) -> None:
        for fx in self.root.findall(F + "fixture"):
            fid = fx.get("id") or ""
            if not fid:
                raise ScriptError("Static Fixture has no id and cannot be referenced")
            if _value(fx, "autocreate") is None or _value(fx, "autodelete") is None:
                raise ScriptError("fixture.autocreate and fixture.autodelete are required")
            if _value(fx, "autocreate") == "true" or _value(fx, "autodelete") == "true":
                raise Unsupported("fixture autocreate / autodelete")
            reference = _value(fx.find(F + "resource"), "reference")
            sub = next((e for e in fx.findall(F + "extension") if e.get("url") == SUB_FIXTURE), None)
            if reference is not None:
                self._put(fid, self._load_static(fid, reference))
            elif sub is not None:
                values = dict(_ext_values(sub))
                self._put(fid, Fixture(fid, sub=(values.get("urn:sourceId", ""), values.get("urn:fhirPath", ""))))

    def _setup(self, setup: etree._Element) -> None:
        section = Section(_value(setup, "description") or "setup", setup=True)
        self.report.sections.append(section)
        actions = setup.findall(F + "action")
        for i, element in enumerate(actions):
            action = Action("operation" if element.find(F + "operation") is not None else "assert", "")
            section.actions.append(action)
            operation, check = element.find(F + "operation"), element.find(F + "assert")
            if (operation is None) == (check is None):
                action.error("Action must have one operation or one assertion")
                self.report.result = FAIL
                return
            if operation is not None:
                followed = i + 1 < len(actions) and actions[i + 1].find(F + "assert") is not None
                self._operation(operation, action, followed)
                if action.result == ERROR:
                    self.report.result = FAIL
                    return
                if action.result == PASS:
                    self.report.result = PASS
            else:
                self._assert(check, action)
                if action.failed():
                    self.report.result = FAIL
                    return
            if self.report.has_error():
                return

    def _tests(self) -> None:
        for test in self.root.findall(F + "test"):
            if _extension(test, NO_ERRORS) is not None and self.report.result != PASS:
                return
            section = Section(_value(test, "description") or _value(test, "name") or "test")
            self.report.sections.append(section)
            for ext in test.findall(F + "modifierExtension"):
                if ext.get("url") == CONDITIONAL:
                    raise Unsupported("test-level conditional (a contained TestScript)")
                if ext.get("url") not in (MULTI_ERRORS, NO_ERRORS):
                    section.actions.append(Action("operation", "", ERROR,
                                                  f"Do not understand ModifierExtension {ext.get('url')}"))
                    return
            self._test_part(test, section)

    def _test_part(self, test: etree._Element, section: Section) -> bool:
        """TestEngine.doTestPart: the actions of one test, stopping where asbestos stops."""
        multi = _extension(test, MULTI_ERRORS) is not None
        actions = test.findall(F + "action")
        if not actions:
            self.report.terminal_failure("TestEngine doTestPart Error. Has no Action.")
            return False
        for i, element in enumerate(actions):
            conditional = _extension(element, CONDITIONAL) is not None
            expect = _extension(element, EXPECT_FAILURE)
            manual = _extension(element, MANUAL) is not None
            operation, check = element.find(F + "operation"), element.find(F + "assert")
            action = Action("operation" if operation is not None else "assert", "")
            section.actions.append(action)
            if (operation is None) == (check is None):
                self.report.terminal_failure("TestEngine invalidAction. Action must contain operation or assert.")
                return False
            if operation is not None:
                followed = i + 1 < len(actions) and actions[i + 1].find(F + "assert") is not None
                before = self.report.result
                self._operation(operation, action, followed)
                if manual and action.failed() and action.not_run:
                    # asbestos would run it and, failed or not, leave it to manual review
                    action.result = WARNING
                    action.notes.append(f"manual-review part not run ({_reason(action)})")
                    self.report.result = before
                    return True
                if manual and action.result == FAIL:
                    action.result = WARNING
                    action.notes.append("failed; asbestos leaves this part to manual review")
                    self.report.result = PASS
                    return True
                if expect is not None and action.result == FAIL:
                    if self._expected(expect, action):
                        self.report.result = PASS
                        return True
                if action.result == ERROR:
                    self.report.result = FAIL
                    return False
                if conditional and self.report.result == FAIL:
                    action.conditional = True
                    return False
                if i + 1 < len(actions) and actions[i + 1].find(F + "assert") is None and action.result == FAIL:
                    self.report.result = FAIL
                    if not multi:
                        return False
            else:
                self._assert(check, action)
                if action.result == FAIL:
                    if conditional:
                        action.conditional = True
                        return False
                    self.report.result = FAIL
                    if not multi:
                        return False
                if action.result == ERROR:
                    self.report.result = FAIL
                    return False
        return True

    def _expected(self, expect: etree._Element, action: Action) -> bool:
        """expectFailure: the failed assertion ids, as a set, are exactly the expected list."""
        values = _ext_values(expect)
        if not values or values[0][0] != ASSERTION_IDS or not action.message:
            return False
        expected = values[0][1]
        if expected.startswith("${") and expected.endswith("}"):
            expected = self.external.get(expected[2:-1]) or ""
        if not expected:
            return False
        if action.not_run or (action.module is not None and action.module.any_not_run()):
            action.not_run = True
            action.notes.append("the expected failures could not all be evaluated here")
            return False
        try:
            ok = eval_for_boolean({"resourceType": "TestReport"}, f"{expected}~({action.message})")
        except FhirPathError:
            return False
        action.notes.append(f"expected failures {expected}: {'occurred' if ok else 'got ' + action.message}")
        if ok:
            action.result = PASS
        return ok

    # --- operations (OperationRunner) -----------------------------------------------------------------
    def _operation(self, op: etree._Element, action: Action, followed: bool) -> None:
        action.description = _value(op, "description") or ""
        try:
            if op.find(F + "type") is not None:
                self._typed_operation(op, action, followed)
                self.report.propagate_status()
            elif op.find(F + "modifierExtension") is not None:
                ext = _extension(op, IMPORT)
                if ext is None:
                    action.error("Operation with unknown modifierExtension found.")
                else:
                    self._import(ext, action)
            else:
                action.error("Found operation with no type and no modifierExtension.")
        except Unsupported as exc:
            action.error(f"not run: {exc}", not_run=True)
            self.report.propagate_status()
        except FhirPathError as exc:
            action.error(f"FHIRPath not evaluated here: {exc}", not_run=True)
            self.report.propagate_status()
        except (ScriptError, hapi.FormatError, fixture_service.FixtureError, OSError,
                requests.RequestException, ValueError) as exc:
            action.error(f"TestEngine#doOperation: {type(exc).__name__}: {exc}")
            self.report.propagate_status()

    def _typed_operation(self, op: etree._Element, action: Action, followed: bool) -> None:
        code = _value(op.find(F + "type"), "code") or ""
        has = [x for x in ("sourceId", "targetId", "params", "url") if _value(op, x) is not None]
        if len(has) > 1:
            source = self.fixtures.get(_value(op, "sourceId") or "")
            if not (source is not None and not source.has_http) and code != "save-to-cache":
                action.error("has multiple of sourceId, targetId, params, url - only one is allowed")
                return
        if op.find(F + "destination") is not None:
            action.error("destination not supported")
            return
        content_type = _value(op, "contentType")
        if content_type:
            self.fmt = hapi.JSON if "json" in content_type else hapi.XML
        if code in ("read", "search"):
            self._read(op, action, followed, search=code == "search")
        elif code == "create":
            self._create(op, action, followed)
        elif code in ("transaction", "mhd-pdb-transaction"):
            self._transaction(op, action, followed, pdb=code == "mhd-pdb-transaction")
        elif code == "save-to-cache":
            self._save_to_cache(op, action, followed)
        elif code == "eventPart":
            self._internal(op, action, followed, "eventPart")
        elif code == "internalFtkRequest":
            headers = self._headers(op, action)
            request_code = headers.get("x-internalFtkRequestCode")
            if not op.findall(F + "requestHeader") or request_code is None:
                action.error("internalFtkRequest is missing its x-internalFtkRequestCode requestHeader")
                return
            if request_code == "ftkLoadFixture":
                self._internal(op, action, followed, "ftkLoadFixture")
            elif request_code == "ftkGetEventPart":
                self._internal(op, action, followed, "eventPart")
            elif request_code == "ftkFunctionCode":
                raise Unsupported("asbestos' internal function service (ftkFunctionCode)")
            else:
                action.error(f"do not understand request code of x-internalFtkRequestCode:{request_code}")
        elif code in ("ftkValidate",):
            raise Unsupported("asbestos' FHIR IG validation service (ftkValidate)")
        else:
            raise Unsupported(f"operation type {code!r}")

    def _headers(self, op: etree._Element, action: Action) -> dict[str, str]:
        out = {}
        for header in op.findall(F + "requestHeader"):
            value = self.update_reference(_value(header, "value"), action)
            out[_value(header, "field") or ""] = value or ""
        return out

    def _request_headers(self, op: etree._Element, action: Action, fmt: str) -> dict[str, str]:
        headers = self._headers(op, action)
        headers.setdefault("accept-charset", "utf-8")
        accept = _value(op, "accept")
        if accept:
            headers["accept"] = hapi.CONTENT_TYPES[hapi.JSON if "json" in accept else hapi.XML]
        return headers

    def _source(self, op: etree._Element, action: Action) -> Fixture | None:
        source_id = _value(op, "sourceId")
        if source_id is None:
            action.error(f"has no sourceId on operation {_value(op.find(F + 'type'), 'code')}")
            return None
        source = self.fixture(source_id)
        if source is None:
            action.error(f"sourceId {source_id} does not exist")
            return None
        if source.resource is None:
            action.error(f"sourceId {source_id}  does not reference a resource")
            return None
        return source

    def _to_send(self, source: Fixture, action: Action) -> dict[str, Any]:
        """GenericSetupAction.updateResourceToSend: the fixture's JSON with its variables
        substituted, parsed again (the fixture itself keeps the substituted form)."""
        text = json.dumps(source.resource, ensure_ascii=False)
        updated = self.update_reference(text, action)
        if updated is None:
            action.error(f"Update to Fixture {source.id} failed.")
            return source.resource  # type: ignore[return-value]
        resource = hapi.read_json(updated).resource
        source.resource, source._view = resource, None
        return resource

    def _record(self, op: etree._Element, action: Action, fixture: Fixture, followed: bool,
                expected_type: str | None = None) -> None:
        """GenericSetupAction.postExecute: the response becomes a fixture (responseId or a new id)."""
        action.log = f"{fixture.method} {fixture.url} -> HTTP {fixture.status}{_diagnostics(fixture)}"
        if not followed:
            if fixture.status is None or not 200 <= fixture.status < 300 or _has_errors(fixture):
                if action.result == PASS:   # asbestos records this failure without a message
                    action.result = FAIL
                action.notes.append(f"failed with status {fixture.status} (not followed by an assertion)")
            if fixture.resource is not None and expected_type and fixture.response_type() != expected_type:
                action.error(f"Expected resource of type {expected_type} received {fixture.response_type()} instead")
        self._op_counter += 1
        fid = _value(op, "responseId") or f"ID{self._op_counter}"
        fixture.id = fid
        self._put(fid, fixture)
        action.response = fixture

    def _target(self, op: etree._Element, action: Action, resource_type: str | None,
                search: bool = False, read: bool = False, internal: str | None = None) -> str | None:
        base = self.env.fhir_base
        url = _value(op, "url")
        if url is not None and (read or search):
            resolved = self.update_reference(url, action)
            if resolved is None:
                return None
            if resolved.startswith(("http://", "https://")):
                return resolved
            if internal is not None:
                return f"internal:{internal}{resolved}"
            return urljoin(base.rstrip("/") + "/", resolved.lstrip("/"))
        if url is not None:
            return url if url.startswith(("http://", "https://")) else urljoin(base.rstrip("/") + "/", url)
        params = _value(op, "params")
        if params is not None:
            resource = _value(op, "resource")
            if not resource:
                action.error("has params but no resource")
                return None
            raw = self.update_reference(params.strip(), action)
            if raw is None:
                action.error(f"Cannot resolve variable references in {params}")
                return None
            raw = raw[1:] if raw.startswith("/") else raw
            if not read and not search:
                return f"{base}/{resource.strip()}/{raw}"
            names = set(_query("?" + raw.lstrip("?")).keys()) if "=" in raw else set()
            if names <= {"_format"} and not raw.startswith("?"):
                raw = quote_plus(raw)
            if raw.startswith("?") and not search:
                action.error("resulting URL is search (contains ?) - use search operation type instead")
                return None
            return f"{base}/{resource.strip()}{raw if raw.startswith('?') else '/' + raw}"
        if _value(op, "targetId") is not None:
            target = self.fixtures.get(_value(op, "targetId") or "")
            if target is None or not target.has_http:
                action.error("targetId does not have id and type")
                return None
            return target.headers.get("location") or target.url
        if read or search:
            action.error("Unable to construct URL for operation")
            return None
        return f"{base}/{resource_type}" if resource_type else base

    def _read(self, op: etree._Element, action: Action, followed: bool, *, search: bool) -> None:
        url = self._target(op, action, _value(op, "resource"), search=search, read=not search)
        if url is None:
            if action.result != ERROR:
                action.error("cannot generate targetUrl")
            return
        headers = self._request_headers(op, action, self.fmt)
        headers.setdefault("accept", hapi.CONTENT_TYPES[self.fmt])
        accept = headers["accept"]
        response = self.env.request("GET", url, headers)
        fixture = Fixture("", None, response.status_code, {k.lower(): v for k, v in response.headers.items()},
                          "GET", url)
        if response.status_code == 200:
            if not response.content.strip():
                if search:
                    raise ScriptError("Search must return Bundle - received nothing instead")
            else:
                fmt = hapi.JSON if accept == hapi.CONTENT_TYPES[hapi.JSON] else hapi.XML
                parsed = hapi.read(response.content, fmt)
                fixture.resource, fixture.warnings = parsed.resource, parsed.warnings
                self._check_type(fixture, url, search)
        expected = "Bundle" if search else (_value(op, "resource") or None)
        self._record(op, action, fixture, followed, expected)

    def _check_type(self, fixture: Fixture, url: str, search: bool) -> None:
        """FhirClient.gobbleGetResponse: what a read or a search must answer."""
        expected = _resource_type_of(url)
        returned = fixture.resource.get("resourceType") if fixture.resource else None
        if not expected or returned in (None, "OperationOutcome", "CapabilityStatement", expected) \
                or expected == "metadata":
            return
        if returned == "Bundle":
            entries = fixture.resource.get("entry") or []  # type: ignore[union-attr]
            if entries:
                first = (entries[0] or {}).get("resource") or {}
                if first.get("resourceType") != expected:
                    raise ScriptError(f"Search returned bundle containing {first.get('resourceType')} "
                                      f"instead of {expected}")
                if not search:
                    fixture.resource = first
            return
        raise ScriptError(f"Read must return {expected} - received {returned} instead")

    def _post(self, url: str, resource: dict[str, Any], fmt: str, headers: dict[str, str]) -> Fixture:
        """FhirClient.writeResource: HAPI's encoding posted; the answer parsed if it is FHIR."""
        headers = dict(headers)
        headers["content-type"] = hapi.CONTENT_TYPES[fmt]
        headers.setdefault("accept", hapi.CONTENT_TYPES[fmt])
        response = self.env.request("POST", url, headers, hapi.write(resource, fmt))
        fixture = Fixture("", None, response.status_code, {k.lower(): v for k, v in response.headers.items()},
                          "POST", url)
        text = response.text
        if text:
            if not text.startswith(("{", "<")):
                raise ScriptError(text[:500])
            try:
                parsed = hapi.read(text, hapi.XML if "xml" in response.headers.get("Content-Type", "") else hapi.JSON)
                fixture.resource, fixture.warnings = parsed.resource, parsed.warnings
            except hapi.FormatError:
                pass
        return fixture

    def _transaction(self, op: etree._Element, action: Action, followed: bool, *, pdb: bool) -> None:
        source = self._source(op, action)
        if source is None:
            return
        resource = self._to_send(source, action)
        if pdb:
            resource = copy.deepcopy(resource)
            fixture_service.allocate_ids(resource)
            source.resource, source._view = resource, None
        headers = self._request_headers(op, action, self.fmt)
        url = self._target(op, action, None)
        fixture = self._post(url or self.env.fhir_base, resource, self.fmt, headers)
        if source.warnings:
            action.notes += source.warnings
        self._record(op, action, fixture, followed)

    def _create(self, op: etree._Element, action: Action, followed: bool) -> None:
        source = self._source(op, action)
        if source is None:
            return
        resource = self._to_send(source, action)
        content_type = _value(op, "contentType") or ""
        fmt = hapi.JSON if "json" in content_type else hapi.XML   # GenericSetupAction.format
        kind = hapi.class_name(resource["resourceType"])
        url = self._target(op, action, kind)
        fixture = self._post(url or f"{self.env.fhir_base}/{kind}", resource, fmt,
                             self._request_headers(op, action, fmt))
        self._record(op, action, fixture, followed, kind)

    def _save_to_cache(self, op: etree._Element, action: Action, followed: bool) -> None:
        source_id = _value(op, "sourceId")
        name = self.update_reference(_value(op, "url"), action)
        if source_id is None or name is None:
            action.error("save-to-cache needs a sourceId and a url")
            return
        source = self.fixture(source_id)
        if source is None or source.resource is None or source.resource.get("resourceType") != "Bundle":
            action.error("SaveToCache: source must be a Bundle")
            return
        bundle = source.resource
        entries = bundle.get("entry") or []
        kind = "Bundle"
        if bundle.get("total") == 1 and entries and isinstance((entries[0] or {}).get("resource"), dict):
            kind = entries[0]["resource"].get("resourceType", "Bundle")
        self.env.cache[(kind, name)] = copy.deepcopy(bundle)
        action.notes.append(f"saved as {kind}/{name}")
        self._record(op, action, Fixture("", source.resource, source.status, source.headers, source.method,
                                         source.url), followed)

    def _internal(self, op: etree._Element, action: Action, followed: bool, service: str) -> None:
        """eventPart / ftkLoadFixture: asbestos answers them itself (see `_serve_internal`)."""
        url = self._target(op, action, None, search=True, internal=service)
        if url is None:
            return
        relative = url[len(f"internal:{service}"):] if url.startswith("internal:") else url
        status, resource, warnings = self._serve_internal(service, relative)
        fixture = Fixture("", resource, status, {"content-type": "application/fhir+json"}, "GET",
                          f"(asbestos {service}){relative}", warnings=warnings)
        action.notes += warnings
        self._record(op, action, fixture, followed, "Bundle")

    def _serve_internal(self, service: str, relative: str) -> tuple[int, dict[str, Any] | None, list[str]]:
        params = _query(relative)
        if service == "ftkLoadFixture":
            try:
                loaded = fixture_service.load_fixture(self.env.collections, self.ctx.collection, self.ctx.test, params)
            except fixture_service.FixtureError as exc:
                return 400, None, [f"fixture service: {exc}"]
            return 200, loaded.bundle, [f"{loaded.path.name}: {w}" for w in loaded.warnings]
        # eventPart: /<Id>/<test>?module=...&testIndex=..&actionIndex=..&return=responseBody
        test_id = relative.split("?", 1)[0].strip("/")
        record = self.env.records.get(test_id)
        if record is None:
            return 400, None, [f"TestReport was not found for {test_id} (not yet run)"]
        if not record.passed:
            return 400, None, [f"{test_id}: Test did not Pass."]
        module = params.get("module")
        report = record.modules.get(module or "")
        if report is None or params.get("eventPartLocation") != "operation.detail" \
                or params.get("return") != "responseBody":
            raise Unsupported(f"eventPart {relative}")
        try:
            section = report.tests()[int(params.get("testIndex", "0"))]
            answer = section.actions[int(params.get("actionIndex", "0"))].response
        except (IndexError, ValueError):
            return 400, None, ["no such event part"]
        if answer is None or answer.resource is None:
            return 400, None, ["Response body is null"]
        return 200, copy.deepcopy(answer.resource), []

    # --- module calls (TestEngine.handleImport) ---------------------------------------------------------
    def _import(self, ext: etree._Element, action: Action) -> None:
        args = _ext_values(ext)
        props = self.ctx.properties
        component = None
        fixtures_in, fixtures_out, vars_in, vars_out, vars_no_translation = [], [], [], [], []
        for url, value in args:
            if url == "component":
                component = self._component_path(value)
            elif url == "urn:fixture-in":
                fixtures_in.append(value)
            elif url == "urn:fixture-out":
                fixtures_out.append(value)
            elif url == "urn:variable-in":
                vars_in.append(property_value(props, value))
            elif url == "urn:variable-in-no-translation":
                vars_no_translation.append(value)
            elif url == "urn:variable-out":
                vars_out.append(value)
            else:
                raise ScriptError(f"Do not understand extension {url} in ComponentReference")
        if component is None:
            raise ScriptError("Import does not declare a component reference")
        path = (self.path.parent / component).resolve()
        if not path.is_file():
            raise ScriptError(f"module {component} does not exist")
        if self.parent is not None and self.parent.path.resolve() == path:
            raise CircularReference(f"Parent TestScript file has a circular reference: {path}")
        header = _module_header(path)
        for kind, called, declared in (("inbound fixture", fixtures_in, header["urn:fixture-in"]),
                                       ("inbound variables", vars_in, header["urn:variable-in"]),
                                       ("outbound fixture", fixtures_out, header["urn:fixture-out"]),
                                       ("outbound variables", vars_out, header["urn:variable-out"])):
            if len(called) != len(declared):
                raise ScriptError(f"Calling module {path.name} - call has {len(called)} {kind} parameters "
                                  f"but module definition declares {len(declared)}.")
        handed: dict[str, Fixture] = {}
        for caller, local in zip(fixtures_in, header["urn:fixture-in"], strict=True):
            fixture = self.fixtures.get(caller)
            if fixture is None:
                raise ScriptError(f"Fixture {caller} does not exist")
            handed[local] = self._materialised(fixture)
        external: dict[str, str | None] = {}
        for caller, local in zip(vars_in, header["urn:variable-in"], strict=True):
            external[local] = self.eval_variable(caller, action, props)
        for name in vars_no_translation + header["urn:variable-in-no-translation"]:
            external[name] = self.eval_variable(name, action, props)
        if action.result == ERROR:
            return
        ordered = {name: handed[name] for name in java_hash_order(list(handed))}
        module_name = path.stem
        parent_dirs = list(reversed(self.cache_dirs))
        engine = Engine(path, self.ctx, parent=self, fixtures_in=ordered, external=external, fmt=self.fmt,
                        cache_dirs=parent_dirs + [path.parent], name=module_name)
        report = engine.run()
        self.ctx.modules[module_name] = report
        action.module = report
        action.description = action.description or module_name
        error = report.error_report()
        if error is not None:
            action.result, action.message = error
        for caller, local in zip(fixtures_out, header["urn:fixture-out"], strict=True):
            fixture = engine.fixtures.get(local)
            if fixture is None and error is None:
                raise ScriptError(f"Script import - {path.name} did not produce out Fixture {local}")
            if fixture is not None:
                self._put(caller, fixture)
        for caller, local in zip(vars_out, header["urn:variable-out"], strict=True):
            if self._variable(caller) is None:
                # asbestos evaluates it with a VariableMgr that does not see the module's inputs,
                # then evaluates the value as FHIRPath (on the module's TestScript)
                saved, engine.external = engine.external, {}
                try:
                    out_value = engine.eval_variable(local, Action("operation", ""))
                finally:
                    engine.external = saved
                if out_value is None:
                    raise ScriptError(f"variable-out {local} of {path.name} has no value")
                text = eval_for_string({"resourceType": "TestScript"}, out_value)
                self.variables.append({"name": caller, "defaultValue": text or "asbts_undefined_var",
                                       "expression": None, "sourceId": None, "headerField": None, "path": None})
        action.result = report.result or FAIL
        if report.not_run() and action.failed():
            action.not_run = True
        if report.result == FAIL:
            self.report.result = FAIL

    def _component_path(self, value: str) -> str:
        """AsbestosComponentPath: `#{script:TestCollection.properties:Key}` names the caller's
        variable `script<value of Key>`, whose default value is the module's path."""
        if not value.startswith("#{"):
            return value
        parts = value[2:value.index("}")].split(":") if "}" in value else []
        if len(parts) != 3 or parts[1] != "TestCollection.properties":
            raise ScriptError(f"component {value} is not understood")
        prop = self.ctx.properties.get(parts[2])
        if prop is None:
            raise ScriptError(f"Property value not found for key: {parts[2]}")
        var = self._variable(parts[0] + prop)
        if var is None or var.get("defaultValue") is None:
            return value
        return str(var["defaultValue"])

    # --- assertions (AssertionRunner) -------------------------------------------------------------------
    def _assert(self, check: etree._Element, action: Action) -> None:
        action.description = _value(check, "description") or ""
        action.assert_id = check.get("id", "")
        try:
            self._assert_kind(check, action)
        except Unsupported as exc:
            action.error(f"not run: {exc}", not_run=True)
        except FhirPathError as exc:
            action.error(f"Error evaluating expression (FHIRPath not evaluated here): {exc}", not_run=True)
        except (ScriptError, ValueError, TypeError, KeyError, AttributeError) as exc:
            action.error(f"No assertion or missing assertion fixture dependency ({type(exc).__name__}: {exc})")

    def _assert_kind(self, check: etree._Element, action: Action) -> None:
        source_id, compare_id = _value(check, "sourceId"), _value(check, "compareToSourceId")
        source = self.fixture(source_id if source_id is not None else self.last_op)
        warning_text = _value(check, "warningOnly")
        if warning_text is None:
            action.error("warningOnly is required but missing")
            return
        warning_only = warning_text == "true"
        if _value(check, "compareToSourcePath") is not None and _value(check, "compareToSourceExpression") is not None:
            action.error("has both compareToSourcePath and compareToSourceExpression")
            return
        if compare_id is not None and _value(check, "compareToSourceExpression") is not None:
            compare = self.fixture(compare_id)
            if compare is None:
                action.error("SourceIdSourceExpressionAssertion Error: Null fixture.")
                return
            if compare.resource is None:
                action.error("compareToSourceId or lastOperation references no resource.")
                return
            expression = self.update_reference(_value(check, "compareToSourceExpression"), action)
            if expression is None:
                return
            found = eval_for_string(compare.view(), expression)
            if found == "true":
                action.message = expression
                return
            action.fail(f"assertion failed - {expression} ==> {found}", warning_only)
            return
        if compare_id is not None:
            action.error("has compareToSourceId and neither compareToSourcePath nor compareToSourceExpression")
            return
        kinds = ("minimumId", "resource", "contentType", "headerField", "response", "responseCode",
                 "expression", "requestMethod")
        kind = next((k for k in kinds if _value(check, k) is not None and
                     (k != "headerField" or _value(check, "value") is not None)), None)
        if kind is None:
            action.error("No assertion or missing assertion fixture dependency")
            return
        # AssertionContext.validate: no source fixture is not reported at all (the assertion
        # keeps the pass it started with); a source without a resource is an error
        if source is None:
            action.notes.append("its source fixture does not exist: asbestos does not evaluate it")
            return
        if source.resource is None:
            action.error(f"Fixture referenced <{source.id}> has no resource.")
            return
        operator = _value(check, "operator") or "equals"
        if kind == "minimumId":
            self._minimum_id(check, source, action, warning_only)
        elif kind == "resource":
            expected = _value(check, "resource")
            if expected != source.response_type():
                action.fail(f"expected {expected} found {source.response_type()}", warning_only)
        elif kind == "contentType":
            found = source.headers.get("content-type", "")
            if (_value(check, "contentType") or "").lower() != found.lower():
                action.fail(f"expecting {_value(check, 'contentType')} found {found}", warning_only)
        elif kind == "headerField":
            found = source.headers.get((_value(check, "headerField") or "").lower(), "")
            if found.lower() != (_value(check, "value") or "").lower():
                action.fail(f"{found} != {_value(check, 'value')}", warning_only)
        elif kind in ("response", "responseCode"):
            if source.status is None:
                raise ScriptError("the source fixture has no HTTP response")
            found = RESPONSE_NAMES.get(source.status, "CODE_NOT_UNDERSTOOD") if kind == "response" \
                else str(source.status)
            _compare(action, found, _value(check, kind) or "", operator, warning_only)
        elif kind == "requestMethod":
            if source.method.lower() != (_value(check, "requestMethod") or "").lower():
                action.fail(f"Expected method {_value(check, 'requestMethod')} found {source.method}", warning_only)
        elif _value(check, "value") is not None:
            expression = self.update_reference(_value(check, "expression"), action)
            if expression is None:
                return
            found = eval_for_string(source.view(), expression)
            if found is not None and expression.endswith("response.status"):
                found = found.split(" ")[0]
            expected = self.update_reference(_value(check, "value"), action)
            if expected is None:
                return
            _compare(action, found, expected, operator, warning_only, expression)
        else:
            expression = self.update_reference(_value(check, "expression"), action)
            if expression is None:
                return
            if eval_for_boolean(source.view(), expression):
                action.message = expression
            else:
                action.fail(f"expression {_value(check, 'expression')} failed.", warning_only)

    def _minimum_id(self, check: etree._Element, source: Fixture, action: Action, warning_only: bool) -> None:
        """MinimumIdAssertion: every element path of the reference resource is in the source."""
        reference = self.fixture(_value(check, "minimumId"))
        if reference is None:
            action.error(f"minimumId references fixture {_value(check, 'minimumId')} which cannot be found.")
            return
        if reference.resource is None or source.resource is None:
            action.fail("No source", warning_only)
            return
        if reference.resource.get("resourceType") != source.resource.get("resourceType"):
            action.fail(f"minimumId: cannot compare {reference.response_type()} and {source.response_type()}",
                        warning_only)
            return
        try:
            expected, found = _minimum_keys(reference.resource), _minimum_keys(source.resource)
        except TypeError as exc:
            action.fail(str(exc), warning_only)
            return
        missing = sorted(expected - found)
        if missing:
            action.fail(f"attributes [{', '.join(missing)}] not found ", warning_only)


# --- module-free helpers ------------------------------------------------------------------------------

def _reason(action: Action) -> str:
    """Why an action could not be run, from the deepest action that could not."""
    if action.module is not None:
        for inner in action.module.actions():
            if inner.failed() and inner.not_run:
                return _reason(inner)
        if action.module.failures:
            return action.module.failures[0]
    text = action.message.strip()
    return (text.splitlines()[0] if text else action.result).removeprefix("not run: ")


def _has_errors(fixture: Fixture) -> bool:
    """ResourceWrapper.isOk for a POST: an OperationOutcome with error issues is not ok."""
    resource = fixture.resource or {}
    if fixture.method != "POST" or resource.get("resourceType") != "OperationOutcome":
        return False
    return any(isinstance(i, dict) and i.get("severity") in ("error", "fatal") for i in resource.get("issue") or [])


def _diagnostics(fixture: Fixture) -> str:
    """The server's own words on an error answer (OperationOutcome diagnostics), for the log."""
    resource = fixture.resource or {}
    if (fixture.status or 0) < 400 or resource.get("resourceType") != "OperationOutcome":
        return ""
    texts = [i.get("diagnostics", "") for i in resource.get("issue", []) if isinstance(i, dict)]
    return " (" + "; ".join(t for t in texts if t)[:400] + ")" if any(texts) else ""


def _compare(action: Action, found: str | None, expected: str, operator: str, warning_only: bool,
             expression: str = "") -> None:
    """AssertionRunner.compare."""
    detail = f"Operator is {operator}\nexpected is {expected}\nfound is {found}"
    if expression:
        detail = f"{expression}: {detail}"
    if found is None:
        action.fail(detail, warning_only)
        return
    checks = {
        "equals": lambda: found == expected, "notEquals": lambda: found != expected,
        "in": lambda: found in expected.split(","), "notIn": lambda: found not in expected.split(","),
        "greaterThan": lambda: int(found) > int(expected), "lessThan": lambda: int(found) < int(expected),
        "empty": lambda: found == "", "notEmpty": lambda: found != "",
        "contains": lambda: expected in found, "notContains": lambda: expected not in found,
    }
    if operator not in checks:
        action.fail(f"Do not understand operator {operator}", warning_only)
        return
    if not checks[operator]():
        action.fail(detail, warning_only)
    else:
        action.message = detail


def _minimum_keys(resource: dict[str, Any]) -> set[str]:
    """MinimumId.mapKeys over ResourceHasMethodsFilter.toMap: the element paths of the resource
    (resourceType and text left out; a list of strings contributes its values)."""
    top = {k: v for k, v in resource.items() if k not in ("resourceType", "text") and not k.startswith("_")}
    return _map_keys("", top)


def _map_keys(base: str, value: Any) -> set[str]:
    keys: set[str] = set()
    if isinstance(value, dict):
        for key, item in value.items():
            if key.startswith("_"):
                continue
            if isinstance(item, (str, int, float)) and not isinstance(item, bool):
                keys.add(base + key)
            elif isinstance(item, (dict, list)):
                keys |= _map_keys(f"{base}{key}.", item)
            else:
                raise TypeError(f"Do not understand type {type(item).__name__}")
    elif isinstance(value, list):
        for item in value:
            if isinstance(item, str):
                keys.add(item)
            elif isinstance(item, (dict, list)):
                keys |= _map_keys(base, item)
            else:
                raise TypeError(f"Do not understand type {type(item).__name__}")
    return keys


def _module_header(path: Path) -> dict[str, list[str]]:
    """ComponentDefinition: the module's declared parameters, in order."""
    root = parse_xml(path.read_bytes())
    header = _extension(root, "urn:module")
    out: dict[str, list[str]] = {k: [] for k in ("urn:fixture-in", "urn:fixture-out", "urn:variable-in",
                                                  "urn:variable-in-no-translation", "urn:variable-out")}
    if header is None:
        raise ScriptError(f"TestScript module {path.name} has no module header")
    for url, value in _ext_values(header):
        if url not in out:
            raise ScriptError(f"Do not understand extension {url} in ComponentDefinition {path.name}")
        out[url].append(value)
    return out

