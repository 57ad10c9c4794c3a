"""The model's HL7 v2 typed values (XCN, XON, XTN, CX, CE, DTM) <-> FHIR data types.

FHIR has no element for some components (XCN.10, XON.7...). Each forward function adds the
value's HL7 text in an extension (`XDS_VALUE`) and each reverse function returns that
value unchanged when the structure still says the same thing, so an ITI-41 author read
back by ITI-67 and submitted again by ITI-65 keeps every component. When a client edits
the structure, the value is rebuilt from it instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any, TypeVar

from ..metadata.datatypes import CE, CX, DTM, HD, XCN, XON, XTN, DatatypeError, Recipient, is_oid
from .codes import scheme_of, system_of

Json = dict[str, Any]
XDS_VALUE = "urn:partage:fhir:xds-value"
T = TypeVar("T", CX, XCN, XON, XTN, CE, Recipient)


def identifier_cx(identifier: Json) -> CX | None:
    """A FHIR Identifier whose system is an OID, as the registry's CX; None otherwise."""
    authority = scheme_of(identifier.get("system", "") or "")
    value = identifier.get("value", "") or ""
    if not value or not is_oid(authority):
        return None
    return CX(value, HD.iso(authority))


# --- keeping the wire value ------------------------------------------------------------------
def keep(resource: Json, wire: str) -> Json:
    resource.setdefault("extension", []).append({"url": XDS_VALUE, "valueString": wire})
    return resource


def _bare(resource: Json, ignore: tuple[str, ...] = ()) -> Json:
    out = {k: v for k, v in resource.items() if k not in ("id", "extension", *ignore)}
    others = [e for e in resource.get("extension", []) if e.get("url") != XDS_VALUE]
    if others:
        out["extension"] = others
    return out


def kept(resource: Json, kind: type[T], forward: Callable[[T], Json], rebuild: Callable[[Json], T],
         ignore: tuple[str, ...] = ()) -> T:
    """The kept value if the structure still matches it, else a value rebuilt from it.

    `ignore`: elements of the resource that carry other attributes (a Practitioner's telecom).
    """
    original = next((e.get("valueString") for e in resource.get("extension", [])
                     if e.get("url") == XDS_VALUE), None)
    if isinstance(original, str):
        try:
            value = kind.parse(original, strict=False)
            if _bare(forward(value), ignore) == _bare(resource, ignore):
                return value
        except (DatatypeError, ValueError):
            pass
    return rebuild(resource)


# --- identifiers and codes -------------------------------------------------------------------
def oid_identifier(value: str, authority: str) -> Json:
    out: Json = {"value": value}
    if authority:
        out["system"] = system_of(authority)
    return out


def cx_to_identifier(cx: CX) -> Json:
    out = oid_identifier(cx.id, cx.assigning_authority.universal_id)
    if cx.id_type:
        out["type"] = {"text": cx.id_type}
    return keep(out, cx.format())


def identifier_to_cx(identifier: Json) -> CX:
    def rebuild(ident: Json) -> CX:
        authority = scheme_of(ident.get("system", ""))
        hd = HD.iso(authority) if is_oid(authority) else HD()
        return CX(ident.get("value", ""), hd, (ident.get("type") or {}).get("text", ""))
    return kept(identifier, CX, cx_to_identifier, rebuild)


def coding(code_value: str, scheme: str, display: str = "") -> Json:
    out: Json = {"system": system_of(scheme), "code": code_value}
    if display:
        out["display"] = display
    return out


def cwe_to_concept(text: str) -> Json:
    """authorRole / authorSpecialty: `code^display^scheme` (CE) or plain text."""
    ce = CE.parse(text)
    if not (ce.text or ce.coding_system or ce.extra):
        return keep({"text": ce.identifier}, text)
    scheme = ce.coding_system
    if "&" in scheme:
        scheme = HD.parse(scheme, "&", strict=False).universal_id
    c: Json = {"code": ce.identifier}
    if scheme:
        c["system"] = system_of(scheme)
    if ce.text:
        c["display"] = ce.text
    return keep({"coding": [c]}, text)


def concept_to_cwe(concept: Json) -> str:
    def rebuild(cc: Json) -> CE:
        codings = cc.get("coding") or []
        if not codings:
            return CE(cc.get("text", ""))
        c = codings[0]
        return CE(c.get("code", ""), c.get("display", ""), scheme_of(c.get("system", "")))
    return kept(concept, CE, lambda ce: cwe_to_concept(ce.format()), rebuild).format()


# --- people, organisations, telecoms ----------------------------------------------------------
def xcn_to_practitioner(xcn: XCN) -> Json:
    out: Json = {"resourceType": "Practitioner"}
    if xcn.id_number:
        ident = oid_identifier(xcn.id_number, xcn.assigning_authority.universal_id)
        if xcn.identifier_type_code:
            ident["type"] = {"text": xcn.identifier_type_code}
        out["identifier"] = [ident]
    name: Json = {}
    if xcn.family_name:
        name["family"] = xcn.family_name
    given = [g for g in (xcn.given_name, xcn.further_given_names) if g]
    if given:
        name["given"] = given
    if xcn.suffix:
        name["suffix"] = [xcn.suffix]
    if xcn.prefix:
        name["prefix"] = [xcn.prefix]
    if name:
        out["name"] = [name]
    return keep(out, xcn.format())


def practitioner_to_xcn(resource: Json) -> XCN:
    def rebuild(res: Json) -> XCN:
        ident = (res.get("identifier") or [{}])[0]
        name = (res.get("name") or [{}])[0]
        authority = scheme_of(ident.get("system", ""))
        given = name.get("given") or []
        return XCN(id_number=ident.get("value", ""), family_name=name.get("family", ""),
                   given_name=given[0] if given else "", further_given_names=" ".join(given[1:]),
                   suffix=(name.get("suffix") or [""])[0], prefix=(name.get("prefix") or [""])[0],
                   assigning_authority=HD.iso(authority) if is_oid(authority) else HD(),
                   identifier_type_code=(ident.get("type") or {}).get("text", ""))
    return kept(resource, XCN, xcn_to_practitioner, rebuild, ignore=("telecom",))


def xon_to_organization(xon: XON) -> Json:
    out: Json = {"resourceType": "Organization"}
    if xon.organization_identifier:
        authority = xon.assigning_authority.universal_id
        if authority:
            ident = oid_identifier(xon.organization_identifier, authority)
        elif is_oid(xon.organization_identifier):
            ident = {"system": "urn:ietf:rfc:3986", "value": f"urn:oid:{xon.organization_identifier}"}
        else:
            ident = {"value": xon.organization_identifier}
        if xon.id_type:
            ident["type"] = {"text": xon.id_type}
        out["identifier"] = [ident]
    if xon.organization_name:
        out["name"] = xon.organization_name
    return keep(out, xon.format())


def organization_to_xon(resource: Json) -> XON:
    def rebuild(res: Json) -> XON:
        ident = (res.get("identifier") or [{}])[0]
        system, value = ident.get("system", ""), ident.get("value", "")
        authority = HD()
        if system == "urn:ietf:rfc:3986" and value.startswith("urn:oid:"):
            value = value[8:]
        elif system:
            scheme = scheme_of(system)
            authority = HD.iso(scheme) if is_oid(scheme) else HD()
        return XON(organization_name=res.get("name", ""), assigning_authority=authority,
                   id_type=(ident.get("type") or {}).get("text", ""),
                   organization_identifier=value)
    return kept(resource, XON, xon_to_organization, rebuild)


_PHONE_SYSTEMS = {"FX": "fax", "BP": "pager"}
_USES = {"WPN": "work", "PRN": "home", "ORN": "temp"}


def xtn_to_contact(xtn: XTN) -> Json:
    if xtn.email:
        out: Json = {"system": "email", "value": xtn.email}
    else:
        number = " ".join(p for p in (f"+{xtn.country_code}" if xtn.country_code else "",
                                      xtn.area_code, xtn.local_number or xtn.telephone_number) if p)
        if xtn.extension:
            number += f" x{xtn.extension}"
        out = {"system": _PHONE_SYSTEMS.get(xtn.equipment_type, "phone"), "value": number}
        if xtn.equipment_type == "CP":
            out["use"] = "mobile"
    if xtn.use_code in _USES and "use" not in out:
        out["use"] = _USES[xtn.use_code]
    return keep(out, xtn.format())


def contact_to_xtn(contact: Json) -> XTN:
    def rebuild(cp: Json) -> XTN:
        use = {v: k for k, v in _USES.items()}.get(cp.get("use", ""), "")
        if cp.get("system") == "email":
            return XTN(use_code="NET", equipment_type="Internet", email=cp.get("value", ""))
        equipment = {v: k for k, v in _PHONE_SYSTEMS.items()}.get(cp.get("system", ""), "PH")
        if cp.get("use") == "mobile":
            equipment = "CP"
        return XTN(use_code=use, equipment_type=equipment, local_number=cp.get("value", ""))
    return kept(contact, XTN, xtn_to_contact, rebuild)


# --- times and digests -----------------------------------------------------------------------
def dtm_to_fhir(dtm: DTM) -> str:
    """FHIR dateTime: a time needs seconds, so hour/minute precision becomes second precision."""
    if dtm.precision in (10, 12):
        dtm = DTM(dtm.lower_bound())
    return dtm.to_iso()


def fhir_to_dtm(value: str) -> DTM:
    return DTM.from_iso(value)


def dtm_to_instant(dtm: DTM) -> str | None:
    """FHIR instant needs second precision; coarser values have none."""
    return dtm.to_iso() if dtm.precision == 14 else None


def sha1_to_base64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def base64_to_sha1(value: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise DatatypeError(f"attachment.hash {value!r} is not base64") from exc
    if len(raw) != 20:
        raise DatatypeError(f"attachment.hash decodes to {len(raw)} bytes, not a SHA-1 (20)")
    return raw.hex()
