"""A TestScript interpreter for the asbestos dialect the NIST MHD collections use.

Supported: setup/test actions; operations `mhd-pdb-transaction`, `internalFtkRequest`
(ftkLoadFixture only), `eventPart` (the answer an earlier test of the run got), `search`,
`read`, `create`, `save-to-cache`; module imports
(`TestScript-Import` with urn:variable-in/-out, urn:fixture-in/-out, `#{...}` properties
and `scriptMHDv420`-style component indirection); variables (defaultValue, expression on a
fixture, headerField) resolved lazily where they are used; asserts `response`,
`responseCode`, `resource`, `expression` (+ value/operator), `compareToSourceExpression`,
`minimumId`, `requestMethod`; the `TestScript-Conditional`, `urn:noErrors`,
`expectFailure` and `mayHaveBugsWhichRequireManualReview` extensions.

Anything else is a step that is *not run*, reported with the reason, never a pass.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import requests
from lxml import etree

from ...xmlsafe import parse_xml
from . import fixtures
from .fhirpath import FhirPathError, as_text, evaluate, is_true

F = "{http://hl7.org/fhir}"
IMPORT = "https://github.com/usnistgov/asbestos/wiki/TestScript-Import"
CONDITIONAL = "https://github.com/usnistgov/asbestos/wiki/TestScript-Conditional"
NO_ERRORS = "urn:noErrors"
EXPECT_FAILURE = "urn:asbestos:test:action:expectFailure"
MANUAL = "urn:asbestos:test:action:mayHaveBugsWhichRequireManualReview"
RESPONSE_CODES = {"okay": 200, "created": 201, "noContent": 204, "notModified": 304, "bad": 400,
                  "forbidden": 403, "notFound": 404, "methodNotAllowed": 405, "conflict": 409,
                  "gone": 410, "preconditionFailed": 412, "unprocessable": 422}
PASS, FAIL, NOT_RUN, SKIPPED, WARNING, MANUAL_REVIEW = "pass", "fail", "not run", "skipped", "warning", "manual"
EMPTY = "{}"
_VAR = re.compile(r"\$\{([A-Za-z0-9_.\-]+)\}")
_PROP = re.compile(r"#\{(script:)?TestCollection\.properties:([A-Za-z0-9_]+)(?::[A-Za-z]+)?\}")


@dataclass
class Step:
    kind: str                  # operation | assert | module
    description: str
    outcome: str
    message: str = ""
    assert_id: str = ""
    children: list[Step] = field(default_factory=list)

    def failed_ids(self) -> set[str]:
        out = {self.assert_id} if self.outcome == FAIL and self.assert_id else set()
        for child in self.children:
            out |= child.failed_ids()
        return out

    def ids_with(self, outcome: str) -> set[str]:
        out = {self.assert_id} if self.outcome == outcome and self.assert_id else set()
        for child in self.children:
            out |= child.ids_with(outcome)
        return out

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "description": self.description, "outcome": self.outcome}
        if self.message:
            out["message"] = self.message
        if self.assert_id:
            out["id"] = self.assert_id
        if self.children:
            out["steps"] = [c.as_dict() for c in self.children]
        return out


def verdict(steps: list[Step]) -> str:
    """fail if a step failed; not run if a step that counts could not run; else pass.

    A module step already carries its children's verdict; skipped (conditional), manual
    review, warning and expected-failure steps neither fail nor block a pass.
    """
    outcomes = {step.outcome for step in steps}
    if FAIL in outcomes:
        return FAIL
    if NOT_RUN in outcomes:
        return NOT_RUN
    return PASS


@dataclass
class Fixture:
    resource: Any = None           # FHIR JSON for FHIRPath
    raw: str | None = None         # text to send (a fixture file, templated)
    status: int | None = None
    headers: dict[str, str] = field(default_factory=dict)
    method: str = ""


class Unsupported(Exception):
    """A TestScript feature this runner does not implement: the step is not run."""


@dataclass
class Environment:
    """What every script of a run shares: the server, the collections, the Patient cache."""

    fhir_base: str
    collections: Path
    properties: dict[str, str]
    collection_dir: Path
    test_dir: Path
    cache: dict[str, Fixture] = field(default_factory=dict)
    events: dict[str, Fixture] = field(default_factory=dict)   # "<collection Id>/<test>" -> first PDB response
    session: requests.Session = field(default_factory=requests.Session)
    timeout: float = 60.0


class Var:
    """A variable bound to the script that declared it (so it reads that script's fixtures)."""

    def __init__(self, ctx: Script | None, name: str, default: str | None = None,
                 expression: str | None = None, source: str | None = None, header: str | None = None) -> None:
        self.ctx, self.name, self.default = ctx, name, default
        self.expression, self.source, self.header = expression, source, header

    def text(self, depth: int = 0) -> str:
        if depth > 20:
            raise Unsupported(f"variable {self.name} refers to itself")
        if self.default is not None:
            return self.ctx.substitute(self.default, depth=depth + 1) if self.ctx else self.default
        if self.header is not None:
            fixture = self.ctx.fixture(self.source)
            return (fixture.headers if fixture else {}).get(self.header.lower(), "")
        expression = self.ctx.substitute(self.expression or "", depth=depth + 1)
        fixture = self.ctx.fixture(self.source) if self.source not in (None, "anonymous") else None
        if self.source not in (None, "anonymous") and (fixture is None or fixture.resource is None):
            return EMPTY
        values = evaluate(fixture.resource if fixture else {}, expression)
        # asbestos writes a variable without a value as the empty collection `{}`
        return as_text(values) if values else EMPTY

    def final(self) -> str:
        """The value where it is used as data (URL, body, compared value)."""
        text = self.text()
        if self.default is None:
            return text
        try:
            values = evaluate({}, text)
        except FhirPathError:
            return text
        if len(values) == 1 and isinstance(values[0], (str, int, float, bool)):
            return as_text(values)
        return text


def _value(element: etree._Element | None, name: str) -> str | None:
    if element is None:
        return None
    child = element.find(F + name)
    return child.get("value") if child is not None else None


def _extensions(element: etree._Element, url: str) -> list[etree._Element]:
    return [e for e in element.findall(F + "modifierExtension") if e.get("url") == url]


def _ext_values(element: etree._Element) -> list[tuple[str, str | None]]:
    out = []
    for ext in element.findall(F + "extension"):
        vs = ext.find(F + "valueString")
        out.append((ext.get("url", ""), vs.get("value") if vs is not None else None))
    return out


class Script:
    """One TestScript (or module) execution."""

    def __init__(self, path: Path, env: Environment, variables: dict[str, Var] | None = None,
                 fixtures_in: dict[str, Fixture] | None = None) -> None:
        self.path, self.env = path, env
        self.root = parse_xml(path.read_bytes())
        self.vars: dict[str, Var] = {}
        self.fixtures: dict[str, Fixture] = dict(fixtures_in or {})
        self.last: str | None = None
        self.failed = False
        header = _extensions(self.root, "urn:module")
        self.module_vars_in = [v for u, v in _ext_values(header[0]) if u == "urn:variable-in"] if header else []
        self.module_fix_in = [v for u, v in _ext_values(header[0]) if u == "urn:fixture-in"] if header else []
        self.module_vars_out = [v for u, v in _ext_values(header[0]) if u == "urn:variable-out"] if header else []
        self.module_fix_out = [v for u, v in _ext_values(header[0]) if u == "urn:fixture-out"] if header else []
        for var in self.root.findall(F + "variable"):
            name = _value(var, "name") or ""
            self.vars[name] = Var(self, name, _value(var, "defaultValue"), _value(var, "expression"),
                                  _value(var, "sourceId"), _value(var, "headerField"))
        self.vars.update(variables or {})
        for fx in self.root.findall(F + "fixture"):
            self._declare_fixture(fx)

    # --- fixtures and variables ------------------------------------------------------------------
    def _declare_fixture(self, fx: etree._Element) -> None:
        fid = fx.get("id", "")
        ref = fx.find(f"{F}resource/{F}reference")
        sub = [e for e in fx.findall(F + "extension") if e.get("url") == "urn:subFixture"]
        if ref is not None:
            target = ref.get("value", "")
            if target in self.env.cache:
                self.fixtures[fid] = self.env.cache[target]
                return
            candidate = (self.path.parent / target) if not target.startswith("Patient/") or \
                (self.path.parent / target).is_file() else self.env.test_dir / target
            if candidate.is_file():
                text = candidate.read_text()
                self.fixtures[fid] = Fixture(fixtures.xml_to_json(text), text)
        elif sub:
            values = dict(_ext_values(sub[0]))
            self._subfixtures = getattr(self, "_subfixtures", {})
            self._subfixtures[fid] = (values.get("urn:fhirPath"), values.get("urn:sourceId"))

    def fixture(self, name: str | None) -> Fixture | None:
        if name is None:
            return self.fixtures.get(self.last) if self.last else None
        if name in self.fixtures:
            return self.fixtures[name]
        sub = getattr(self, "_subfixtures", {}).get(name)
        if sub:
            source = self.fixtures.get(sub[1] or "")
            if source is None or source.resource is None:
                return None
            values = evaluate(source.resource, sub[0] or "")
            if values:
                value = values[0]
                if isinstance(value, dict) and "resource" in value and "resourceType" not in value:
                    value = value["resource"]
                return Fixture(value)
        return None

    def property(self, name: str) -> str:
        return self.env.properties.get(name, "")

    def substitute(self, text: str, *, final: bool = False, depth: int = 0, strict: bool = True) -> str:
        def prop(match: re.Match) -> str:
            value = self.property(match.group(2))
            if match.group(1):   # #{script:...}: the variable named "script" + the property
                var = self.vars.get(f"script{value}")
                if var is None:
                    raise Unsupported(f"no variable script{value} for {match.group(0)}")
                return var.text(depth + 1)
            return value

        def var(match: re.Match) -> str:
            v = self.vars.get(match.group(1))
            if v is None:
                if not strict:
                    return match.group(0)
                raise Unsupported(f"variable {match.group(1)} is not defined")
            return v.final() if final else v.text(depth + 1)
        return _VAR.sub(var, _PROP.sub(prop, text))

    # --- running ------------------------------------------------------------------------------------
    def run(self) -> list[Step]:
        steps: list[Step] = []
        setup = self.root.find(F + "setup")
        sections = ([setup] if setup is not None else []) + self.root.findall(F + "test")
        for section in sections:
            label = _value(section, "description") or ("setup" if section is setup else "test")
            if _extensions(section, NO_ERRORS) and self.failed:
                steps.append(Step("module", label, SKIPPED, "skipped: an earlier part of the script failed"))
                continue
            children = self._run_actions(section)
            outcome = verdict(children) if children else PASS
            steps.append(Step("module", label, outcome, children=children))
        return steps

    def _run_actions(self, section: etree._Element) -> list[Step]:
        out: list[Step] = []
        actions = section.findall(F + "action")
        for action in actions:
            conditional = bool(_extensions(action, CONDITIONAL))
            manual = bool(_extensions(action, MANUAL))
            expect = _extensions(action, EXPECT_FAILURE)
            operation, check = action.find(F + "operation"), action.find(F + "assert")
            try:
                if operation is not None:
                    step = self._operation(operation)
                elif check is not None:
                    step = self._assert(check)
                else:
                    step = Step("action", "empty action", PASS)
            except Unsupported as exc:
                step = Step("operation" if operation is not None else "assert",
                            _value(operation if operation is not None else check, "description") or "",
                            NOT_RUN, f"unsupported: {exc}")
            except (FhirPathError, requests.RequestException, OSError, ValueError) as exc:
                step = Step("operation" if operation is not None else "assert",
                            _value(operation if operation is not None else check, "description") or "",
                            NOT_RUN if isinstance(exc, FhirPathError) else FAIL,
                            f"unsupported: FHIRPath {exc}" if isinstance(exc, FhirPathError) else str(exc),
                            check.get("id", "") if check is not None else "")
            if expect:
                step = self._expected_failure(step, expect[0])
            if manual and step.outcome in (NOT_RUN, FAIL):
                step.outcome, step.message = MANUAL_REVIEW, (step.message + " (needs manual review)").strip()
            if operation is not None and step.outcome == NOT_RUN and not manual:
                out.append(step)
                out += [Step("action", _value(a.find(F + "assert"), "description") or "", NOT_RUN,
                             "depends on an operation that was not run") for a in actions[actions.index(action) + 1:]]
                break
            if conditional and step.outcome == NOT_RUN:   # a condition we cannot evaluate decides nothing
                step.message = f"condition could not be evaluated, the rest of this test is not run ({step.message})"
                out.append(step)
                break
            if conditional and step.outcome != PASS:
                step.outcome = SKIPPED
                step.message = f"condition not met, the rest of this test is skipped ({step.message})"
                out.append(step)
                break
            if step.outcome == FAIL:
                self.failed = True
            out.append(step)
        return out

    def _expected_failure(self, step: Step, ext: etree._Element) -> Step:
        ids_text = dict(_ext_values(ext)).get("urn:asbestos:test:action:assertionIdList") or ""
        ids_text = self.substitute(ids_text)
        expected = {as_text([v]) for v in evaluate({}, ids_text)} if ids_text else set()
        failed = step.failed_ids()
        missing = expected - failed
        extra = failed - expected
        unevaluated = missing & step.ids_with(NOT_RUN)
        if unevaluated:
            step.outcome = NOT_RUN
            step.message = f"expected failures {sorted(unevaluated)} could not be evaluated here"
            return step
        if missing:
            step.outcome = FAIL
            step.message = f"expected these assertions to fail: {sorted(missing)}; failed: {sorted(failed)}"
        else:
            step.outcome = PASS
            step.message = f"expected failures {sorted(expected)} occurred" + \
                (f"; also failed: {sorted(extra)}" if extra else "")
            _neutralise(step)
        return step

    # --- operations --------------------------------------------------------------------------------
    def _operation(self, op: etree._Element) -> Step:
        description = _value(op, "description") or ""
        imports = _extensions(op, IMPORT)
        if imports:
            return self._module(imports[0], description)
        code = _value(op.find(F + "type"), "code") or ""
        response_id = _value(op, "responseId")
        if code == "mhd-pdb-transaction":
            source = self.fixture(_value(op, "sourceId"))
            if source is None or source.raw is None:
                raise Unsupported("the Bundle fixture to send was not loaded")
            body = self.substitute(source.raw, final=True)
            try:
                source.resource = fixtures.xml_to_json(body, hapi_contained_ids=True)
            except Exception:   # the server must judge a broken Bundle; the checks read what we can
                pass
            source.method = f"POST {self.env.fhir_base}"
            fx = self._http("POST", self.env.fhir_base, body, "application/fhir+xml")
            self.env.events.setdefault(f"{self.property('Id')}/{self.env.test_dir.name}", fx)
        elif code == "internalFtkRequest":
            fx = self._internal(op)
        elif code == "eventPart":
            fx = self._event_part(op)
        elif code in ("search", "read"):
            url = _value(op, "url")
            if url:
                url = self.substitute(url, final=True)
            else:
                resource = (_value(op, "resource") or "").strip()
                params = self.substitute((_value(op, "params") or "").strip(), final=True)
                target = _value(op, "targetId")
                if target:
                    raise Unsupported("read by targetId")
                url = f"{resource}{params}"
            if not url.startswith(("http://", "https://")):
                url = f"{self.env.fhir_base}/{url.lstrip('/')}"
            fx = self._http("GET", url)
        elif code == "create":
            source = self.fixture(_value(op, "sourceId"))
            if source is None or source.resource is None:
                raise Unsupported("the fixture to create was not loaded")
            body = self.substitute(source.raw, final=True) if source.raw else None
            fx = self._http("POST", f"{self.env.fhir_base}/{source.resource['resourceType']}", body,
                            "application/fhir+xml")
        elif code == "save-to-cache":
            name = self.substitute(_value(op, "url") or "", final=True)
            source = self.fixture(_value(op, "sourceId"))
            if source is None:
                raise Unsupported("nothing to save to the cache")
            self.env.cache[f"Patient/{name}"] = source
            return Step("operation", description or "save to cache", PASS, f"cached Patient/{name}")
        else:
            raise Unsupported(f"operation type {code!r} is not supported by this runner")
        name = response_id or f"_op{id(fx)}"
        self.fixtures[name] = fx
        self.last = name
        outcome = PASS if fx.status is not None else FAIL
        return Step("operation", description or code, outcome, f"{fx.method} -> HTTP {fx.status}"
                    + _diagnostics(fx))

    def _http(self, method: str, url: str, body: str | None = None, content_type: str = "") -> Fixture:
        headers = {"Accept": "application/fhir+json"}
        if content_type:
            headers["Content-Type"] = content_type
        response = self.env.session.request(method, url, data=body.encode() if body else None,
                                            headers=headers, timeout=self.env.timeout)
        try:
            resource = response.json()
        except ValueError:
            resource = None
        return Fixture(resource, None, response.status_code,
                       {k.lower(): v for k, v in response.headers.items()}, f"{method} {url}")

    def _internal(self, op: etree._Element) -> Fixture:
        codes = {(_value(h, "field") or "").lower(): _value(h, "value") or ""
                 for h in op.findall(F + "requestHeader")}
        request_code = self.substitute(codes.get("x-internalftkrequestcode", ""), final=True)
        if request_code != "ftkLoadFixture":
            raise Unsupported(f"internal FTK request {request_code!r} (asbestos-internal service)")
        query = self.substitute(_value(op, "url") or "", final=True).lstrip("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        base = params.get("baseTestCollection", "")
        test_name = params.get("baseTestName", self.env.test_dir.name)
        text = fixtures.load_fixture(self.env.collections, base, test_name, params.get("fixtureId", ""),
                                     self.env.test_dir)
        # ${...} left in the fixture are filled when it is sent (urn:variable-in-no-translation)
        resource = fixtures.xml_to_json(self.substitute(text, final=True, strict=False).replace("${", "$_{"),
                                        hapi_contained_ids=True)
        return Fixture(resource, text, 200, {}, f"load fixture {query}")

    def _event_part(self, op: etree._Element) -> Fixture:
        """The response body a previous test's first PDB got (asbestos reads it from its log)."""
        url = self.substitute(_value(op, "url") or "", final=True)
        test_id, _, query = url.lstrip("/").partition("?")
        params = {k: v[-1] for k, v in parse_qs(query).items()}
        if params.get("module") != "SendPDB" or params.get("return") != "responseBody":
            raise Unsupported(f"eventPart {url}")
        event = self.env.events.get(test_id)
        if event is None:
            return Fixture(None, None, 404, {}, f"event {test_id}")
        return Fixture(event.resource, None, 200, {}, f"event {test_id}")

    def _module(self, ext: etree._Element, description: str) -> Step:
        args = _ext_values(ext)
        component = next((v for u, v in args if u == "component"), None) or ""
        component = self.substitute(component)
        path = (self.path.parent / component).resolve()
        if not path.is_file():
            raise Unsupported(f"module {component} not found")
        # read the module header first to map positional arguments onto its names
        probe = Script(path, self.env)
        variables: dict[str, Var] = {}
        fixtures_in: dict[str, Fixture] = {}
        var_in = [v for u, v in args if u == "urn:variable-in"]
        for position, value in enumerate(var_in):
            if position >= len(probe.module_vars_in) or value is None or value == "":
                continue
            name = probe.module_vars_in[position]
            if len(value) >= 2 and value[0] == value[-1] == "'":
                variables[name] = Var(self, name, default=value[1:-1])
            elif value in self.vars:
                variables[name] = self.vars[value]
        for u, value in args:
            if u == "urn:variable-in-no-translation" and value in self.vars:
                variables[value] = self.vars[value]
        fix_in = [v for u, v in args if u == "urn:fixture-in"]
        for position, value in enumerate(fix_in):
            if position < len(probe.module_fix_in) and value:
                fx = self.fixture(value)
                if fx is not None:
                    fixtures_in[probe.module_fix_in[position]] = fx
        module = Script(path, self.env, variables, fixtures_in)
        children = module.run()
        for position, value in enumerate(v for u, v in args if u == "urn:fixture-out"):
            if position < len(module.module_fix_out) and value:
                out = module.fixtures.get(module.module_fix_out[position])
                if out is not None:
                    self.fixtures[value] = out
                    self.last = value
        for position, value in enumerate(v for u, v in args if u == "urn:variable-out"):
            if position < len(module.module_vars_out) and value:
                var = module.vars.get(module.module_vars_out[position])
                if var is not None:
                    self.vars[value] = var
        return Step("module", description or path.name, verdict(children), path.name, children=children)

    # --- asserts ---------------------------------------------------------------------------------------
    def _assert(self, a: etree._Element) -> Step:
        description = _value(a, "description") or ""
        aid = a.get("id", "")
        warning = (_value(a, "warningOnly") or "false") == "true"
        ok, message = self._check(a)
        outcome = PASS if ok else (WARNING if warning else FAIL)
        return Step("assert", description, outcome, message, aid)

    def _check(self, a: etree._Element) -> tuple[bool, str]:
        source = _value(a, "sourceId")
        operator = _value(a, "operator") or "equals"
        expected = _value(a, "value")
        if expected is not None:
            expected = self.substitute(expected, final=True)
        if _value(a, "response") is not None:
            fx = self.fixture(source)
            want = RESPONSE_CODES.get(_value(a, "response") or "")
            got = fx.status if fx else None
            return got == want, f"HTTP {got}, expected {want}"
        if _value(a, "responseCode") is not None:
            fx = self.fixture(source)
            return _compare(str(fx.status if fx else ""), operator,
                            self.substitute(_value(a, "responseCode") or "", final=True)), \
                f"HTTP {fx.status if fx else None}"
        if _value(a, "resource") is not None:
            fx = self.fixture(source)
            got = (fx.resource or {}).get("resourceType") if fx else None
            return got == _value(a, "resource"), f"resource {got}"
        if _value(a, "requestMethod") is not None:   # the request this script was handed, if any
            fx = self.fixture(source) or self.fixtures.get("request")
            got = fx.method.split(" ")[0].lower() if fx else ""
            return got == (_value(a, "requestMethod") or "").lower(), f"method {got}"
        if _value(a, "compareToSourceExpression") is not None:
            fx = self.fixture(_value(a, "compareToSourceId"))
            if fx is None or fx.resource is None:
                return False, f"fixture {_value(a, 'compareToSourceId')} has no resource"
            expression = self.substitute(_value(a, "compareToSourceExpression") or "")
            values = evaluate(fx.resource, expression)
            return is_true(values), f"{expression} -> {values[:3]}"
        if _value(a, "expression") is not None:
            fx = self.fixture(source)
            expression = self.substitute(_value(a, "expression") or "")
            values = evaluate(fx.resource if fx else {}, expression)
            if expected is None:
                return is_true(values), f"{expression} -> {values[:3]}"
            got = as_text(values)
            if expression.rstrip().endswith("response.status"):   # "201 Created" compares as "201"
                got = got.split(" ")[0]
            return _compare(got, operator, expected), f"{expression} -> {got!r}"
        if _value(a, "minimumId") is not None:
            reference = self.fixture(_value(a, "minimumId"))
            fx = self.fixture(source)
            if reference is None or reference.resource is None or fx is None or fx.resource is None:
                return False, "minimumId: a fixture is missing"
            missing = _missing_paths(reference.resource, fx.resource)
            return not missing, f"missing in the server's copy: {missing[:10]}" if missing else "all present"
        raise Unsupported("assert kind not supported by this runner")


def _diagnostics(fx: Fixture) -> str:
    """The server's own words on an error answer (OperationOutcome diagnostics), for the log."""
    resource = fx.resource if isinstance(fx.resource, dict) else {}
    if (fx.status or 0) < 400 or resource.get("resourceType") != "OperationOutcome":
        return ""
    texts = [i.get("diagnostics", "") for i in resource.get("issue", []) if isinstance(i, dict)]
    return " (" + "; ".join(t for t in texts if t)[:400] + ")" if any(texts) else ""


def _neutralise(step: Step) -> None:
    """Inside an expected-failure block, the expected failures are the point: not failures."""
    for child in step.children:
        if child.outcome == FAIL:
            child.outcome = "expected failure"
        _neutralise(child)


def _compare(got: str, operator: str, expected: str) -> bool:
    ops: dict[str, Callable[[], bool]] = {
        "equals": lambda: got == expected, "notEquals": lambda: got != expected,
        "in": lambda: got in expected.split(","), "notIn": lambda: got not in expected.split(","),
        "contains": lambda: expected in got, "notContains": lambda: expected not in got,
        "empty": lambda: got == "", "notEmpty": lambda: got != "",
        "greaterThan": lambda: _num(got) > _num(expected), "lessThan": lambda: _num(got) < _num(expected),
    }
    if operator not in ops:
        raise Unsupported(f"assert operator {operator!r}")
    return ops[operator]()


def _num(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


IGNORED = {"id", "meta", "text", "fullUrl", "request"}


def _missing_paths(expected: Any, actual: Any, path: str = "") -> list[str]:
    """minimumId: every element present in the expected resource is present in the actual one."""
    if isinstance(expected, dict):
        if not isinstance(actual, dict):
            return [path or "."]
        out = []
        for key, value in expected.items():
            if key in IGNORED and path == "":
                continue
            if key not in actual:
                out.append(f"{path}.{key}".lstrip("."))
            else:
                out += _missing_paths(value, actual[key], f"{path}.{key}")
        return out
    if isinstance(expected, list):
        if not isinstance(actual, list) or len(actual) < len(expected):
            return [path]
        out = []
        for i, item in enumerate(expected):
            out += _missing_paths(item, actual[i], f"{path}[{i}]")
        return out
    return []
