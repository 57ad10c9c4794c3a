"""ebRS responses: RegistryResponse, AdhocQueryResponse, RetrieveDocumentSetResponse bodies."""

from __future__ import annotations

from collections.abc import Iterable

from lxml import etree

from ..ebxml import constants as C
from ..ebxml.ebrim import write_object_list
from ..metadata.errors import XdsError
from ..metadata.model import AnyObject, ObjectRef
from ..xmlsafe import xml_text

RS = f"{{{C.RS}}}"


def status_of(errors: Iterable[XdsError], partial: bool = False) -> str:
    if any(not e.warning for e in errors):
        return C.STATUS_PARTIAL if partial else C.STATUS_FAILURE
    return C.STATUS_SUCCESS


def error_list(parent: etree._Element, errors: list[XdsError]) -> None:
    if not errors:
        return
    highest = C.SEVERITY_ERROR if any(not e.warning for e in errors) else C.SEVERITY_WARNING
    holder = etree.SubElement(parent, RS + "RegistryErrorList", highestSeverity=highest)
    for error in errors:
        etree.SubElement(holder, RS + "RegistryError", {
            "errorCode": str(error.code), "codeContext": xml_text(error.context),
            "location": xml_text(error.location or ""),
            "severity": C.SEVERITY_WARNING if error.warning else C.SEVERITY_ERROR,
        })


def registry_response(errors: Iterable[XdsError] = (), status: str | None = None) -> etree._Element:
    errors = list(errors)
    root = etree.Element(RS + "RegistryResponse", status=status or status_of(errors),
                         nsmap={"rs": C.RS})
    error_list(root, errors)
    return root


def query_response(objects: Iterable[AnyObject | ObjectRef],
                   errors: Iterable[XdsError] = ()) -> etree._Element:
    errors = list(errors)
    root = etree.Element(f"{{{C.QUERY}}}AdhocQueryResponse", status=status_of(errors),
                         nsmap={"query": C.QUERY, "rim": C.RIM, "rs": C.RS})
    error_list(root, errors)   # schema order: RegistryErrorList before RegistryObjectList
    write_object_list(objects if not any(not e.warning for e in errors) else [], root)
    return root
