"""An object's stored body (registry.bodies): packed against a fixed dictionary, read back
exactly, the JSON of rows stored before packing still read, and anything else refused."""

from __future__ import annotations

import hashlib
import json
import zlib

import pytest

from partage.metadata import codec
from partage.registry.bodies import DICTIONARY_1, VERSION_1, CorruptBody, pack, unpack
from partage.registry.indexing import object_from_row, row_values
from tests import factories as F


def _objects():
    pid = F.patient_id()
    return F.submission(pid, [F.document(pid, "a"), F.document(pid, "b")], contents=False).objects()


def test_every_kind_of_object_is_read_back_as_it_was_registered():
    for obj in _objects():
        body = row_values(obj, patient_pk=1, registered_at="20261205000000")["body"]
        assert isinstance(body, bytes) and body[:1] == VERSION_1
        assert object_from_row(body) == obj


def test_a_document_entry_is_stored_in_well_under_half_its_json():
    """What the packing is for (docs/performance.md, "Disk per document")."""
    [doc] = [o for o in _objects() if o.kind == "DocumentEntry"][:1]
    text = json.dumps(codec.to_dict(doc), separators=(",", ":"), ensure_ascii=False)
    assert len(pack(text)) < 0.45 * len(text.encode())


def test_the_first_dictionary_never_changes():
    """Stored rows depend on it: a better dictionary is a new version byte, never an edit."""
    assert hashlib.sha256(DICTIONARY_1).hexdigest() == (
        "2369035082f4d27a8e43024f51357cc75857048c7d3b6c44441f0993f986b684")


@pytest.mark.parametrize("stored", ['{"kind":"Folder"}', b'{"kind":"Folder"}', memoryview(b'{"kind":"Folder"}')])
def test_a_body_stored_before_packing_is_read_as_its_json(stored):
    assert unpack(stored) == '{"kind":"Folder"}'


def test_text_outside_latin1_survives():
    text = '{"title":"Compte rendu d\'échographie — 胸部 ✓"}'
    assert unpack(pack(text)) == text


@pytest.mark.parametrize("stored", [
    b"",                                          # nothing
    b"\x02" + b"abc",                             # a version that does not exist
    VERSION_1 + b"\xff\xff\xff",                  # not a deflate stream
    pack('{"kind":"Folder","title":"x"}')[:-3],   # cut short
    b"[1,2]",                                     # neither packed nor an object's JSON
], ids=["empty", "unknown-version", "garbage", "truncated", "json-array"])
def test_a_body_that_cannot_be_read_back_is_refused_by_name(stored):
    with pytest.raises(CorruptBody):
        unpack(stored)


def test_a_packed_body_is_raw_deflate_against_the_dictionary():
    """The stored form is documented (registry.bodies): another program can read it."""
    packed = pack('{"kind":"Association"}')
    reader = zlib.decompressobj(-15, DICTIONARY_1)
    assert reader.decompress(packed[1:]) + reader.flush() == b'{"kind":"Association"}'
