"""FHIRPath as HAPI FHIR (org.hl7.fhir.r4 5.6.x, the version asbestos ships) parses it,
rewritten into the standard FHIRPath that fhirpathpy evaluates.

HAPI departs from the FHIRPath grammar in ways the asbestos scripts rely on:

- precedence (FHIRPathEngine.organisePrecedence): `* / div mod`, then `+ - &`, `|`,
  `< > <= >=`, `is`, `= ~ != !~`, `and`, `or xor`; `in`, `contains`, `as`, `implies` and
  `memberOf` are not ranked at all and apply left to right after everything else, so
  `a and b in c` is `(a and b) in c`;
- `a.(expr)` evaluates expr once with the whole collection `a` as its focus;
- `x.value` on a primitive is the primitive's text (a string), on anything else the child
  `value`;
- the `is` and `as` operators compare the type name as written (`is FHIR.List` never holds,
  `is(List)` in parentheses never holds either).

Each expression is parsed the way HAPI parses it and written back fully parenthesised, with
HAPI's own forms turned into functions that `fhirpath.py` defines (`_hapiGroup`,
`_hapiValue`, `_hapiIsOp`, `_hapiAsOp`), so fhirpathpy's own precedence never decides.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

_TOKEN = re.compile(r"""
    (?P<ws>\s+|//[^\n]*|/\*.*?\*/)
  | (?P<string>'(?:\\.|[^'\\])*')
  | (?P<delimited>`(?:\\.|[^`\\])*`)
  | (?P<datetime>@[0-9T][0-9T:.+\-Z]*)
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<constant>%(?:[A-Za-z_][A-Za-z0-9_\-]*|'(?:\\.|[^'\\])*'|`(?:\\.|[^`\\])*`))
  | (?P<special>\$[A-Za-z]+)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<empty>\{\s*\})
  | (?P<symbol><=|>=|!=|!~|[=~<>*/+\-&|(),.\[\]])
""", re.X | re.S)

WORD_OPS = {"is", "as", "or", "and", "xor", "implies", "div", "mod", "in", "contains", "memberOf"}
SYMBOL_OPS = {"=", "~", "!=", "!~", "<", ">", "<=", ">=", "|", "*", "/", "+", "&", "-"}
# FHIRPathEngine.organisePrecedence, highest first; what is in no set applies last, left to right
PRECEDENCE = ({"*", "/", "div", "mod"}, {"+", "-", "&"}, {"|"}, {"<", ">", "<=", ">="}, {"is"},
              {"=", "~", "!=", "!~"}, {"and"}, {"xor", "or"})


class DialectError(ValueError):
    """The expression cannot be parsed (HAPI would refuse it too)."""


@dataclass
class _Tok:
    kind: str
    text: str


def tokenize(expression: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(expression):
        match = _TOKEN.match(expression, pos)
        if match is None:
            raise DialectError(f"unexpected character {expression[pos]!r} at {pos} in {expression!r}")
        pos = match.end()
        kind = match.lastgroup or ""
        if kind != "ws":
            out.append(_Tok(kind, match.group(0)))
    return out


@dataclass
class _Term:
    """A HAPI ExpressionNode without its operator chain: a primary, an indexer, an inner path."""

    text: str                               # the term written as fhirpathpy reads it
    type_name: str = ""                     # the name as written, when the term is a (dotted) name
    parts: list[str] = field(default_factory=list)


class _Parser:
    def __init__(self, tokens: list[_Tok], source: str) -> None:
        self.tokens, self.pos, self.source = tokens, 0, source

    def peek(self, offset: int = 0) -> _Tok | None:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else None

    def take(self) -> _Tok:
        tok = self.peek()
        if tok is None:
            raise DialectError(f"unexpected end of {self.source!r}")
        self.pos += 1
        return tok

    def expect(self, text: str) -> None:
        tok = self.take()
        if tok.text != text:
            raise DialectError(f"found {tok.text!r} expecting {text!r} in {self.source!r}")

    def is_op(self) -> bool:
        tok = self.peek()
        if tok is None:
            return False
        return (tok.kind == "symbol" and tok.text in SYMBOL_OPS) or (tok.kind == "name" and tok.text in WORD_OPS)

    # expression := term (op term)*   (HAPI's proximal parseExpression)
    def expression(self) -> str:
        operands: list[_Term] = [self.term()]
        ops: list[str] = []
        while self.is_op():
            ops.append(self.take().text)
            operands.append(self.term())
        return _organise(operands, ops)

    def term(self, inner: bool = False) -> _Term:
        tok = self.peek()
        if tok is None:
            raise DialectError(f"unexpected end of {self.source!r}")
        if not inner and tok.kind == "symbol" and tok.text in ("-", "+"):   # polarity
            self.take()
            rest = self.term()
            return _Term(f"{tok.text}{rest.text}")
        if tok.text == "(":
            self.take()
            group = self.expression()
            self.expect(")")
            text = f"._hapiGroup({group})" if inner else f"({group})"
            term = _Term(text)
        elif tok.kind in ("string", "datetime", "constant", "empty"):
            self.take()
            term = _Term(tok.text if tok.kind != "empty" else "{}")
        elif tok.kind == "number":
            self.take()
            unit = self.peek()
            text = tok.text
            if unit is not None and unit.kind == "string":
                text += " " + self.take().text
            term = _Term(text)
        elif tok.kind in ("name", "delimited", "special"):
            self.take()
            nxt = self.peek()
            if nxt is not None and nxt.text == "(" and tok.kind == "name":
                self.take()
                args: list[str] = []
                while self.peek() is not None and self.peek().text != ")":  # type: ignore[union-attr]
                    args.append(self.expression())
                    if self.peek() is not None and self.peek().text == ",":  # type: ignore[union-attr]
                        self.take()
                self.expect(")")
                call = f"{tok.text}({', '.join(args)})"
                term = _Term(f".{call}" if inner else call)
            elif inner and tok.text == "value" and tok.kind == "name":
                term = _Term("._hapiValue()")
            else:
                term = _Term(f".{tok.text}" if inner else tok.text, type_name=tok.text, parts=[tok.text])
        else:
            raise DialectError(f"found {tok.text!r} expecting a term in {self.source!r}")
        nxt = self.peek()
        if nxt is not None and nxt.text == "[":
            self.take()
            index = self.expression()
            self.expect("]")
            term = _Term(f"{term.text}[{index}]")
        nxt = self.peek()
        if nxt is not None and nxt.text == ".":
            self.take()
            rest = self.term(inner=True)
            name = f"{term.type_name}.{rest.type_name}" if term.type_name and rest.type_name else ""
            term = _Term(term.text + rest.text, type_name=name)
        return term


def _organise(operands: list[_Term], ops: list[str]) -> str:
    """organisePrecedence + gatherPrecedence: runs of operators of one rank become groups, rank
    by rank; what is left is applied left to right."""
    items: list[str | _Term] = list(operands)
    chain_ops = list(ops)
    for rank in PRECEDENCE:
        i = 0
        while i < len(chain_ops):
            if chain_ops[i] not in rank:
                i += 1
                continue
            j = i
            while j < len(chain_ops) and chain_ops[j] in rank:
                j += 1
            text = _apply(items[i], chain_ops[i:j], items[i + 1:j + 1])
            items[i:j + 1] = [text]
            chain_ops[i:j] = []
            i += 1
    if not chain_ops:
        first = items[0]
        return first if isinstance(first, str) else first.text
    return _apply(items[0], chain_ops, items[1:])


def _apply(first: str | _Term, ops: list[str], rest: list[str | _Term]) -> str:
    """Left to right: ((a op b) op c)..."""
    text = first if isinstance(first, str) else first.text
    for op, operand in zip(ops, rest, strict=True):
        if op in ("is", "as"):
            # HAPI compares the type name as written; a parenthesised one has no name
            name = operand.type_name if isinstance(operand, _Term) else ""
            fn = "_hapiIsOp" if op == "is" else "_hapiAsOp"
            text = f"({text}).{fn}('{name}')"
        else:
            right = operand if isinstance(operand, str) else operand.text
            text = f"({text} {op} {right})"
    return text


def rewrite(expression: str) -> str:
    """The expression as HAPI reads it, in standard FHIRPath with explicit grouping."""
    tokens = tokenize(expression)
    if not tokens:
        raise DialectError("empty expression")
    parser = _Parser(tokens, expression)
    out = parser.expression()
    if parser.peek() is not None:
        raise DialectError(f"unexpected {parser.peek().text!r} in {expression!r}")  # type: ignore[union-attr]
    return out
