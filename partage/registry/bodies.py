"""How an object's body (its metadata.codec JSON) is stored: deflated against a fixed dictionary.

A body is small (a DocumentEntry about 1.2 KB, an Association 250 bytes) and made mostly of the
same keys, OIDs and URN prefixes in every row, which deflate alone cannot exploit in so few bytes
and PostgreSQL never compresses (it tries only past 2 KB). Deflated against a dictionary of those
strings, a DocumentEntry's body is about a fifth of its JSON (docs/performance.md, "Disk per
document"): the largest part of the registry's bytes per document.

Stored form: one version byte, then the raw deflate stream made with that version's dictionary.
A dictionary is never changed once released (stored rows depend on it; a test pins its digest):
a better one is a new version byte, and `unpack` keeps reading the old ones. A body stored before
packing existed (migration 0016) is its JSON, as text or as UTF-8 bytes, and is read as such.
"""

from __future__ import annotations

import zlib

VERSION_1 = b"\x01"


class CorruptBody(ValueError):
    """A stored body that cannot be read back (fsck reports the row; a request gets the registry's
    internal-error answer, as for any unreadable row)."""

# Version 1's dictionary: the codec's keys in the order it writes them, then the values most rows
# share (ebRIM / XDS URNs, the ANS code systems' OIDs, the INS and RPPS assigning authorities, the
# HL7 component separators), the commonest last, as deflate reaches the nearest matches cheapest.
DICTIONARY_1 = (
    b'"legal_authenticator":"^^^^^^^^&1.2.250.1.71.4.2.1&ISO","uri":"","document_availability":"Online",'
    b'"limited_metadata":true,"event_codes":[["","1.2.250.1.213.2.5",""]],"reference_ids":["^^^&&ISO^urn:ihe:'
    b'iti:xds:2013:order","^^^&&ISO^urn:ihe:iti:xds:2013:accession","^^^&&ISO^urn:ihe:iti:xds:2013:uniqueId'
    b'Identifier"],"source_patient_info":["PID-3|","PID-5|^^^^^^L","PID-7|","PID-8|F","PID-8|M"],'
    b'"intended_recipients":["|"],"content_type_code":["","1.2.250.1.213.1.1.4.12",""],"comments":"",'
    b'"documentation":"","last_update_time":"","home_community_id":"urn:oid:","object_type":'
    b'"urn:uuid:34268e47-fdf5-41a6-ba33-82133c465248","availability_status":"urn:oasis:names:tc:ebxml-'
    b'regrep:StatusType:Deprecated","association_type":"urn:ihe:iti:2007:AssociationType:RPLC",'
    b'"urn:ihe:iti:2007:AssociationType:APND","urn:ihe:iti:2007:AssociationType:XFRM","urn:oasis:names:tc:'
    b'ebxml-regrep:AssociationType:HasMember","submission_set_status":"Original","source_uuid":"urn:uuid:",'
    b'"target_uuid":"urn:uuid:","kind":"Association","entry_uuid":"urn:uuid:","kind":"SubmissionSet",'
    b'"source_id":"1.2.250.1.","submission_time":"20","kind":"Folder","codes":[["","",""]],'
    b'"institutions":["^^^^^^^^^1.2.250.1.71.4.2.2"],"roles":["",""],"specialties":["^^1.2.250.1.71.4.2.5"],'
    b'"telecoms":["^^Internet^"],"language_code":"fr-FR","mime_type":"application/pdf","mime_type":"text/xml",'
    b'"hash":"","size":,"repository_unique_id":"1.2.250.1.","creation_time":"20","service_start_time":"20",'
    b'"service_stop_time":"20","class_code":["","1.2.250.1.213.1.1.4.1",""],"type_code":["","2.16.840.1.113883'
    b'.6.1",""],"format_code":["urn:asip:ci-sis:","1.2.250.1.213.1.1.4.2.282",""],"healthcare_facility_type_'
    b'code":["","1.2.250.1.71.4.2.4",""],"practice_setting_code":["","1.2.250.1.213.1.1.4.9",""],'
    b'"confidentiality_codes":[["N","2.16.840.1.113883.5.25",""]],"authors":[{"person":"^^^^^^^^&1.2.250.1.71'
    b'.4.2.1&ISO"}],"kind":"DocumentEntry","entry_uuid":"urn:uuid:","title":"","unique_id":"1.2.250.1.",'
    b'"patient_id":"^^^&1.2.250.1.213.1.4.8&ISO","source_patient_id":"^^^&1.2.250.1.213.1.4.8&ISO",'
    b'"lid":"urn:uuid:","version":'
)


def pack(text: str) -> bytes:
    """The stored form of a body's JSON."""
    # Level 1, memLevel 4: within 12 % of the smallest a level can give here, at a third of its CPU
    # (about 25 µs for a DocumentEntry), which the bulk load pays per row.
    packer = zlib.compressobj(1, zlib.DEFLATED, -15, 4, zlib.Z_DEFAULT_STRATEGY, DICTIONARY_1)
    return VERSION_1 + packer.compress(text.encode()) + packer.flush()


def unpack(stored: bytes | memoryview | str) -> str:
    """A body's JSON from its stored form (packed, or plain JSON stored before packing)."""
    if isinstance(stored, str):
        return stored
    data = bytes(stored)
    if data[:1] == VERSION_1:
        reader = zlib.decompressobj(-15, DICTIONARY_1)
        try:
            text = reader.decompress(data[1:]) + reader.flush()
        except zlib.error as exc:
            raise CorruptBody(f"a stored body does not inflate: {exc}") from exc
        if not reader.eof:
            raise CorruptBody("a stored body is cut short")
        return text.decode()
    if data[:1] == b"{":
        return data.decode()
    raise CorruptBody(f"a stored body has an unknown form (first byte {data[:1]!r})")
