"""asbestos' fixture service (`ftkLoadFixture`) and the identifiers it gives a PDB before sending.

`load_fixture` is asbestos' GetFixtureStringRequest: the fixture file is looked for as
FixturePartsLoader.loadFixture does, in this order:

1. `<test collection>/<test>/<resourceType or Bundle>/<fixtureId>.xml` (the running test's folder)
2. `<test collection>/<test>/../Common/<fixtureId>.xml`
3. `<baseTestCollection>/<baseTestName or the test's name>/<resourceType or Bundle>/<fixtureId>.xml`
   (only when the request names a baseTestCollection)

Then its `<!--@{Name}-->` placeholders are filled (a request parameter of that name wins, else
the file `Name.xml` found in the same order; names are those asbestos knows), then its
`@{RandomUUID}` ones; the text is parsed as HAPI parses it and answered as a JSON Bundle (a
single resource is wrapped in one). `allocate_ids` is SetupActionMhdPdbTransaction's
renumbering of the DocumentReference masterIdentifiers, DocumentManifest masterIdentifiers
and the SubmissionSet List's usual identifier before each send.
"""

from __future__ import annotations

import itertools
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

from . import hapi

# FixturePlaceholderEnum: the only `<!--@{...}-->` names asbestos fills from a file
XML_PLACEHOLDERS = ("BundleMetaMinimalProfileElement", "BundleMetaComprehensiveProfileElement",
                    "DocumentReferenceMetaMinimalProfileElement",
                    "DocumentReferenceMetaComprehensiveProfileElement",
                    "SubmissionSetRequestUrlElement", "SubmissionSetResourceElement")
RFC3986 = "urn:ietf:rfc:3986"


class FixtureError(Exception):
    """asbestos would answer the fixture request with a 400 (the message says why)."""


@dataclass
class LoadedFixture:
    bundle: dict[str, Any]
    path: Path
    warnings: list[str] = field(default_factory=list)


def _safe(name: str | None) -> bool:
    """FixturePartsLoader.isSafeFileName: not empty and no '.', so no path traversal."""
    return bool(name) and "." not in name  # type: ignore[operator]


def find_fixture(collections: Path, collection: str, test: str, fixture_id: str, params: dict[str, str],
                 resource_type: str | None = None) -> Path:
    folder = resource_type or "Bundle"
    test_dir = collections / collection / test
    candidates = [test_dir / folder / f"{fixture_id}.xml", test_dir / ".." / "Common" / f"{fixture_id}.xml"]
    base = params.get("baseTestCollection")
    if _safe(base):
        base_name = params.get("baseTestName")
        if base_name is None:
            candidates.append(collections / unquote(base or "") / test / folder / f"{fixture_id}.xml")
        elif _safe(base_name):
            candidates.append(collections / unquote(base or "") / unquote(base_name) / folder / f"{fixture_id}.xml")
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FixtureError(f"fixtureFile is not valid or does not exist: {candidates[-1]}")


def _replace(text: str, begin: str, end: str, params: dict[str, str], lookup: Any, depth: int = 0) -> str:
    """FixturePlaceholderReplacer.replacePlaceholders: the first placeholder, all its occurrences,
    then again until none is left."""
    while True:
        start = text.find(begin)
        if start < 0:
            return text
        stop = text.find(end, start)
        if stop < 0:
            raise FixtureError(f"Placeholder at {start} has no closing.")
        name = text[start + len(begin):stop]
        value = params.get(name)
        if value is None:
            replacement = lookup(name)
        elif begin in value:
            raise FixtureError("Safety check failed.")
        else:
            replacement = value
        depth += 1
        if depth > 1000:
            raise FixtureError("placeholders do not resolve")
        text = text.replace(f"{begin}{name}{end}", replacement)


def load_fixture(collections: Path, collection: str, test: str, params: dict[str, str]) -> LoadedFixture:
    fixture_id = params.get("fixtureId")
    if not _safe(fixture_id):
        raise FixtureError("fixtureId parameter is not valid.")
    resource_type = params.get("resourceType")
    if resource_type is not None and not _safe(resource_type):
        raise FixtureError("resourceType parameter is not valid.")
    path = find_fixture(collections, collection, test, fixture_id or "", params, resource_type)
    text = path.read_text(encoding="utf-8")

    def xml_part(name: str) -> str:
        if name not in XML_PLACEHOLDERS:
            raise FixtureError(f"Do not understand fixture placeholder name {name}.")
        return find_fixture(collections, collection, test, name, params).read_text(encoding="utf-8")

    def simple(name: str) -> str:
        if name != "RandomUUID":
            raise FixtureError(f"Do not understand fixture placeholder attribute name {name}.")
        return str(uuid.uuid4())

    text = _replace(text, "<!--@{", "}-->", params, xml_part)
    text = _replace(text, "@{", "}", params, simple)
    try:
        parsed = hapi.read_xml(text)
    except hapi.FormatError as exc:
        raise FixtureError(f"GetFixtureStringRequest ParserBase Exception: {exc}") from exc
    resource = parsed.resource
    if resource["resourceType"] != "Bundle":
        resource = {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": resource}]}
    return LoadedFixture(resource, path, parsed.warnings)


# --- identifiers -----------------------------------------------------------------------------------

_lock = threading.Lock()
_last_millis = 0


def _date_oid() -> str:
    """IdBuilder.allocate: urn:oid:1.2.<ip>.<y>.<m>.<d>.<h>.<min>.<s>.<ms> (unpadded). The
    clock is made strictly increasing so that two sends in one millisecond differ."""
    global _last_millis
    with _lock:
        millis = max(int(time.time() * 1000), _last_millis + 1)
        _last_millis = millis
    t = time.localtime(millis / 1000)
    parts = (t.tm_year, t.tm_mon, t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec, millis % 1000)
    return "urn:oid:1.2.127.0.0.1." + ".".join(str(p) for p in parts)


def allocate_ids(bundle: dict[str, Any]) -> None:
    """New unique ids for one send, in place (SetupActionMhdPdbTransaction.updateResourceToSend)."""
    if bundle.get("resourceType") != "Bundle":
        return
    counter = itertools.count(1)
    for entry in bundle.get("entry") or []:
        resource = entry.get("resource") if isinstance(entry, dict) else None
        if not isinstance(resource, dict):
            continue
        kind = resource.get("resourceType")
        target: dict[str, Any] | None = None
        if kind == "List":
            target = next((i for i in resource.get("identifier") or []
                           if isinstance(i, dict) and i.get("use") == "usual" and i.get("system") == RFC3986),
                          None)
        elif kind in ("DocumentManifest", "DocumentReference"):
            master = resource.get("masterIdentifier")
            target = master if isinstance(master, dict) else None
        if target is not None:
            target["value"] = f"{_date_oid()}.{next(counter)}"
