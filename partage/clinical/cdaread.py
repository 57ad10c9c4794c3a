"""Small readers of CDA R2 body structures (HL7 v3 datatypes) used by the extractors."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from lxml import etree

from ..cda.crosscheck import ts_to_utc
from ..cda.locate import text_of

PARIS = ZoneInfo("Europe/Paris")

HL7 = "urn:hl7-org:v3"
XSI_TYPE = "{http://www.w3.org/2001/XMLSchema-instance}type"
_H = f"{{{HL7}}}"


def child(el: etree._Element | None, *names: str) -> etree._Element | None:
    """The first element down the path of HL7 local names, or None."""
    for name in names:
        if el is None:
            return None
        el = el.find(_H + name)
    return el


def children(el: etree._Element | None, name: str) -> list[etree._Element]:
    return [] if el is None else el.findall(_H + name)


def templates(el: etree._Element) -> set[str]:
    return {t.get("root", "") for t in el.findall(_H + "templateId")}


def clean(text: str | None) -> str:
    return " ".join((text or "").split())


def narrative_index(doc: etree._Element) -> dict[str, str]:
    """ID -> text of every narrative element carrying an ID (targets of <reference value="#ID"/>)."""
    out: dict[str, str] = {}
    for el in doc.iter(_H + "*"):
        ident = el.get("ID")
        if ident:
            out[ident] = clean(text_of(el))
    return out


def original_text(el: etree._Element | None, narrative: dict[str, str]) -> str:
    """<originalText> or <text>: its own text, else the narrative it references."""
    if el is None:
        return ""
    ref = el.find(_H + "reference")
    own = clean(el.text)
    if own:
        return own
    if ref is not None:
        return narrative.get((ref.get("value") or "").lstrip("#"), "")
    return ""


def coded(el: etree._Element | None, narrative: dict[str, str]) -> tuple[str, str, str]:
    """(code, codeSystem, display) of a CD/CE; the first coded translation if the code is absent."""
    if el is None:
        return "", "", ""
    code, system = el.get("code", ""), el.get("codeSystem", "")
    display = clean(el.get("displayName")) or original_text(el.find(_H + "originalText"), narrative)
    if not code:
        for tr in el.findall(_H + "translation"):
            if tr.get("code"):
                code, system = tr.get("code", ""), tr.get("codeSystem", "")
                display = display or clean(tr.get("displayName"))
                break
    return code, system, display


def ts(el: etree._Element | None) -> str:
    """An HL7 TS as UTC digits ('' if none). A time of day without an offset is the sender's
    local time (HL7 v3 data types), here Europe/Paris: stored in UTC like the others, since
    readers take every stored time of day as UTC. A day without a time stays as given."""
    if el is None:
        return ""
    value = el.get("value", "")
    if not value or not value[:4].isdigit():
        return ""
    digits = value.split(".", 1)[0]
    if "+" not in value and "-" not in value and len(digits) >= 10 and digits.isdigit():
        try:
            local = datetime.strptime((digits + "0000")[:14], "%Y%m%d%H%M%S").replace(tzinfo=PARIS)
        except ValueError:
            return ""
        return local.astimezone(UTC).strftime("%Y%m%d%H%M%S")[:len(digits[:14])]
    out = ts_to_utc(value)[:14]
    return out if _calendar_time(out) else ""


def _calendar_time(digits: str) -> bool:
    """Whether TS digits name a time that exists (not month 13, February 30 or hour 25)."""
    padded = digits + "00000101000000"[len(digits):]
    try:
        datetime.strptime(padded[:14], "%Y%m%d%H%M%S")
    except ValueError:
        return False
    return digits.isdigit() and len(digits) >= 4


def interval(el: etree._Element | None) -> tuple[str, str]:
    """(start, end) of an effectiveTime that is a TS or an IVL_TS."""
    if el is None:
        return "", ""
    if el.get("value"):
        return ts(el), ""
    return ts(el.find(_H + "low")) or ts(el.find(_H + "center")), ts(el.find(_H + "high"))


def effective(el: etree._Element) -> tuple[str, str]:
    """The interval of the first IVL_TS/TS effectiveTime of an act (not a PIVL_TS frequency)."""
    for et in el.findall(_H + "effectiveTime"):
        kind = et.get(XSI_TYPE, "")
        if "PIVL" in kind or "EIVL" in kind or "SXPR" in kind:
            continue
        start, end = interval(et)
        if start or end:
            return start, end
    return "", ""


def inherited_time(el: etree._Element) -> str:
    """The effective time of the nearest ancestor act that has one (a battery, a specimen act)."""
    for anc in el.iterancestors():
        for et in anc.findall(_H + "effectiveTime"):
            start, _end = interval(et)
            if start:
                return start
        if anc.tag == _H + "section":
            break
    return ""


def number_text(raw: str | None) -> str:
    """A REAL / PQ / INT value as the document wrote it (its digits are its precision: 12.20 is
    not 12.2), or '' when it is not a finite number (NaN, INF, words)."""
    text = (raw or "").strip()
    try:
        return text if text and Decimal(text).is_finite() else ""
    except InvalidOperation:
        return ""


def quantity(el: etree._Element | None) -> tuple[float | None, str, str]:
    """(number, unit, text) of a PQ / INT / REAL value: the number as a float for arithmetic
    (None unless finite), the text with the value's own digits."""
    if el is None:
        return None, "", ""
    raw = clean(el.get("value"))
    digits = number_text(raw)
    number = float(digits) if digits else None
    if number is not None and not math.isfinite(number):   # 1e400: a decimal, not a float
        number = None
    unit = clean(el.get("unit"))
    if unit == "1":
        unit = ""
    return number, unit, f"{raw} {unit}".strip() if raw else ""


def section_title(el: etree._Element) -> str:
    for anc in el.iterancestors(_H + "section"):
        title = child(anc, "title")
        return clean(title.text if title is not None else "")
    return ""


def panel_name(el: etree._Element) -> str:
    """The panel a result belongs to, as the lab names it: the nearest battery (organizer) or
    report entry (act) around it with a named code, else its section's code or title."""
    for anc in el.iterancestors(_H + "organizer", _H + "act", _H + "section"):
        code = child(anc, "code")
        name = clean(code.get("displayName")) if code is not None else ""
        if anc.tag == _H + "section":
            title = child(anc, "title")
            return name or clean(title.text if title is not None else "")
        if name:
            return name
    return ""
