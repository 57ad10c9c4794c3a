"""HL7 v2 typed values (XCN, XON, XTN, CX, CWE-like strings, DTM) <-> FHIR data types.

The model keeps XDS values in their wire form; FHIR splits them into structures. Each
forward function adds the wire value in an extension (`XDS_VALUE`) and each reverse
function returns that value unchanged when the structure still says the same thing,
so an ITI-41 author read back by ITI-67 and submitted again by ITI-65 keeps every
component, even those FHIR has no element for (XCN.10, XON.7...). When a client edits
the structure, the value is rebuilt from it instead.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from ..metadata.datatypes import CX, DTM, HD, XCN, XON, XTN, DatatypeError, is_oid
from .codes import scheme_of, system_of

Json = dict[str, Any]
XDS_VALUE = "urn:partage:fhir:xds-value"


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


def kept(resource: Json, forward: Callable[[str], Json], rebuild: Callable[[Json], str],
         ignore: tuple[str, ...] = ()) -> str:
    """The kept wire value if the structure still matches it, else a value rebuilt from it.

    `ignore`: elements of the resource that carry other attributes (a Practitioner's telecom).
    """
    original = next((e.get("valueString") for e in resource.get("extension", [])
                     if e.get("url") == XDS_VALUE), None)
    if original is not None:
        try:
            if _bare(forward(original), ignore) == _bare(resource, ignore):
                return original
        except (DatatypeError, ValueError):
            pass
    return rebuild(resource)


# --- identifiers and codes -------------------------------------------------------------------
def oid_identifier(value: str, authority: str) -> Json:
    out: Json = {"value": value}
    if authority:
        out["system"] = system_of(authority)
    return out


def cx_to_identifier(cx_text: str) -> Json:
    cx = CX.parse(cx_text, strict=False)
    out = oid_identifier(cx.id, cx.assigning_authority.universal_id)
    if cx.id_type:
        out["type"] = {"text": cx.id_type}
    return keep(out, cx_text)


def identifier_to_cx(identifier: Json) -> str:
    def rebuild(ident: Json) -> str:
        authority = scheme_of(ident.get("system", ""))
        hd = HD.iso(authority) if is_oid(authority) else HD()
        return CX(ident.get("value", ""), hd, (ident.get("type") or {}).get("text", "")).format()
    return kept(identifier, cx_to_identifier, rebuild)


def coding(code_value: str, scheme: str, display: str = "") -> Json:
    out: Json = {"system": system_of(scheme), "code": code_value}
    if display:
        out["display"] = display
    return out


def cwe_to_concept(text: str) -> Json:
    """authorRole / authorSpecialty: `code^display^scheme` or plain text."""
    if "^" not in text:
        return keep({"text": text}, text)
    parts = text.split("^")
    code_value, display = parts[0], parts[1] if len(parts) > 1 else ""
    scheme = parts[2] if len(parts) > 2 else ""
    if "&" in scheme:
        scheme = HD.parse(scheme, "&", strict=False).universal_id
    c: Json = {"code": code_value}
    if scheme:
        c["system"] = system_of(scheme)
    if display:
        c["display"] = display
    return keep({"coding": [c]}, text)


def concept_to_cwe(concept: Json) -> str:
    def rebuild(cc: Json) -> str:
        codings = cc.get("coding") or []
        if not codings:
            return cc.get("text", "")
        c = codings[0]
        return "^".join([c.get("code", ""), c.get("display", ""),
                         scheme_of(c.get("system", ""))]).rstrip("^")
    return kept(concept, cwe_to_concept, rebuild)


# --- people, organisations, telecoms ----------------------------------------------------------
def xcn_to_practitioner(text: str) -> Json:
    xcn = XCN.parse(text, strict=False)
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
    return keep(out, text)


def practitioner_to_xcn(resource: Json) -> str:
    def rebuild(res: Json) -> str:
        ident = (res.get("identifier") or [{}])[0]
        name = (res.get("name") or [{}])[0]
        authority = scheme_of(ident.get("system", ""))
        given = name.get("given") or []
        return XCN(id_number=ident.get("value", ""), family_name=name.get("family", ""),
                   given_name=given[0] if given else "", further_given_names=" ".join(given[1:]),
                   suffix=(name.get("suffix") or [""])[0], prefix=(name.get("prefix") or [""])[0],
                   assigning_authority=HD.iso(authority) if is_oid(authority) else HD(),
                   identifier_type_code=(ident.get("type") or {}).get("text", "")).format()
    return kept(resource, xcn_to_practitioner, rebuild, ignore=("telecom",))


def xon_to_organization(text: str) -> Json:
    xon = XON.parse(text, strict=False)
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
    return keep(out, text)


def organization_to_xon(resource: Json) -> str:
    def rebuild(res: Json) -> str:
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
                   organization_identifier=value).format()
    return kept(resource, xon_to_organization, rebuild)


_PHONE_SYSTEMS = {"FX": "fax", "BP": "pager"}
_USES = {"WPN": "work", "PRN": "home", "ORN": "temp"}


def xtn_to_contact(text: str) -> Json:
    xtn = XTN.parse(text, strict=False)
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
    return keep(out, text)


def contact_to_xtn(contact: Json) -> str:
    def rebuild(cp: Json) -> str:
        use = {v: k for k, v in _USES.items()}.get(cp.get("use", ""), "")
        if cp.get("system") == "email":
            return XTN(use_code="NET", equipment_type="Internet", email=cp.get("value", "")).format()
        equipment = {v: k for k, v in _PHONE_SYSTEMS.items()}.get(cp.get("system", ""), "PH")
        if cp.get("use") == "mobile":
            equipment = "CP"
        return XTN(use_code=use, equipment_type=equipment, local_number=cp.get("value", "")).format()
    return kept(contact, xtn_to_contact, rebuild)


# --- times and digests -----------------------------------------------------------------------
def dtm_to_fhir(value: str) -> str:
    """FHIR dateTime: a time needs seconds, so hour/minute precision becomes second precision."""
    dtm = DTM(value)
    if dtm.precision in (10, 12):
        dtm = DTM(dtm.lower_bound())
    return dtm.to_iso()


def fhir_to_dtm(value: str) -> str:
    return DTM.from_iso(value).format()


def dtm_to_instant(value: str) -> str | None:
    """FHIR instant needs second precision; coarser values have none."""
    return DTM(value).to_iso() if len(value) == 14 else None


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
