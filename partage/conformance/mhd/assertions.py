"""The assertions of a TestScript as asbestos' AssertionRunner dispatches and judges them
(SourceIdSourceExpression, MinimumId, Resource, ContentType, HeaderField, Response,
ResponseCode, ExpressionValue, Expression, RequestMethod assertions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lxml import etree

from .fhirpath import eval_for_boolean, eval_for_string
from .model import Action, Fixture, ScriptError
from .scripts import value_of

if TYPE_CHECKING:
    from .engine import Engine

RESPONSE_NAMES = {200: "okay", 201: "created", 204: "noContent", 304: "notModified", 400: "bad", 403: "forbidden",
                  404: "notFound", 405: "methodNotAllowed", 409: "conflict", 410: "gone",
                  412: "preconditionFailed", 422: "unprocessable", 500: "server failure"}


def evaluate(script: Engine, check: etree._Element, action: Action) -> None:
    source_id, compare_id = value_of(check, "sourceId"), value_of(check, "compareToSourceId")
    source = script.fixture(source_id if source_id is not None else script.last_op)
    warning_text = value_of(check, "warningOnly")
    if warning_text is None:
        action.error("warningOnly is required but missing")
        return
    warning_only = warning_text == "true"
    if value_of(check, "compareToSourcePath") is not None and value_of(check, "compareToSourceExpression") is not None:
        action.error("has both compareToSourcePath and compareToSourceExpression")
        return
    if compare_id is not None and value_of(check, "compareToSourceExpression") is not None:
        compare = script.fixture(compare_id)
        if compare is None:
            action.error("SourceIdSourceExpressionAssertion Error: Null fixture.")
            return
        if compare.resource is None:
            action.error("compareToSourceId or lastOperation references no resource.")
            return
        expression = script.update_reference(value_of(check, "compareToSourceExpression"), action)
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
    kind = next((k for k in kinds if value_of(check, k) is not None and
                 (k != "headerField" or value_of(check, "value") is not None)), None)
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
    operator = value_of(check, "operator") or "equals"
    if kind == "minimumId":
        _minimum_id(script, check, source, action, warning_only)
    elif kind == "resource":
        expected = value_of(check, "resource")
        if expected != source.response_type():
            action.fail(f"expected {expected} found {source.response_type()}", warning_only)
    elif kind == "contentType":
        found = source.headers.get("content-type", "")
        if (value_of(check, "contentType") or "").lower() != found.lower():
            action.fail(f"expecting {value_of(check, 'contentType')} found {found}", warning_only)
    elif kind == "headerField":
        found = source.headers.get((value_of(check, "headerField") or "").lower(), "")
        if found.lower() != (value_of(check, "value") or "").lower():
            action.fail(f"{found} != {value_of(check, 'value')}", warning_only)
    elif kind in ("response", "responseCode"):
        if source.status is None:
            raise ScriptError("the source fixture has no HTTP response")
        found = RESPONSE_NAMES.get(source.status, "CODE_NOT_UNDERSTOOD") if kind == "response" \
            else str(source.status)
        _compare(action, found, value_of(check, kind) or "", operator, warning_only)
    elif kind == "requestMethod":
        if source.method.lower() != (value_of(check, "requestMethod") or "").lower():
            action.fail(f"Expected method {value_of(check, 'requestMethod')} found {source.method}", warning_only)
    elif value_of(check, "value") is not None:
        expression = script.update_reference(value_of(check, "expression"), action)
        if expression is None:
            return
        found = eval_for_string(source.view(), expression)
        if found is not None and expression.endswith("response.status"):
            found = found.split(" ")[0]
        expected = script.update_reference(value_of(check, "value"), action)
        if expected is None:
            return
        _compare(action, found, expected, operator, warning_only, expression)
    else:
        expression = script.update_reference(value_of(check, "expression"), action)
        if expression is None:
            return
        if eval_for_boolean(source.view(), expression):
            action.message = expression
        else:
            action.fail(f"expression {value_of(check, 'expression')} failed.", warning_only)

def _minimum_id(script: Engine, check: etree._Element, source: Fixture, action: Action, warning_only: bool) -> None:
    """MinimumIdAssertion: every element path of the reference resource is in the source."""
    reference = script.fixture(value_of(check, "minimumId"))
    if reference is None:
        action.error(f"minimumId references fixture {value_of(check, 'minimumId')} which cannot be found.")
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
