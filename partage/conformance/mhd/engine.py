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

The operations are in `operations.py`, the assertions in `assertions.py`, the report and its
verdict rules in `model.py`, the reading of TestScript XML in `scripts.py`.

What asbestos does with its own services and this runner cannot do (FHIR IG validation,
`ftkValidate` / `ftkFunctionCode`) is *not run*: a test whose verdict depends on it is
reported "not run", never passed; asbestos itself leaves these parts to manual review.
"""

from __future__ import annotations

import copy
import uuid
from pathlib import Path

import requests
from lxml import etree

from ...xmlsafe import parse_xml
from . import assertions, hapi, operations
from . import fixtures as fixture_service
from .fhirpath import FhirPathError, eval_for_boolean, eval_for_entry_resource, eval_for_string
from .model import (
    ERROR,
    FAIL,
    PASS,
    WARNING,
    Action,
    CircularReference,
    Fixture,
    Report,
    ScriptError,
    Section,
    TestContext,
    Unsupported,
)
from .scripts import (
    ASSERTION_IDS,
    CONDITIONAL,
    EXPECT_FAILURE,
    IMPORT,
    MANUAL,
    MULTI_ERRORS,
    NO_ERRORS,
    SUB_FIXTURE,
    F,
    extension_values,
    java_hash_order,
    modifier_extension,
    module_header,
    property_value,
    value_of,
)

EMPTY_SET = "{}"


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
            self.variables.append({k: value_of(var, k) for k in
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
            if value_of(fx, "autocreate") is None or value_of(fx, "autodelete") is None:
                raise ScriptError("fixture.autocreate and fixture.autodelete are required")
            if value_of(fx, "autocreate") == "true" or value_of(fx, "autodelete") == "true":
                raise Unsupported("fixture autocreate / autodelete")
            reference = value_of(fx.find(F + "resource"), "reference")
            sub = next((e for e in fx.findall(F + "extension") if e.get("url") == SUB_FIXTURE), None)
            if reference is not None:
                self._put(fid, self._load_static(fid, reference))
            elif sub is not None:
                values = dict(extension_values(sub))
                self._put(fid, Fixture(fid, sub=(values.get("urn:sourceId", ""), values.get("urn:fhirPath", ""))))

    def _setup(self, setup: etree._Element) -> None:
        section = Section(value_of(setup, "description") or "setup", setup=True)
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
            elif check is not None:
                self._assert(check, action)
                if action.failed():
                    self.report.result = FAIL
                    return
            if self.report.has_error():
                return

    def _tests(self) -> None:
        for test in self.root.findall(F + "test"):
            if modifier_extension(test, NO_ERRORS) is not None and self.report.result != PASS:
                return
            section = Section(value_of(test, "description") or value_of(test, "name") or "test")
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
        multi = modifier_extension(test, MULTI_ERRORS) is not None
        actions = test.findall(F + "action")
        if not actions:
            self.report.terminal_failure("TestEngine doTestPart Error. Has no Action.")
            return False
        for i, element in enumerate(actions):
            conditional = modifier_extension(element, CONDITIONAL) is not None
            expect = modifier_extension(element, EXPECT_FAILURE)
            manual = modifier_extension(element, MANUAL) is not None
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
            elif check is not None:
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
        values = extension_values(expect)
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
        action.description = value_of(op, "description") or ""
        try:
            if op.find(F + "type") is not None:
                operations.perform(self, op, action, followed)
                self.report.propagate_status()
            elif op.find(F + "modifierExtension") is not None:
                ext = modifier_extension(op, IMPORT)
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


    # --- module calls (TestEngine.handleImport) ---------------------------------------------------------
    def _import(self, ext: etree._Element, action: Action) -> None:
        args = extension_values(ext)
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
        header = module_header(path)
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
        action.description = value_of(check, "description") or ""
        action.assert_id = check.get("id", "")
        try:
            assertions.evaluate(self, check, action)
        except Unsupported as exc:
            action.error(f"not run: {exc}", not_run=True)
        except FhirPathError as exc:
            action.error(f"Error evaluating expression (FHIRPath not evaluated here): {exc}", not_run=True)
        except (ScriptError, ValueError, TypeError, KeyError, AttributeError) as exc:
            action.error(f"No assertion or missing assertion fixture dependency ({type(exc).__name__}: {exc})")


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
