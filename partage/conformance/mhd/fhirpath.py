"""FHIRPath for the test kit, with the HAPI dialect the asbestos scripts are written in.

asbestos evaluates with HAPI FHIR, where a primitive has a `.value` (`status.value`);
in FHIR JSON a primitive is the value itself. `.value` is rewritten to "the element's
value if it has one, else the element", which is what HAPI means in both cases.
"""

from __future__ import annotations

import importlib
import re
from typing import Any

from fhirpathpy import evaluate as _evaluate
from fhirpathpy.engine import do_eval as _do_eval
from fhirpathpy.engine import invocations as _invocations
from fhirpathpy.engine import util as _util
from fhirpathpy.engine.invocations import collections as _collections
from fhirpathpy.engine.invocations import types as _types
from fhirpathpy.engine.nodes import ResourceNode, TypeInfo
from fhirpathpy.models import models

_MODEL = models["r4"]
_VALUE = re.compile(r"\.value(?![A-Za-z0-9_\[(])")
_GROUP = re.compile(r"\.\s*\(")   # HAPI: `a.(expr)` evaluates expr on each item of a


def _hapi_string(fn):
    """HAPI's (pre-2023) string functions: false on an empty focus, the first item of a list."""
    def call(ctx, coll, *args):
        if not coll:
            return False
        return fn(ctx, coll[:1], *args)
    return call


def _hapi_is(ctx, coll, type_info):
    TypeInfo.model = ctx.get("model")
    if len(coll) != 1:
        return False
    return TypeInfo.from_value(coll[0]).is_(type_info)


def _hapi_as(ctx, coll, type_info):
    TypeInfo.model = ctx.get("model")
    return [item for item in coll if TypeInfo.from_value(item).is_(type_info)]


def _hapi_in(ctx, a, b):
    """`x in (...)` with several x: true when every x is in the right-hand collection."""
    if len(a) <= 1:
        return _collections.inn(ctx, a, b)
    return all(_collections.contains_impl(ctx, b, [item]) for item in a)


def _patch(table: dict) -> None:
    for name in ("startsWith", "endsWith", "contains", "matches"):
        entry = {k: v for k, v in table[name].items() if k != "nullable_input"}
        if not getattr(entry["fn"], "hapi", False):
            entry["fn"] = _hapi_string(entry["fn"])
            entry["fn"].hapi = True
        table[name] = entry
    replacements = {_collections.inn: _hapi_in, _types.is_fn: _hapi_is, _types.as_fn: _hapi_as}
    for name, entry in list(table.items()):
        if entry.get("fn") in replacements:
            table[name] = {**entry, "fn": replacements[entry["fn"]]}


# fhirpathpy has no hook that keeps type information for user functions, so the HAPI
# behaviour is installed in its base table (which its engine reads at every call).
_patch(_invocations.invocation_registry)
_evaluators = importlib.import_module("fhirpathpy.engine.evaluators")
_member_invocation = _evaluators.member_invocation


def _hapi_member(ctx, parent, node):
    """A type name at the start of a path filters the focus by resource type, at any depth
    (`contained.select(Patient.id)`), as HAPI does; fhirpathpy only does it at the root."""
    key = str(_do_eval(ctx, parent, node["children"][0])[0]).replace("`", "")
    if key[:1].isupper() and isinstance(parent, list) and any(isinstance(x, ResourceNode) for x in parent):
        items = [_util.get_data(x) for x in parent]
        if all(isinstance(x, dict) and "resourceType" in x for x in items):
            return [ResourceNode.create_node(x, key) for x in items if x["resourceType"] == key]
    return _member_invocation(ctx, parent, node)


_evaluators.evaluators["MemberInvocation"] = _hapi_member


class FhirPathError(Exception):
    """The expression cannot be evaluated here (syntax, or a function we do not have)."""


def evaluate(resource: Any, expression: str) -> list[Any]:
    expression = _VALUE.sub(".select(iif($this.value.exists(), $this.value, $this))", expression)
    expression = _GROUP.sub(".select(", expression)
    if not isinstance(resource, dict) or "resourceType" not in resource:
        resource = {"resourceType": "Parameters"}   # nothing to read: paths give empty collections
    try:
        return _evaluate(resource, expression, {}, _MODEL)
    except Exception as exc:   # fhirpathpy raises plain Exceptions for syntax and unknown functions
        raise FhirPathError(f"{expression!r}: {exc}") from exc


def as_text(values: list[Any]) -> str:
    """asbestos' evalForString: one item as text; several items are a bracketed list (which
    compares equal to no ordinary expected value)."""
    if not values:
        return ""
    if len(values) > 1:
        return "[" + ", ".join(as_text([v]) for v in values) + "]"
    value = values[0]
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def is_true(values: list[Any]) -> bool:
    """asbestos' evalForBoolean: empty is false, a boolean first item is its value, any other
    first item is true (only the first item is looked at)."""
    if not values:
        return False
    first = values[0]
    return first if isinstance(first, bool) else True
