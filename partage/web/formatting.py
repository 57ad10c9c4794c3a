"""How the professional's page writes values: as a French clinician writes them.

Numbers with a decimal comma and no trailing zeros ("63.000000" -> "63", "1.950" -> "1,95"),
UCUM units in their clinical form ("m[IU]/L" -> "mUI/L", "10*9/L" -> "G/L", "Cel" -> "°C"),
dates dd/mm/yyyy and times in Europe/Paris, ages in years (months under two), the INS
labelled by its kind. Pure functions; the page's templates call them.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from zoneinfo import ZoneInfo

from ..metadata.datatypes import CX, DTM, XCN

PARIS = ZoneInfo("Europe/Paris")

# UCUM -> the form French lab reports print (case-sensitive UCUM codes).
UNITS = {
    "m[IU]/L": "mUI/L", "[IU]/L": "UI/L", "u[IU]/mL": "µUI/mL", "m[IU]/mL": "mUI/mL", "[IU]/mL": "UI/mL",
    "10*9/L": "G/L", "10*12/L": "T/L", "10*3/uL": "10³/µL", "10*6/uL": "10⁶/µL", "10*3/mm3": "10³/mm³",
    "Cel": "°C", "[degF]": "°F", "mm[Hg]": "mmHg", "cm[H2O]": "cmH₂O", "kg/m2": "kg/m²", "m2": "m²",
    "/min": "/min", "{beats}/min": "bpm", "/[HPF]": "/champ", "[pH]": "", "1": "",
    "mL/min/{1.73_m2}": "mL/min/1,73 m²", "mL/min/1.73m2": "mL/min/1,73 m²",
}
# UCUM annotations ({...}) a dose or a result carries, in words.
ANNOTATIONS = {
    "tbl": "comprimé", "tablet": "comprimé", "cpr": "comprimé", "capsule": "gélule", "gél": "gélule",
    "count": "unité", "unit": "unité", "dose": "dose", "drop": "goutte", "puff": "bouffée",
    "sachet": "sachet", "ampoule": "ampoule", "application": "application", "patch": "patch",
    "ratio": "", "score": "", "index": "",
}
_MICRO = re.compile(r"(?<![A-Za-z])u(?=(g|mol|L|l|m|IU|UI|kat)\b)")
_ANNOTATION = re.compile(r"\{([^}]*)\}")
_LITRE = re.compile(r"(?<![A-Za-z\[{])([munpfdc]?)l(?![A-Za-z\]}])")
_POWER = re.compile(r"(?<![A-Za-z\[{])([munpfdck]?m)([23])(?![0-9\]}])")


def number(text: str | float | None, max_decimals: int = 4) -> str:
    """A measured value as a clinician writes it: decimal comma, no trailing zeros."""
    if text is None or text == "":
        return ""
    raw = f"{text!r}" if isinstance(text, float) else str(text).strip()
    try:
        value = Decimal(raw.replace(",", "."))
    except InvalidOperation:
        return raw
    if not value.is_finite():
        return raw
    if value and value.adjusted() < 0:   # 0.00004: never rounded away (3 significant digits at least)
        max_decimals = max(max_decimals, 2 - value.adjusted())
    try:
        value = round(value, max_decimals)
    except InvalidOperation:   # more digits than the context holds (1e30, a 30-digit number): as written
        return raw
    out = f"{value:f}"
    if "." in out:
        out = out.rstrip("0").rstrip(".")
    if out in ("-0", ""):
        out = "0"
    return out.replace(".", ",")


def unit(ucum: str) -> str:
    """A UCUM unit in the form a French report prints it ("" for dimensionless ones)."""
    ucum = (ucum or "").strip()
    if ucum in UNITS:
        return UNITS[ucum]
    # UCUM's litre is "L" or "l", its international unit "[IU]" or "[iU]": one spelling shown
    ucum = _LITRE.sub(r"\1L", ucum).replace("[iU]", "[IU]")
    if ucum in UNITS:
        return UNITS[ucum]
    ucum = _POWER.sub(lambda m: m.group(1) + "²³"[int(m.group(2)) - 2], ucum)   # mm3 -> mm³
    shown = _ANNOTATION.sub(lambda m: ANNOTATIONS.get(m.group(1).strip().lower(), m.group(1)), ucum)
    shown = _MICRO.sub("µ", shown).replace("[IU]", "UI")
    return shown.strip()


def quantity(value: str | float | None, ucum: str) -> str:
    """A number and its unit ("12,2 mg/L"; "1 comprimé")."""
    shown = number(value)
    shown_unit = unit(ucum)
    if shown_unit and shown and shown_unit[0].isalpha() and shown not in ("1", "0") and \
            shown_unit in ANNOTATIONS.values() and not shown_unit.endswith("s"):
        shown_unit += "s"   # 2 comprimés
    return f"{shown} {shown_unit}".strip()


def split_quantity(text: str) -> tuple[str, str]:
    """A stored "value unit" string (reference bounds, doses) -> (number, unit)."""
    parts = (text or "").split(None, 1)
    if not parts:
        return "", ""
    return parts[0], parts[1] if len(parts) > 1 else ""


def stored_quantity(text: str) -> str:
    """A stored "value unit" string, written as a clinician writes it."""
    value, ucum = split_quantity(text)
    return quantity(value, ucum) if value else ""


# --- time ---------------------------------------------------------------------------------------
def _digits(value: str | DTM | None) -> str:
    text = value.format() if isinstance(value, DTM) else (value or "")
    return "".join(ch for ch in text if ch.isdigit())


def paris(value: str | DTM | None) -> datetime | None:
    """Stored UTC digits with a time of day (12 digits or more) -> that moment in Europe/Paris."""
    d = _digits(value)
    if len(d) < 12:
        return None
    d = d[:14].ljust(14, "0")
    try:
        moment = datetime(int(d[:4]), int(d[4:6]), int(d[6:8]), int(d[8:10]), int(d[10:12]), int(d[12:14]),
                          tzinfo=UTC)
        return moment.astimezone(PARIS)
    except (ValueError, OverflowError):   # no such moment, or past year 9999 once in Paris time
        return None


def day(value: str | DTM | None) -> str:
    """dd/mm/yyyy (mm/yyyy, yyyy: the precision there is); a time of day is read as UTC and
    the day is Paris's."""
    moment = paris(value)
    if moment is not None:
        return moment.strftime("%d/%m/%Y")
    d = _digits(value)
    if len(d) >= 8:
        return f"{d[6:8]}/{d[4:6]}/{d[:4]}"
    if len(d) >= 6:
        return f"{d[4:6]}/{d[:4]}"
    return d[:4]


def day_time(value: str | DTM | None) -> str:
    """dd/mm/yyyy à HH:MM (Europe/Paris) when there is a time of day, else the day."""
    moment = paris(value)
    return moment.strftime("%d/%m/%Y à %H:%M") if moment is not None else day(value)


def sort_key(value: str | DTM | None) -> str:
    return _digits(value).ljust(14, "0")


def birth_date(text: str) -> date | None:
    d = _digits(text)
    if len(d) < 8:
        return None
    try:
        return date(int(d[:4]), int(d[4:6]), int(d[6:8]))
    except ValueError:
        return None


def age(born: date, today: date) -> str:
    """"45 ans"; "18 mois" under two years; "12 jours" under a month."""
    years = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    if years >= 2:
        return f"{years} ans"
    months = (today.year - born.year) * 12 + today.month - born.month - (today.day < born.day)
    if months >= 1:
        return f"{months} mois"
    days = (today - born).days
    return f"{max(days, 0)} jour{'s' if days > 1 else ''}"


def today_paris() -> date:
    return datetime.now(PARIS).date()


# --- identities ---------------------------------------------------------------------------------
INS_KINDS = {   # assigning authority -> label (docs: DESIGN.md, "Identifiers and codes")
    "1.2.250.1.213.1.4.8": "INS-NIR",
    "1.2.250.1.213.1.4.9": "INS-NIA",
    "1.2.250.1.213.1.4.10": "INS-NIR de test",
    "1.2.250.1.213.1.4.11": "INS-NIR de démonstration",
}


def ins(cx: CX) -> tuple[str, str] | None:
    """(label, value written in groups) of an INS identifier; None for any other identifier."""
    label = INS_KINDS.get(cx.assigning_authority.universal_id)
    if label is None:
        return None
    value = cx.id
    if len(value) == 15 and value.isalnum():   # sex, year, month, place (2+3), order, key
        value = " ".join([value[0], value[1:3], value[3:5], value[5:7], value[7:10], value[10:13], value[13:]])
    return label, value


def person(xcn: XCN | None) -> str:
    """"Dr Claire MARTIN" from an XCN (prefix, given, family), or its id."""
    if xcn is None:
        return ""
    name = " ".join(p for p in (xcn.prefix, xcn.given_name, xcn.family_name) if p)
    return name or xcn.id_number


def professional_id(national_id: str) -> str:
    """A national professional id (8 + RPPS, 0 + ADELI) as a clinician reads it."""
    if len(national_id) == 12 and national_id.startswith("8"):
        return f"RPPS {national_id[1:]}"
    if len(national_id) == 10 and national_id.startswith("0"):
        return f"ADELI {national_id[1:]}"
    return national_id


SPECIMENS = ("Sérum/Plasma", "Sang buvard", "Sang", "Plasma", "Sérum", "Urine", "Urines", "Isolat", "LCR")


def short_label(display: str) -> str:
    """A LOINC long name as a report's line says it: the component, before "[property]",
    the specimen and " ; scale" ("Créatinine [Masse/Volume] Sérum/Plasma ; Numérique" ->
    "Créatinine"; "Hémoglobine A1c/Hémoglobine totale Sang ; Numérique" -> "Hémoglobine
    A1c/Hémoglobine totale")."""
    text = display.strip()
    cut = min((i for i in (text.find(" ["), text.find(" ; ")) if i > 0), default=len(text))
    short = text[:cut].strip()
    for word in SPECIMENS:
        if short.endswith(" " + word) and "[" not in text[:cut]:
            short = short[:-len(word) - 1].strip()
            break
    return short or text


def specimen(display: str) -> str:
    """The specimen of a LOINC long name ("... [Arbitraire/Volume] Sang buvard ; ..." -> "Sang buvard")."""
    text = display.strip()
    head = text.split(" ; ", 1)[0]
    if "]" in head:
        return head.rsplit("]", 1)[1].strip()
    return next((w for w in SPECIMENS if head.endswith(" " + w)), "")


_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)?")


def result_text(text: str) -> str:
    """A result given as text ("0.512 ug/mL", "0.5 - 1.2", "< 0.05"): its numbers and unit as a
    clinician writes them; words are kept as they are."""
    parts = text.split()
    if not parts or not _NUMBER.search(parts[0] if parts[0][0] not in "<>≤≥" else parts[0][1:] or "0"):
        return text
    shown = _NUMBER.sub(lambda m: number(m.group()), text)
    words = shown.split()
    if len(words) >= 2 and not any(ch.isdigit() for ch in words[-1]):
        words[-1] = unit(words[-1]) or words[-1]
    return " ".join(words)
