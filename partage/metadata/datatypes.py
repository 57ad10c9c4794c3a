"""HL7 v2 data types of XDS metadata: parsing, formatting and the XDS restrictions.

ITI TF-3 4.2.3.1.7 (Table 4.2.3.1.7-2) says how CX, CXi, XCN, XON, XTN, DTM, OID and UUID
values are written, and restricts HL7 v2.5 further: which components may be valued, that
assigning authorities are ISO OIDs, that times are UTC without offset. The values travel as
HL7-encoded strings (separators ``^`` ``&``, escapes ``\\F\\ \\S\\ \\T\\ \\R\\ \\E\\``); this
module turns them into frozen objects and back.

``parse(text)`` checks the XDS rules (``strict=True``, the default); ``strict=False`` only
checks that the text is well-formed HL7 and takes raw delimiters literally, for attributes the
TF treats loosely and for reading stored data back. ``format()`` always writes valid HL7 and
trims trailing empty components (the TF recommends it and receivers ignore them), so
``parse(format(x)) == x``. Pure: standard library only, no I/O.
"""

from __future__ import annotations

import calendar
import re
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import ClassVar, Self

__all__ = [
    "CE",
    "CX",
    "DTM",
    "ED",
    "EI",
    "HD",
    "MSG",
    "Recipient",
    "VID",
    "XCN",
    "XPN",
    "XON",
    "XTN",
    "DatatypeError",
    "escape_hl7",
    "is_oid",
    "is_uuid_urn",
    "new_uuid_urn",
    "oid_from_urn",
    "oid_to_urn",
    "unescape_hl7",
]


class DatatypeError(ValueError):
    """A malformed value; the message names the component at fault, e.g. ``CX.4: ...``."""


# --- identifiers --------------------------------------------------------------------------

MAX_OID_LENGTH = 64   # ITI TF-2x Appendix B.3: "UIDs shall not exceed 64 total characters"
_OID_RE = re.compile(r"[0-2](?:\.(?:0|[1-9][0-9]*))+", re.ASCII)
_UUID_URN_RE = re.compile(
    r"urn:uuid:[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}", re.ASCII)
_OID_URN_PREFIX = "urn:oid:"


def is_oid(text: str) -> bool:
    """An ISO OID as XDS writes it: at least two dotted arcs, first arc 0-2, no leading zeros."""
    return isinstance(text, str) and len(text) <= MAX_OID_LENGTH and bool(_OID_RE.fullmatch(text))


def is_uuid_urn(text: str) -> bool:
    """``urn:uuid:`` and the RFC 4122 8-4-4-4-12 hex form (either case; we only write lowercase)."""
    return isinstance(text, str) and bool(_UUID_URN_RE.fullmatch(text))


def new_uuid_urn() -> str:
    """A fresh random ``urn:uuid:``, lowercase as ITI TF-3 4.2.3.1.5 requires."""
    return uuid.uuid4().urn


def oid_from_urn(text: str) -> str:
    """``urn:oid:1.2.3`` -> ``1.2.3`` (RFC 3061; the ``urn:oid:`` prefix is case-insensitive)."""
    if not isinstance(text, str) or text[:len(_OID_URN_PREFIX)].lower() != _OID_URN_PREFIX:
        raise DatatypeError(f"OID URN: {text!r} does not start with urn:oid:")
    oid = text[len(_OID_URN_PREFIX):]
    if not is_oid(oid):
        raise DatatypeError(f"OID URN: {oid!r} is not an ISO OID")
    return oid


def oid_to_urn(oid: str) -> str:
    """``1.2.3`` -> ``urn:oid:1.2.3``; refuses what is not an OID so no bad URN is ever written."""
    if not is_oid(oid):
        raise DatatypeError(f"OID: {oid!r} is not an ISO OID")
    return _OID_URN_PREFIX + oid


# --- HL7 escaping -------------------------------------------------------------------------

_ESCAPES = {"F": "|", "S": "^", "T": "&", "R": "~", "E": "\\"}
_ESCAPE_TABLE = str.maketrans({char: f"\\{code}\\" for code, char in _ESCAPES.items()})
_DELIMITERS = "|^&~"
_HEX_ESCAPE = re.compile(r"X(?:[0-9A-Fa-f]{2})+\Z")


def unique_id_parts(value: str) -> tuple[str, str]:
    """A document uniqueId as (root, extension): CI-SIS writes a CDA id `root^extension`
    (ClinicalDocument/id), IHE a bare OID (extension "")."""
    root, _, extension = value.partition("^")
    return root, extension


def source_patient_field(line: str) -> tuple[str, str]:
    """One sourcePatientInfo line, `PID-n|value` (ITI TF-3 4.2.3.2.23), as (field, HL7 value)."""
    field, _, value = line.partition("|")
    return field, value


def escape_hl7(text: str) -> str:
    """Write the HL7 separators and the escape character as \\F\\ \\S\\ \\T\\ \\R\\ \\E\\."""
    return text.translate(_ESCAPE_TABLE)


def unescape_hl7(text: str, strict: bool = True) -> str:
    """Decode one leaf value (no structure left in it).

    Strict: only the five separator escapes are allowed (ITI TF-3 4.2.3.1.7 forbids \\H\\ \\N\\
    \\Zdddd\\) and a raw separator or stray backslash is an error. Lenient: both are literal.
    """
    if "\\" not in text and not (strict and any(d in text for d in _DELIMITERS)):
        return text   # nothing to decode: a megabyte of base64 (ED.5) is not walked char by char
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char == "\\":
            end = text.find("\\", i + 1)
            code = text[i + 1:end] if end != -1 else None
            if code in _ESCAPES:
                out.append(_ESCAPES[code])
                i = end + 1
                continue
            if not strict and code is not None and _HEX_ESCAPE.match(code):
                # \Xdddd...\ hexadecimal data (HL7 v2.5 2.7.4): how a sender writes the line
                # breaks of wrapped base64 in OBX-5 (a raw CR would end the segment). Text only:
                # a control character other than a line break or a tab stays written as sent.
                decoded = bytes.fromhex(code[1:]).decode("latin-1")
                if all(c.isprintable() or c in "\r\n\t" for c in decoded):
                    out.append(decoded)
                    i = end + 1
                    continue
            if strict:
                if code is None:
                    raise DatatypeError("unterminated escape sequence (a backslash is written \\E\\)")
                raise DatatypeError(f"escape sequence \\{code}\\ is not allowed in XDS metadata "
                                    "(only \\F\\ \\S\\ \\T\\ \\R\\ \\E\\)")
        elif strict and char in _DELIMITERS:
            raise DatatypeError(f"unescaped separator {char!r} (write {escape_hl7(char)})")
        out.append(char)
        i += 1
    return "".join(out)


def _leaf(text: str, label: str, strict: bool) -> str:
    try:
        return unescape_hl7(text, strict)
    except DatatypeError as exc:
        raise DatatypeError(f"{label}: {exc}") from None


def _require_text(text: object, label: str) -> str:
    if not isinstance(text, str):
        raise DatatypeError(f"{label}: expected a string, got {type(text).__name__}")
    return text


def _no_outer_space(text: str, label: str) -> None:
    if text != text.strip():
        raise DatatypeError(f"{label}: leading or trailing whitespace in {text!r}")


# --- HD -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class HD:
    """Hierarchic designator: an assigning authority or facility (``ns&universal id&type``)."""

    namespace_id: str = ""
    universal_id: str = ""
    universal_id_type: str = ""

    @classmethod
    def parse(cls, text: str, sep: str = "&", strict: bool = True) -> Self:
        """``sep`` is ``&`` inside a CX/XCN/XON component, ``^`` for an HD standing alone."""
        return cls._parse(_require_text(text, "HD"), sep, strict, "HD")

    @classmethod
    def _parse(cls, text: str, sep: str, strict: bool, label: str) -> Self:
        if sep not in ("&", "^"):
            raise ValueError(f"HD separator must be '&' or '^', not {sep!r}")
        parts = text.split(sep)
        if len(parts) > 3:
            raise DatatypeError(f"{label}: an HD has at most 3 parts, found {len(parts)} in {text!r}")
        parts += [""] * (3 - len(parts))
        return cls(*(_leaf(part, f"{label}.{n}", strict) for n, part in enumerate(parts, 1)))

    @classmethod
    def iso(cls, oid: str) -> Self:
        """The XDS form of an assigning authority: ``&OID&ISO``."""
        return cls("", oid, "ISO")

    @property
    def is_empty(self) -> bool:
        return not (self.namespace_id or self.universal_id or self.universal_id_type)

    @property
    def is_iso_oid(self) -> bool:
        """Exactly ``&OID&ISO``, what XDS requires of CX.4 and XCN.9."""
        return (not self.namespace_id and self.universal_id_type == "ISO"
                and is_oid(self.universal_id))

    def format(self, sep: str = "&") -> str:
        parts = (self.namespace_id, self.universal_id, self.universal_id_type)
        return sep.join(escape_hl7(part) for part in parts).rstrip(sep)

    def __str__(self) -> str:
        return self.format()


def _check_iso_authority(hd: HD, label: str) -> None:
    """CX.4 / XCN.9 / XON.6 in XDS: empty namespace, an ISO OID, universal id type ISO."""
    if hd.is_empty:
        raise DatatypeError(f"{label}: assigning authority is missing (expected &OID&ISO)")
    if hd.namespace_id:
        raise DatatypeError(f"{label}.1: namespace id must be empty (expected &OID&ISO, "
                            f"found {hd.format()!r})")
    if not is_oid(hd.universal_id) or hd.universal_id_type != "ISO":
        raise DatatypeError(f"{label}: assigning authority must be an ISO OID with universal id "
                            f"type ISO (found {hd.format()!r})")


# --- composites ---------------------------------------------------------------------------

class _Composite:
    """Shared parse/format of ``^``-separated types: a layout of (field, is_hd) per component.

    Components past the layout are kept verbatim (still escaped) in ``extra`` so they survive
    a round trip.
    """

    __slots__ = ()
    _NAME: ClassVar[str]
    _LAYOUT: ClassVar[tuple[tuple[str, bool], ...]]
    extra: tuple[str, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.extra, tuple):   # keep instances hashable whatever was passed
            object.__setattr__(self, "extra", tuple(self.extra))

    @classmethod
    def parse(cls, text: str, strict: bool = False) -> Self:
        """Lenient by default: the TF sets no XDS rule on these types beyond well-formed HL7."""
        return cls._from_text(_require_text(text, cls._NAME), cls._NAME, strict)

    @classmethod
    def _from_text(cls, text: str, name: str, strict: bool) -> Self:
        components = text.split("^")
        values: dict[str, object] = {}
        for n, (field, is_hd) in enumerate(cls._LAYOUT, 1):
            raw = components[n - 1] if n <= len(components) else ""
            label = f"{name}.{n}"
            values[field] = HD._parse(raw, "&", strict, label) if is_hd else _leaf(raw, label, strict)
        extra = components[len(cls._LAYOUT):]
        while extra and not extra[-1]:
            extra.pop()
        if strict:
            for n, raw in enumerate(extra, len(cls._LAYOUT) + 1):
                for part in raw.split("&"):
                    _leaf(part, f"{name}.{n}", strict)
        make: Callable[..., Self] = cls   # the dataclass's own constructor
        return make(**values, extra=tuple(extra))

    def format(self) -> str:
        parts = [getattr(self, field).format("&") if is_hd else escape_hl7(getattr(self, field))
                 for field, is_hd in self._LAYOUT]
        return "^".join([*parts, *self.extra]).rstrip("^")

    def __str__(self) -> str:
        return self.format()

    def _first_valued(self, fields: tuple[str, ...]) -> str | None:
        """Label of the first valued component among ``fields`` or ``extra``, else None."""
        for n, (field, is_hd) in enumerate(self._LAYOUT, 1):
            value = getattr(self, field)
            if field in fields and (not value.is_empty if is_hd else value):
                return f"{self._NAME}.{n}"
        for n, raw in enumerate(self.extra, len(self._LAYOUT) + 1):
            if raw:
                return f"{self._NAME}.{n}"
        return None


class _XdsComposite(_Composite, ABC):
    """A composite ITI TF-3 Table 4.2.3.1.7-2 restricts: strict by default, ``check_xds``
    (each type's own) states the restriction."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str, strict: bool = True) -> Self:
        value = cls._from_text(_require_text(text, cls._NAME), cls._NAME, strict)
        if strict:
            value.check_xds()
        return value

    @abstractmethod
    def check_xds(self) -> None:
        """Raise DatatypeError where the value breaks the XDS restriction of its type."""


# --- CX -----------------------------------------------------------------------------------

_CXI_NEEDS_AUTHORITY = ("urn:ihe:iti:xds:2013:referral", "urn:ihe:iti:xds:2013:order",
                        "urn:ihe:iti:xds:2015:encounterId")


@dataclass(frozen=True, slots=True)
class CX(_XdsComposite):
    """Identifier: patientId/sourcePatientId (CX) and referenceIdList (CXi)."""

    id: str
    assigning_authority: HD = HD()     # CX.4
    id_type: str = ""                  # CX.5 identifier type code
    check_digit: str = ""              # CX.2
    check_digit_scheme: str = ""       # CX.3
    assigning_facility: HD = HD()      # CX.6
    extra: tuple[str, ...] = ()        # CX.7 onwards, verbatim

    _NAME = "CX"
    _LAYOUT = (("id", False), ("check_digit", False), ("check_digit_scheme", False),
               ("assigning_authority", True), ("id_type", False), ("assigning_facility", True))

    @classmethod
    def parse(cls, text: str, strict: bool = True) -> Self:
        """Strict is the XDS patient id: ``IdNumber^^^&OIDofAA&ISO`` with an optional CX.5.

        Lenient (e.g. sourcePatientId as some sources send it) only needs a CX.1.
        """
        _require_text(text, "CX")
        if strict:
            if not text:
                raise DatatypeError("CX: value is empty")
            _no_outer_space(text, "CX")
        cx = cls._from_text(text, "CX", strict)
        if not cx.id:
            raise DatatypeError("CX.1: id number is missing")
        if strict:
            cx.check_xds()
        return cx

    def check_xds(self) -> None:
        """ITI TF-3 Table 4.2.3.1.7-2 (CX) and 4.2.3.2.16 (patientId).

        Beyond the TF text, CX.5 may be valued: CI-SIS patient ids carry it (``...&ISO^NH``).
        """
        if not self.id:
            raise DatatypeError("CX.1: id number is missing")
        _no_outer_space(self.id, "CX.1")
        for label, value in (("CX.2", self.check_digit), ("CX.3", self.check_digit_scheme)):
            if value:
                raise DatatypeError(f"{label}: must be empty in an XDS identifier (found {value!r})")
        _check_iso_authority(self.assigning_authority, "CX.4")
        _no_outer_space(self.id_type, "CX.5")
        extra = self._first_valued(("assigning_facility",))
        if extra:
            raise DatatypeError(f"{extra}: only CX.1, CX.4 and CX.5 may be valued in an XDS "
                                "patient identifier")

    @classmethod
    def parse_reference_id(cls, text: str) -> Self:
        """A referenceIdList value (CXi, ITI TF-3 Table 4.2.3.1.7-2).

        CXi.1 and CXi.5 required, CXi.2/3 empty, CXi.4 either a namespace id or a universal
        id with its type, CXi.6 (assigning facility, where later TF revisions put the
        homeCommunityId) allowed, nothing after it. The per-type "only CXi.1 and CXi.5" rule
        of workflowInstanceId/studyInstanceUID is not enforced: NIST's own test data breaks it.
        """
        _require_text(text, "CXi")
        if not text:
            raise DatatypeError("CXi: value is empty")
        _no_outer_space(text, "CXi")
        cx = cls._from_text(text, "CXi", strict=True)
        if not cx.id:
            raise DatatypeError("CXi.1: identifier value is missing")
        for label, value in (("CXi.2", cx.check_digit), ("CXi.3", cx.check_digit_scheme)):
            if value:
                raise DatatypeError(f"{label}: must be empty (found {value!r})")
        aa = cx.assigning_authority
        if bool(aa.universal_id) != bool(aa.universal_id_type):
            raise DatatypeError("CXi.4: a universal id needs its universal id type and the other "
                                f"way round (found {aa.format()!r})")
        if aa.universal_id_type == "ISO" and not is_oid(aa.universal_id):
            raise DatatypeError(f"CXi.4.2: {aa.universal_id!r} is not an ISO OID")
        if not cx.id_type:
            raise DatatypeError("CXi.5: identifier type code is missing "
                                "(e.g. urn:ihe:iti:xds:2013:accession)")
        if cx.id_type in _CXI_NEEDS_AUTHORITY and aa.is_empty:
            raise DatatypeError(f"CXi.4: assigning authority is required for {cx.id_type}")
        if cx.extra:
            raise DatatypeError(f"CXi.{len(cls._LAYOUT) + 1}: no component after CXi.6 is allowed")
        return cx

    @property
    def key(self) -> tuple[str, str]:
        """(assigning authority OID, id): what identifies the patient, for lookups."""
        return (self.assigning_authority.universal_id, self.id)


# --- XCN ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class XCN(_XdsComposite):
    """A person (or software agent): authorPerson, legalAuthenticator."""

    id_number: str = ""                 # XCN.1
    family_name: str = ""               # XCN.2
    given_name: str = ""                # XCN.3
    further_given_names: str = ""       # XCN.4
    suffix: str = ""                    # XCN.5
    prefix: str = ""                    # XCN.6
    degree: str = ""                    # XCN.7
    source_table: str = ""              # XCN.8
    assigning_authority: HD = HD()      # XCN.9
    name_type_code: str = ""            # XCN.10
    identifier_check_digit: str = ""    # XCN.11
    check_digit_scheme: str = ""        # XCN.12
    identifier_type_code: str = ""      # XCN.13
    extra: tuple[str, ...] = ()         # XCN.14 onwards, verbatim

    _NAME = "XCN"
    _LAYOUT = (("id_number", False), ("family_name", False), ("given_name", False),
               ("further_given_names", False), ("suffix", False), ("prefix", False),
               ("degree", False), ("source_table", False), ("assigning_authority", True),
               ("name_type_code", False), ("identifier_check_digit", False),
               ("check_digit_scheme", False), ("identifier_type_code", False))

    def check_xds(self) -> None:
        """ITI TF-3 Table 4.2.3.1.7-2 (XCN).

        "Component 9 shall be present if available" cannot be checked (we cannot know what is
        available), so an XCN.1 without XCN.9 passes; a present XCN.9 must be ``&OID&ISO``.
        """
        if not self.id_number and not self.family_name:
            raise DatatypeError("XCN: at least XCN.1 (id number) or XCN.2 (family name) "
                                "must be valued")
        if not self.assigning_authority.is_empty:
            _check_iso_authority(self.assigning_authority, "XCN.9")

    @property
    def display_name(self) -> str:
        """'Given FAMILY' for people; the id number when there is no name."""
        names = (self.given_name, self.further_given_names, self.family_name.upper())
        return " ".join(name for name in names if name) or self.id_number


# --- XON ----------------------------------------------------------------------------------

_XON_OTHER = ("name_type_code", "id_number", "check_digit", "check_digit_scheme",
              "assigning_facility", "name_representation_code")


@dataclass(frozen=True, slots=True)
class XON(_XdsComposite):
    """An organization: authorInstitution, intendedRecipient."""

    organization_name: str = ""         # XON.1
    assigning_authority: HD = HD()      # XON.6
    id_type: str = ""                   # XON.7
    organization_identifier: str = ""   # XON.10
    name_type_code: str = ""            # XON.2
    id_number: str = ""                 # XON.3 (deprecated in v2.5)
    check_digit: str = ""               # XON.4
    check_digit_scheme: str = ""        # XON.5
    assigning_facility: HD = HD()       # XON.8
    name_representation_code: str = ""  # XON.9
    extra: tuple[str, ...] = ()         # XON.11 onwards, verbatim

    _NAME = "XON"
    _LAYOUT = (("organization_name", False), ("name_type_code", False), ("id_number", False),
               ("check_digit", False), ("check_digit_scheme", False),
               ("assigning_authority", True), ("id_type", False), ("assigning_facility", True),
               ("name_representation_code", False), ("organization_identifier", False))

    def check_xds(self) -> None:
        """ITI TF-3 Table 4.2.3.1.7-2 (XON): XON.1 required; XON.6 ``&OID&ISO`` required when
        XON.10 is valued and not an OID; no other fields.

        XON.7 (identifier type code) is accepted too: French structures send it (IDNST).
        """
        if not self.organization_name:
            raise DatatypeError("XON.1: organization name is required")
        other = self._first_valued(_XON_OTHER)
        if other:
            raise DatatypeError(f"{other}: not allowed in XDS (only XON.1, XON.6, XON.7 and "
                                "XON.10 may be valued)")
        if not self.assigning_authority.is_empty:
            _check_iso_authority(self.assigning_authority, "XON.6")
        elif self.organization_identifier and not is_oid(self.organization_identifier):
            raise DatatypeError("XON.6: assigning authority (&OID&ISO) is required when XON.10 "
                                f"{self.organization_identifier!r} is not an OID")

    @property
    def key(self) -> tuple[str, str]:
        """(assigning authority OID, identifier); the authority is empty for an OID identifier."""
        return (self.assigning_authority.universal_id, self.organization_identifier)


# --- XTN ----------------------------------------------------------------------------------

_EMAIL_RE = re.compile(r"[^@\s]+@[^@\s]+")
_XTN_PHONE_ONLY = ("country_code", "area_code", "local_number", "extension")


@dataclass(frozen=True, slots=True)
class XTN(_XdsComposite):
    """A telecommunication address: authorTelecommunication, intendedRecipient."""

    use_code: str = ""          # XTN.2 (e.g. WPN, PRS, NET)
    equipment_type: str = ""    # XTN.3 (Internet, PH, FX, CP, ...)
    email: str = ""             # XTN.4
    country_code: str = ""      # XTN.5
    area_code: str = ""         # XTN.6
    local_number: str = ""      # XTN.7
    extension: str = ""         # XTN.8
    telephone_number: str = ""  # XTN.1 (deprecated in v2.5)
    any_text: str = ""          # XTN.9
    extra: tuple[str, ...] = ()  # XTN.10 onwards, verbatim

    _NAME = "XTN"
    _LAYOUT = (("telephone_number", False), ("use_code", False), ("equipment_type", False),
               ("email", False), ("country_code", False), ("area_code", False),
               ("local_number", False), ("extension", False), ("any_text", False))

    def check_xds(self) -> None:
        """ITI TF-3 Table 4.2.3.1.7-2 (XTN): an email is ``[NET]^Internet^address``; a phone
        needs XTN.3 and XTN.7 and may use XTN.2, 5, 6, 8; no other fields."""
        other = self._first_valued(("telephone_number", "any_text"))
        if other:
            raise DatatypeError(f"{other}: not allowed in XDS (use XTN.2 to XTN.8)")
        if self.equipment_type == "Internet":
            if not self.email:
                raise DatatypeError("XTN.4: email address is required when XTN.3 is Internet")
            if not _EMAIL_RE.fullmatch(self.email):
                raise DatatypeError(f"XTN.4: {self.email!r} is not an email address")
            if self.use_code not in ("", "NET"):
                raise DatatypeError(f"XTN.2: must be NET or empty for an email address "
                                    f"(found {self.use_code!r})")
            phone = self._first_valued(_XTN_PHONE_ONLY)
            if phone:
                raise DatatypeError(f"{phone}: phone number parts are not allowed with an email "
                                    "address")
            return
        if self.equipment_type.lower() == "internet":
            raise DatatypeError(f"XTN.3: the email equipment type is spelled 'Internet' "
                                f"(found {self.equipment_type!r})")
        if not self.equipment_type:
            raise DatatypeError("XTN.3: telecommunication equipment type is required "
                                "(Internet for an email address, e.g. PH for a phone)")
        if self.email:
            raise DatatypeError("XTN.4: an email address needs XTN.3 = Internet")
        if not self.local_number:
            raise DatatypeError("XTN.7: subscriber number is required for a phone number")

    @property
    def is_email(self) -> bool:
        return self.equipment_type == "Internet"


# --- CE -----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class CE(_Composite):
    """A coded element as HL7 v2 text (``code^text^system``): authorRole and authorSpecialty
    as CI-SIS writes them, HL7 v2 coded fields (OBX-3, MSH-9 components...)."""

    identifier: str = ""        # CE.1
    text: str = ""              # CE.2
    coding_system: str = ""     # CE.3
    extra: tuple[str, ...] = ()  # CE.4 onwards (alternate code), verbatim

    _NAME = "CE"
    _LAYOUT = (("identifier", False), ("text", False), ("coding_system", False))


# --- XPN ----------------------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class XPN(_Composite):
    """A person's name (PID-5; sourcePatientInfo's ``PID-5|family^given``)."""

    family_name: str = ""       # XPN.1
    given_name: str = ""        # XPN.2
    further_given_names: str = ""   # XPN.3
    suffix: str = ""            # XPN.4
    prefix: str = ""            # XPN.5
    degree: str = ""            # XPN.6
    name_type_code: str = ""    # XPN.7
    extra: tuple[str, ...] = ()

    _NAME = "XPN"
    _LAYOUT = (("family_name", False), ("given_name", False), ("further_given_names", False),
               ("suffix", False), ("prefix", False), ("degree", False), ("name_type_code", False))


# --- HL7 v2 message fields: MSG, VID, EI, ED ----------------------------------------------

@dataclass(frozen=True, slots=True)
class MSG(_Composite):
    """Message type (MSH-9): ``ADT^A01^ADT_A01``, ``MDM^T02^MDM_T02``."""

    message_code: str = ""        # MSG.1
    trigger_event: str = ""       # MSG.2
    message_structure: str = ""   # MSG.3
    extra: tuple[str, ...] = ()

    _NAME = "MSG"
    _LAYOUT = (("message_code", False), ("trigger_event", False), ("message_structure", False))


@dataclass(frozen=True, slots=True)
class VID(_Composite):
    """Version identifier (MSH-12): ``2.5``, ``2.6^FRA``; the CE components are kept as text."""

    version_id: str = ""                  # VID.1
    internationalization_code: str = ""   # VID.2 (CE, read as text)
    international_version_id: str = ""    # VID.3 (CE, read as text)
    extra: tuple[str, ...] = ()

    _NAME = "VID"
    _LAYOUT = (("version_id", False), ("internationalization_code", False),
               ("international_version_id", False))


@dataclass(frozen=True, slots=True)
class EI(_Composite):
    """Entity identifier (TXA-12, TXA-13): ``extension^namespace^root^ISO``."""

    entity_identifier: str = ""   # EI.1
    namespace_id: str = ""        # EI.2
    universal_id: str = ""        # EI.3
    universal_id_type: str = ""   # EI.4
    extra: tuple[str, ...] = ()

    _NAME = "EI"
    _LAYOUT = (("entity_identifier", False), ("namespace_id", False), ("universal_id", False),
               ("universal_id_type", False))


@dataclass(frozen=True, slots=True)
class ED(_Composite):
    """Encapsulated data (OBX-5 of type ED): ``^TEXT^XML^Base64^<data>``."""

    source_application: HD = HD()   # ED.1
    type_of_data: str = ""          # ED.2
    data_subtype: str = ""          # ED.3
    encoding: str = ""              # ED.4
    data: str = ""                  # ED.5
    extra: tuple[str, ...] = ()

    _NAME = "ED"
    _LAYOUT = (("source_application", True), ("type_of_data", False), ("data_subtype", False),
               ("encoding", False), ("data", False))


# --- intendedRecipient ---------------------------------------------------------------------

@dataclass(frozen=True, slots=True)
class Recipient:
    """SubmissionSet.intendedRecipient: ``XON|XCN|XTN`` (ITI TF-3 Table 4.2.3.3-1), any part
    may be empty (``|XCN``, ``||XTN``). Read leniently: the TF states no rule we could check
    beyond each part being well-formed HL7."""

    organization: XON | None = None
    person: XCN | None = None
    telecom: XTN | None = None

    @classmethod
    def parse(cls, text: str, strict: bool = False) -> Self:  # noqa: ARG003 — every parse() takes strict
        parts = _require_text(text, "intendedRecipient").split("|")
        if len(parts) > 3:
            raise DatatypeError("intendedRecipient: at most XON|XCN|XTN (found more than three parts)")
        parts += [""] * (3 - len(parts))
        org, person, telecom = parts
        return cls(XON.parse(org, False) if org else None,
                   XCN.parse(person, False) if person else None,
                   XTN.parse(telecom, False) if telecom else None)

    def format(self) -> str:
        parts = [p.format() if p is not None else "" for p in (self.organization, self.person, self.telecom)]
        return "|".join(parts).rstrip("|")

    def __str__(self) -> str:
        return self.format()


# --- DTM ----------------------------------------------------------------------------------

_DTM_PRECISIONS = (4, 6, 8, 10, 12, 14)
_DIGITS_RE = re.compile(r"[0-9]+", re.ASCII)
_HL7_OFFSET_RE = re.compile(r"[0-9]{4,14}(?:\.[0-9]+)?(?:Z|[+-][0-9]{4})", re.ASCII)
_FRACTION_RE = re.compile(r"[0-9]{14}\.[0-9]+", re.ASCII)
_DTM_LOW = "0101000000"      # MMDDhhmmss of the earliest instant in a truncated DTM
_ISO_RE = re.compile(
    r"(?P<y>[0-9]{4})(?:-(?P<mo>[0-9]{2})(?:-(?P<d>[0-9]{2})"
    r"(?:T(?P<h>[0-9]{2})(?::(?P<mi>[0-9]{2})(?::(?P<s>[0-9]{2})(?:\.[0-9]+)?)?)?"
    r"(?P<tz>Z|[+-][0-9]{2}:[0-9]{2})?)?)?)?", re.ASCII)
_FORMAT_HINT = "YYYY[MM[DD[hh[mm[ss]]]]]"


def _check_dtm(value: object) -> None:
    """ITI TF-3 Table 4.2.3.1.7-2 (DTM): UTC, YYYY[MM[DD[hh[mm[ss]]]]], no offset."""
    if not isinstance(value, str):
        raise DatatypeError(f"DTM: expected a string, got {type(value).__name__}")
    if not value:
        raise DatatypeError("DTM: value is empty")
    _no_outer_space(value, "DTM")
    if _HL7_OFFSET_RE.fullmatch(value):
        raise DatatypeError(f"DTM: time zone offset in {value!r}; XDS times are UTC and written "
                            f"without offset ({_FORMAT_HINT})")
    if _FRACTION_RE.fullmatch(value):
        raise DatatypeError(f"DTM: fractional seconds in {value!r} are not allowed ({_FORMAT_HINT})")
    if not _DIGITS_RE.fullmatch(value) and _ISO_RE.fullmatch(value):
        raise DatatypeError(f"DTM: {value!r} is ISO 8601; XDS writes {_FORMAT_HINT} in UTC "
                            "(DTM.from_iso converts)")
    if not _DIGITS_RE.fullmatch(value):
        raise DatatypeError(f"DTM: {value!r} has a character other than 0-9 ({_FORMAT_HINT})")
    if len(value) not in _DTM_PRECISIONS:
        raise DatatypeError(f"DTM: {len(value)} digits in {value!r}; expected 4, 6, 8, 10, 12 or "
                            f"14 ({_FORMAT_HINT})")
    year = int(value[:4])
    if year == 0:
        raise DatatypeError("DTM: year 0000 does not exist")
    if len(value) >= 6 and not 1 <= int(value[4:6]) <= 12:
        raise DatatypeError(f"DTM: month {value[4:6]} is not 01-12")
    if len(value) >= 8:
        last = calendar.monthrange(year, int(value[4:6]))[1]
        if not 1 <= int(value[6:8]) <= last:
            raise DatatypeError(f"DTM: day {value[6:8]} does not exist in {value[:4]}-{value[4:6]}")
    for start, name, top in ((8, "hour", 23), (10, "minute", 59), (12, "second", 59)):
        if len(value) > start and int(value[start:start + 2]) > top:
            raise DatatypeError(f"DTM: {name} {value[start:start + 2]} is not 00-{top}")


@dataclass(frozen=True, slots=True)
class DTM:
    """An XDS date/time: UTC, as precise as known; "2004" stays "2004"."""

    value: str

    def __post_init__(self) -> None:
        _check_dtm(self.value)

    @classmethod
    def parse(cls, text: str) -> Self:
        return cls(text)

    def format(self) -> str:
        return self.value

    def __str__(self) -> str:
        return self.value

    @property
    def precision(self) -> int:
        """Number of digits: 4 (year) to 14 (second)."""
        return len(self.value)

    def lower_bound(self) -> str:
        """The first second the value covers, as 14 digits: "2004" -> "20040101000000"."""
        return self.value + _DTM_LOW[len(self.value) - 4:]

    def upper_bound(self) -> str:
        """The last second the value covers, as 14 digits: "2004" -> "20041231235959"."""
        value = self.value
        if len(value) == 6:
            last = calendar.monthrange(int(value[:4]), int(value[4:6]))[1]
            return f"{value}{last:02d}235959"
        return value + "1231235959"[len(value) - 4:]

    def to_datetime(self) -> datetime:
        """The lower bound as an aware UTC datetime."""
        low = self.lower_bound()
        return datetime(int(low[:4]), int(low[4:6]), int(low[6:8]), int(low[8:10]),
                        int(low[10:12]), int(low[12:14]), tzinfo=UTC)

    @classmethod
    def from_datetime(cls, dt: datetime, precision: int = 14) -> Self:
        """Convert to UTC and truncate; a naive datetime is refused (its zone is unknown)."""
        if precision not in _DTM_PRECISIONS:
            raise DatatypeError(f"DTM: precision {precision} is not one of {_DTM_PRECISIONS}")
        if dt.tzinfo is None or dt.utcoffset() is None:
            raise DatatypeError("DTM: naive datetime; give it a time zone (XDS times are UTC)")
        try:
            utc = dt.astimezone(UTC)
        except OverflowError:
            raise DatatypeError(f"DTM: {dt.isoformat()} is out of range in UTC") from None
        digits = (f"{utc.year:04d}{utc.month:02d}{utc.day:02d}"
                  f"{utc.hour:02d}{utc.minute:02d}{utc.second:02d}")
        return cls(digits[:precision])

    @classmethod
    def from_iso(cls, text: str) -> Self:
        """ISO 8601 / FHIR date, dateTime or instant -> DTM, keeping the precision.

        A time needs a zone (Z or +hh:mm) and is converted to UTC; fractions of a second are
        dropped (DTM stops at seconds). An hour-precision time with a half-hour offset gains
        minute precision, since its UTC minute is no longer 00.
        """
        _require_text(text, "ISO date/time")
        match = _ISO_RE.fullmatch(text)
        if not match:
            raise DatatypeError(f"ISO date/time: {text!r} is not "
                                "YYYY[-MM[-DD[Thh[:mm[:ss[.f]]](Z|+hh:mm)]]]")
        digits = "".join(match.group(g) or "" for g in ("y", "mo", "d", "h", "mi", "s"))
        local = cls(digits)
        tz = match.group("tz")
        if match.group("h") is None:
            return local
        if tz is None:
            raise DatatypeError(f"ISO date/time: {text!r} has a time but no time zone "
                                "(Z or +hh:mm); it cannot be converted to UTC")
        offset = timedelta(0)
        if tz != "Z":
            hours, minutes = int(tz[1:3]), int(tz[4:6])
            if hours > 23 or minutes > 59:
                raise DatatypeError(f"ISO date/time: time zone offset {tz} is out of range")
            offset = timedelta(hours=hours, minutes=minutes) * (-1 if tz[0] == "-" else 1)
        precision = local.precision
        if precision == 10 and offset % timedelta(hours=1):
            precision = 12
        dt = local.to_datetime().replace(tzinfo=timezone(offset))
        return cls.from_datetime(dt, precision)

    def to_iso(self) -> str:
        """DTM -> ISO 8601 at the same precision: "2004-12", "2004-12-25T21:20Z".

        FHIR dateTime needs seconds once there is a time: use ``DTM(d.lower_bound()).to_iso()``
        when writing one from a coarser value.
        """
        value = self.value
        out = value[:4]
        for start, sep in ((4, "-"), (6, "-"), (8, "T"), (10, ":"), (12, ":")):
            if len(value) > start:
                out += sep + value[start:start + 2]
        return out + ("Z" if len(value) >= 10 else "")
