"""Where a door's wire string becomes a typed HL7 value: the one reading rule of every door.

ebRIM slots, FHIR identifiers written as HL7 text, HL7 v2 fields and CDA headers all come
through here. A value is read strictly (the XDS rules of ITI TF-3 Table 4.2.3.1.7-2); one
that fails is not guessed at: the attribute stays empty and a `ValueProblem` goes on the
request, which `metadata.validate` reports with the transaction's error code.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from .datatypes import CX, DTM, XCN, XON, XTN, DatatypeError, Recipient
from .model import ValueProblem

T = TypeVar("T")


def _strict_cx(text: str) -> CX:
    return CX.parse(text, strict=True)


def _xcn(text: str) -> XCN:
    return XCN.parse(text, strict=True)


def _xon(text: str) -> XON:
    return XON.parse(text, strict=True)


def _xtn(text: str) -> XTN:
    return XTN.parse(text, strict=True)


def read(parse: Callable[[str], T], text: str, where: str, label: str,
         problems: list[ValueProblem]) -> T | None:
    """`parse(text)`, or None with the problem recorded."""
    try:
        return parse(text)
    except DatatypeError as exc:
        problems.append(ValueProblem(where, label, text, str(exc)))
        return None


def read_cx(text: str, where: str, label: str, problems: list[ValueProblem]) -> CX | None:
    return read(_strict_cx, text, where, label, problems)


def read_reference_id(text: str, where: str, label: str, problems: list[ValueProblem]) -> CX | None:
    return read(CX.parse_reference_id, text, where, label, problems)


def read_xcn(text: str, where: str, label: str, problems: list[ValueProblem]) -> XCN | None:
    return read(_xcn, text, where, label, problems)


def read_xon(text: str, where: str, label: str, problems: list[ValueProblem]) -> XON | None:
    return read(_xon, text, where, label, problems)


def read_xtn(text: str, where: str, label: str, problems: list[ValueProblem]) -> XTN | None:
    return read(_xtn, text, where, label, problems)


def read_dtm(text: str, where: str, label: str, problems: list[ValueProblem]) -> DTM | None:
    return read(DTM.parse, text, where, label, problems)


def read_recipient(text: str, where: str, label: str,
                   problems: list[ValueProblem]) -> Recipient | None:
    return read(Recipient.parse, text, where, label, problems)


