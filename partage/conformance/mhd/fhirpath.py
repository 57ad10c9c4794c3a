"""FHIRPath for the test kit (fhirpathpy), read the way asbestos reads HAPI FHIR's results.

asbestos evaluates with HAPI FHIR's engine on HAPI objects and turns the result into text or
a boolean with its own rules (`FhirPathEngineBuilder.evalForString` / `evalForBoolean`):
one result is its value for strings, URIs, booleans, integers, dates and base64, and the
model class name for anything else (`Coding`, `DateTimeType`, `ListResource`); several
results are `[StringType[StringType[a]], Coding]`; no result is null. Only the first result
counts for a boolean. fhirpathpy gives each result its FHIR type, from which the HAPI class
is named.

In HAPI a primitive has a `.value` (`status.value`); in FHIR JSON a primitive is the value
itself. `.value` is rewritten to "the element's value if it has one, else the element as
text", which is what HAPI means in both cases.
"""

# mypy: disallow-untyped-calls=False
# (fhirpathpy, whose engine this module extends, has no type hints)
from __future__ import annotations

import base64
import importlib
import re
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from fhirpathpy import evaluate as _evaluate
from fhirpathpy.engine import do_eval as _do_eval
from fhirpathpy.engine import invocations as _invocations
from fhirpathpy.engine import util as _util
from fhirpathpy.engine.invocations import equality as _equality
from fhirpathpy.engine.invocations import types as _types
from fhirpathpy.engine.nodes import FP_DateTime, FP_Quantity, FP_Time, ResourceNode, TypeInfo
from fhirpathpy.models import models
from fhirpathpy.parser import parse as _parse

from .fhirpath_dialect import DialectError, rewrite
from .hapi import class_name

_MODEL = models["r4"]
Ctx = dict[str, Any]          # fhirpathpy's evaluation context
Coll = list[Any]              # a FHIRPath collection (ResourceNodes and plain values)
Expr = Callable[[Any], Coll]  # an unevaluated argument (fhirpathpy "Expr")


def _hapi_is(ctx: Ctx, coll: Coll, type_info: Any) -> bool:
    """funcIs: false unless the focus holds exactly one item."""
    TypeInfo.model = ctx.get("model")
    if len(coll) != 1:
        return False
    return bool(TypeInfo.from_value(coll[0]).is_(type_info))


def _hapi_as(ctx: Ctx, coll: Coll, type_info: Any) -> Coll:
    TypeInfo.model = ctx.get("model")
    return [item for item in coll if TypeInfo.from_value(item).is_(type_info)]


# --- HAPI's values: type names, text, booleans, equality -----------------------------------------------

def _fhir_type(node: Any) -> tuple[str, bool]:
    """(HAPI's fhirType() of a result, whether it is a FHIRPath System value)."""
    if isinstance(node, bool):
        return "boolean", True
    if isinstance(node, int):
        return "integer", True
    if isinstance(node, (float, Decimal)):
        return "decimal", True
    if isinstance(node, str):
        return "string", True
    if isinstance(node, (FP_DateTime, FP_Time)):
        return ("time" if isinstance(node, FP_Time) else "dateTime"), True
    if isinstance(node, FP_Quantity):
        return "Quantity", False
    if isinstance(node, ResourceNode):
        data = node.data
        if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
            return data["resourceType"], False
        info = node.get_type_info()
        name = getattr(info, "name", "") or ""
        if getattr(info, "namespace", "") == "System":
            return name.lower(), True
        if name in ("object", "BackboneElement") and "." in str(node.path or ""):
            return str(node.path), False
        return name, False
    return type(node).__name__, False


def _is_primitive(node: Any) -> bool:
    return not isinstance(_util.get_data(node), (dict, list))


def _text(node: Any) -> str:
    """HAPI's primitiveValue() / convertToString of one item."""
    data = _util.get_data(node)
    if isinstance(data, bool):
        return "true" if data else "false"
    if isinstance(data, (dict, list)):
        return _hapi_class(node)
    return str(data)


def _texts(coll: list[Any]) -> str:
    """convertToString of a collection: the items' text joined with commas."""
    return ",".join(_text(x) for x in coll)


_STRING_TYPES = {"string", "uri", "code", "oid", "id", "uuid", "sid", "markdown", "base64Binary",
                 "canonical", "url"}


def _from_int(text: str) -> bool | None:
    try:
        value = int(text)
    except ValueError:
        return None
    return {0: False, 1: True}.get(value)


def _from_dec(text: str) -> bool | None:
    try:
        value = Decimal(text)
    except (ArithmeticError, ValueError):
        return None
    return False if value == 0 else True if value == 1 else None


def _as_bool_item(node: Any) -> bool | None:
    """FHIRPathEngine.asBool(Base): true, false, or null (a string "yes" is true, "abc" null)."""
    data = _util.get_data(node)
    kind, _ = _fhir_type(node)
    if isinstance(data, bool):
        return data
    if kind in ("integer", "positiveInt", "unsignedInt"):
        return _from_int(str(data))
    if kind == "decimal":
        return _from_dec(str(data))
    if kind in _STRING_TYPES and isinstance(data, str):
        if data in ("true", "t", "yes", "y"):
            return True
        if data in ("false", "f", "no", "n"):
            return False
        if re.fullmatch(r"-?\d+", data):
            return _from_int(data)
        if re.fullmatch(r"-?\d*\.\d+", data):
            return _from_dec(data)
    return None


def _as_bool(coll: list[Any]) -> bool | None:
    """FHIRPathEngine.asBool(List): null when empty, an error when several."""
    if not coll:
        return None
    if len(coll) > 1:
        raise ValueError(f"Unable to evaluate as a boolean: {_texts(coll)}")
    return _as_bool_item(coll[0])


def _and(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    a, b = _as_bool(left), _as_bool(right)
    if a is False or b is False:
        return [False]
    return [True] if a is True and b is True else []


def _or(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    a, b = _as_bool(left), _as_bool(right)
    if a is True or b is True:
        return [True]
    return [False] if a is False and b is False else []


def _xor(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    a, b = _as_bool(left), _as_bool(right)
    return [] if a is None or b is None else [a != b]


def _implies(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    a = _as_bool(left)
    if a is False:
        return [True]
    if not right:
        return []
    b = _as_bool(right)
    if b is True:
        return [True]
    if b is False:
        return [] if a is None else [False]
    return []


def _equals(a: Any, b: Any) -> bool | None:
    """FHIRPathEngine.doEquals: dates by FHIRPath rules, decimals without trailing zeros,
    other primitives by their text, the rest by deep comparison."""
    ka, _ = _fhir_type(a)
    kb, _ = _fhir_type(b)
    dates = {"date", "dateTime", "instant", "time"}
    if ka in dates and kb in dates:
        same = _equality.datetime_equality({}, [a], [b])
        return None if same is None else bool(same)
    if _is_primitive(a) and _is_primitive(b):
        if "decimal" in (ka, kb):
            return _strip_zeros(_text(a)) == _strip_zeros(_text(b))
        return _text(a) == _text(b)
    return bool(_util.get_data(a) == _util.get_data(b))


def _strip_zeros(text: str) -> str:
    return text.rstrip("0").rstrip(".") if "." in text else text


def _eq(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [False]
    results = [_equals(a, b) for a, b in zip(left, right, strict=True)]
    if False in results:
        return [False]
    return [] if None in results else [True]


def _not_eq(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    if not left or not right:
        return []
    if len(left) != len(right):
        return [True]
    results = [_equals(a, b) for a, b in zip(left, right, strict=True)]
    if True in results:
        return [False]
    return [] if None in results else [True]


def _hapi_equivalent(ctx: Ctx, left: Coll, right: Coll) -> Coll:
    """opEquivalent: as many items on each side, and each item on the left has an
    equivalent on the right (fhirpathpy compares the first items only)."""
    if len(left) != len(right):
        return [False]
    return [all(any(_equality.equivalence(ctx, [a], [b]) for b in right) for a in left)]


def _hapi_not_equivalent(ctx: Ctx, left: Coll, right: Coll) -> Coll:
    return [not _hapi_equivalent(ctx, left, right)[0]]


def _in(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    if not left:
        return []
    if not right:
        return [False]
    return [all(any(_equals(a, b) for b in right) for a in left)]


def _contains_op(_ctx: Ctx, left: Coll, right: Coll) -> Coll:
    if not left or not right:
        return []
    return [all(any(_equals(a, b) for a in left) for b in right)]


# --- HAPI's functions ------------------------------------------------------------------------------------

def _not(_ctx: Ctx, coll: Coll) -> Coll:
    value = _as_bool(coll)
    return [] if value is None else [not value]


def _iif(_ctx: Ctx, data: Coll, cond: Expr, ok: Expr, fail: Expr | None = None) -> Coll:
    if _as_bool(cond(data)) is True:
        return ok(data)
    return fail(data) if fail else []


def _where(ctx: Ctx, data: Coll, expr: Expr) -> Coll:
    out = []
    for i, item in enumerate(data):
        ctx["$index"] = i
        if _as_bool(expr(item)) is True:
            out.append(item)
    return out


def _all(ctx: Ctx, data: Coll, expr: Expr) -> Coll:
    for i, item in enumerate(data):
        ctx["$index"] = i
        if _as_bool(expr(item)) is not True:
            return [False]
    return [True]


def _exists(ctx: Ctx, data: Coll, expr: Expr | None = None) -> Coll:
    if expr is None:
        return [bool(data)]
    return [bool(_where(ctx, data, expr))]


def _all_true(_ctx: Ctx, coll: Coll) -> Coll:
    return [all(_as_bool_item(x) is True for x in coll)]


def _any_true(_ctx: Ctx, coll: Coll) -> Coll:
    return [any(_as_bool_item(x) is True for x in coll)]


def _starts_with(_ctx: Ctx, coll: Coll, arg: Coll) -> Coll:
    sw = _texts(arg)
    if not coll:
        return [False]
    return [True] if sw == "" else [_text(coll[0]).startswith(sw)]


def _ends_with(_ctx: Ctx, coll: Coll, arg: Coll) -> Coll:
    sw = _texts(arg)
    if not coll:
        return [False]
    if sw == "":
        return [True]
    return [len(coll) == 1 and _text(coll[0]).endswith(sw)]


def _contains_fn(_ctx: Ctx, coll: Coll, arg: Coll) -> Coll:
    sw = _texts(arg)
    if len(coll) != 1:
        return [False]
    if sw == "":
        return [True]
    text = _text(coll[0])
    return [bool(text) and sw in text]


def _matches(_ctx: Ctx, coll: Coll, arg: Coll) -> Coll:
    sw = _texts(arg)
    if len(coll) == 1 and sw:
        text = _text(coll[0])
        return [bool(text) and re.fullmatch(sw, text, re.S) is not None]
    return [False]


def _index_of(_ctx: Ctx, coll: Coll, arg: Coll) -> Coll:
    sw = _texts(arg)
    if not coll or sw == "":
        return [0]
    return [_text(coll[0]).find(sw)]


def _substring(_ctx: Ctx, coll: Coll, start: Coll, length: Coll | None = None) -> Coll:
    i1 = int(_texts(start))
    if len(coll) != 1:
        return []
    text = _text(coll[0])
    if i1 < 0 or i1 >= len(text):
        return []
    out = text[i1:min(len(text), i1 + int(_texts(length)))] if length is not None else text[i1:]
    return [out] if out else []


def _length(_ctx: Ctx, coll: Coll) -> Coll:
    return [len(_text(coll[0]))] if len(coll) == 1 else []


def _to_string(_ctx: Ctx, coll: Coll) -> Coll:
    return [_texts(coll)]


def _hapi_group(_ctx: Ctx, data: Coll, expr: Expr) -> Coll:
    """HAPI's `a.(expr)`: expr evaluated once, with the whole collection `a` as its focus (so a
    function such as `is()` there sees every item of `a` at once)."""
    return expr(data)


_VALUE_MEMBER = _parse("value")["children"][0]


def _hapi_value(ctx: Ctx, coll: Coll) -> Coll:
    """HAPI's `.value`: a primitive's text (PrimitiveType.getProperty("value")), else the
    element's child named value."""
    out: list[Any] = []
    for item in coll:
        if _is_primitive(item):
            out.append(_text(item))
        else:
            out += _do_eval(ctx, [item], _VALUE_MEMBER)
    return out


def _hapi_is_op(_ctx: Ctx, coll: Coll, name: Coll) -> Coll:
    """opIs: one item whose fhirType is the type name as written (no namespace understood)."""
    tn = _texts(name)
    if len(coll) != 1 or not tn:
        return [False]
    kind, system = _fhir_type(coll[0])
    if system:
        capital = kind[:1].upper() + kind[1:]
        return [tn in (capital, "System." + capital)]
    return [kind.lower() == tn.lower()]


def _hapi_as_op(_ctx: Ctx, coll: Coll, name: Coll) -> Coll:
    tn = _texts(name)
    return [item for item in coll if _fhir_type(item)[0] == tn]


_HAPI = {
    "and": {"fn": _and, "arity": {2: ["Any", "Any"]}},
    "or": {"fn": _or, "arity": {2: ["Any", "Any"]}},
    "xor": {"fn": _xor, "arity": {2: ["Any", "Any"]}},
    "implies": {"fn": _implies, "arity": {2: ["Any", "Any"]}},
    "=": {"fn": _eq, "arity": {2: ["Any", "Any"]}},
    "!=": {"fn": _not_eq, "arity": {2: ["Any", "Any"]}},
    "~": {"fn": _hapi_equivalent, "arity": {2: ["Any", "Any"]}},
    "!~": {"fn": _hapi_not_equivalent, "arity": {2: ["Any", "Any"]}},
    "inOp": {"fn": _in, "arity": {2: ["Any", "Any"]}},
    "containsOp": {"fn": _contains_op, "arity": {2: ["Any", "Any"]}},
    "contains": {"fn": _contains_fn, "arity": {1: ["Any"]}},
    "not": {"fn": _not},
    "iif": {"fn": _iif, "arity": {2: ["Expr", "Expr"], 3: ["Expr", "Expr", "Expr"]}},
    "where": {"fn": _where, "arity": {1: ["Expr"]}},
    "all": {"fn": _all, "arity": {1: ["Expr"]}},
    "exists": {"fn": _exists, "arity": {0: [], 1: ["Expr"]}},
    "allTrue": {"fn": _all_true},
    "anyTrue": {"fn": _any_true},
    "startsWith": {"fn": _starts_with, "arity": {1: ["Any"]}},
    "endsWith": {"fn": _ends_with, "arity": {1: ["Any"]}},
    "matches": {"fn": _matches, "arity": {1: ["Any"]}},
    "indexOf": {"fn": _index_of, "arity": {1: ["Any"]}},
    "substring": {"fn": _substring, "arity": {1: ["Any"], 2: ["Any", "Any"]}},
    "length": {"fn": _length},
    "toString": {"fn": _to_string},
    "_hapiGroup": {"fn": _hapi_group, "arity": {1: ["Expr"]}},
    "_hapiValue": {"fn": _hapi_value},
    "_hapiIsOp": {"fn": _hapi_is_op, "arity": {1: ["Any"]}},
    "_hapiAsOp": {"fn": _hapi_as_op, "arity": {1: ["Any"]}},
}


def _install(table: dict[str, Any]) -> None:
    """fhirpathpy has no hook that keeps type information for user functions, so the HAPI
    behaviour is installed in its base table (which its engine reads at every call)."""
    for name, entry in _HAPI.items():
        table[name] = entry
    replacements = {_types.is_fn: _hapi_is, _types.as_fn: _hapi_as}
    for name, entry in list(table.items()):
        if entry.get("fn") in replacements:
            table[name] = {**entry, "fn": replacements[entry["fn"]]}


_install(_invocations.invocation_registry)
_evaluators = importlib.import_module("fhirpathpy.engine.evaluators")
_member_invocation = _evaluators.member_invocation


def _hapi_member(ctx: Ctx, parent: Any, node: dict[str, Any]) -> Any:
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


# HAPI's model class of each FHIR primitive type, and the System types of FHIRPath results
_PRIMITIVE_CLASSES = {
    "string": "StringType", "code": "CodeType", "markdown": "MarkdownType", "id": "IdType",
    "uri": "UriType", "url": "UrlType", "canonical": "CanonicalType", "oid": "OidType", "uuid": "UuidType",
    "boolean": "BooleanType", "integer": "IntegerType", "unsignedInt": "UnsignedIntType",
    "positiveInt": "PositiveIntType", "decimal": "DecimalType", "date": "DateType",
    "dateTime": "DateTimeType", "instant": "InstantType", "time": "TimeType",
    "base64Binary": "Base64BinaryType", "xhtml": "XhtmlNode",
}
_SYSTEM_CLASSES = {"String": "StringType", "Boolean": "BooleanType", "Integer": "IntegerType",
                   "Decimal": "DecimalType", "Date": "DateType", "DateTime": "DateTimeType",
                   "Time": "TimeType", "Quantity": "Quantity"}
# the classes whose text asbestos' getStringValue gives (by `instanceof`): the value
_TEXT_CLASSES = {"StringType", "CodeType", "MarkdownType", "UriType", "UrlType", "CanonicalType", "OidType",
                 "UuidType", "IdType", "BooleanType", "IntegerType", "UnsignedIntType", "PositiveIntType",
                 "DateType", "Base64BinaryType"}
_DECODE = ".ftkDecode('base64')"


class Item:
    """One FHIRPath result with the name of the HAPI class that would hold it."""

    __slots__ = ("hapi_class", "value")

    def __init__(self, hapi_class: str, value: Any) -> None:
        self.hapi_class, self.value = hapi_class, value

    def text(self) -> str:
        """asbestos' getStringValue: the value for text-like classes, else the class name."""
        if self.hapi_class in _TEXT_CLASSES:
            if isinstance(self.value, bool):
                return "true" if self.value else "false"
            return str(self.value)
        return self.hapi_class

    def __repr__(self) -> str:
        return f"{self.hapi_class}({self.value!r})"


def _hapi_class(node: Any) -> str:
    if isinstance(node, bool):
        return "BooleanType"
    if isinstance(node, int):
        return "IntegerType"
    if isinstance(node, (float, Decimal)):
        return "DecimalType"
    if isinstance(node, str):
        return "StringType"
    if isinstance(node, FP_DateTime):
        return "DateTimeType"
    if isinstance(node, FP_Time):
        return "TimeType"
    if isinstance(node, FP_Quantity):
        return "Quantity"
    if isinstance(node, ResourceNode):
        data = node.data
        if isinstance(data, dict) and isinstance(data.get("resourceType"), str):
            return class_name(data["resourceType"])
        info = node.get_type_info()
        name = getattr(info, "name", "") or ""
        if getattr(info, "namespace", "") == "System":
            return _SYSTEM_CLASSES.get(name, "StringType")
        if name in _PRIMITIVE_CLASSES:
            return _PRIMITIVE_CLASSES[name]
        if name in ("object", "BackboneElement") and "." in str(node.path or ""):
            # a backbone element: Bundle.entry -> BundleEntryComponent
            return "".join(part[:1].upper() + part[1:] for part in str(node.path).split(".")) + "Component"
        return name or type(data).__name__
    return type(node).__name__


def _value(node: Any) -> Any:
    if isinstance(node, ResourceNode):
        return _util.get_data(node)
    if isinstance(node, (FP_DateTime, FP_Time, FP_Quantity)):
        return str(node)
    return node


def _prepare(expression: str) -> str:
    try:
        return rewrite(expression)
    except DialectError as exc:
        raise FhirPathError(str(exc)) from exc


def evaluate_items(resource: Any, expression: str) -> list[Item]:
    """Every result of the expression on the resource (a FHIR JSON dict), typed as HAPI types it."""
    if not isinstance(resource, dict) or "resourceType" not in resource:
        resource = {"resourceType": "Parameters"}   # nothing to read: paths give empty collections
    try:
        nodes = _evaluate(resource, _prepare(expression), {}, _MODEL, {"returnRawData": True})
    except Exception as exc:   # fhirpathpy raises plain Exceptions for syntax and unknown functions
        raise FhirPathError(f"{expression!r}: {exc}") from exc
    return [Item(_hapi_class(n), _value(n)) for n in nodes]


def evaluate(resource: Any, expression: str) -> list[Any]:
    """The plain values of the results (strings, numbers, booleans, JSON objects)."""
    return [item.value for item in evaluate_items(resource, expression)]


def as_text(items: list[Item]) -> str | None:
    """asbestos' evalForString of results: None for none, the one's text, or the bracketed list."""
    if not items:
        return None
    if len(items) == 1:
        return items[0].text()
    parts = [f"StringType[StringType[{i.value}]]" if i.hapi_class == "StringType" else i.hapi_class
             for i in items]
    return "[" + ", ".join(parts) + "]"


def eval_for_string(resource: Any, expression: str) -> str | None:
    """FhirPathEngineBuilder.evalForString: "" without a resource, None without a result."""
    if resource is None:
        return ""
    if expression.endswith(_DECODE):
        items = evaluate_items(resource, expression[: -len(_DECODE)])
        if len(items) != 1:
            return None
        try:
            return base64.b64decode(str(items[0].text())).decode()
        except (ValueError, UnicodeDecodeError) as exc:
            raise FhirPathError(f"ftkDecode: {exc}") from exc
    return as_text(evaluate_items(resource, expression))


def eval_for_boolean(resource: Any, expression: str) -> bool:
    """FhirPathEngineBuilder.evalForBoolean: false without a result; a boolean first result is
    its value, any other first result is true (only the first result is looked at)."""
    if resource is None:
        return False
    items = evaluate_items(resource, expression)
    if not items:
        return False
    first = items[0].value
    return first if isinstance(first, bool) else True


def eval_for_entry_resource(resource: Any, expression: str) -> dict[str, Any] | None:
    """FhirPathEngineBuilder.evalForResource: the resource of the one Bundle entry the
    expression selects, else None."""
    if resource is None:
        return None
    items = evaluate_items(resource, expression)
    if len(items) != 1 or items[0].hapi_class != "BundleEntryComponent":
        return None
    inner = items[0].value.get("resource") if isinstance(items[0].value, dict) else None
    return inner if isinstance(inner, dict) else None
