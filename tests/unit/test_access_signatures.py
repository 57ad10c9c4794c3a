"""IHE DSG SubmissionSet signatures: signing, verification, tampering, `partage sign`."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest
from lxml import etree

from partage.access import signatures as S
from partage.access.actor import Actor
from partage.access.credentials import DevAuthority
from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.ebxml.soap import parse_envelope
from tests import factories as F

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "iti41-provide.xml"
DOCTOR = Actor(id="810000000002", kind="professional", role="10")




def _settings(authority, **kw):
    return Settings(trust=str(authority.directory / "ca.pem"), **kw)


def _request(pid=None):
    pid = pid or F.patient_id()
    return F.submission(pid, [F.document(pid, "d1"), F.document(pid, "d2")])


def test_signed_submission_verifies(authority):
    request = _request()
    entry = S.sign_submission(request, authority.key, authority.cert)
    assert S.is_signature(entry) and entry.entry_uuid in request.contents
    assert S.check_submission(_settings(authority), DOCTOR, request) == []


@pytest.mark.parametrize("tamper", ["bytes", "drop", "add", "signature", "set id"])
def test_tampered_submission_refused(authority, tamper):
    request = _request()
    entry = S.sign_submission(request, authority.key, authority.cert)
    if tamper == "bytes":
        request.contents["d2"].file = __import__("io").BytesIO(b"<doc>changed</doc>")
    elif tamper == "drop":
        request.documents = [d for d in request.documents if d.entry_uuid != "d2"]
    elif tamper == "add":
        extra = F.document(request.submission_set.patient_id, "d3")
        request.documents.insert(0, extra)
        request.contents["d3"] = request.contents["d1"]
    elif tamper == "signature":
        data = request.contents[entry.entry_uuid].file.getvalue()
        request.contents[entry.entry_uuid].file = __import__("io").BytesIO(data.replace(b"IHEManifest", b"IHEManifesX"))
    elif tamper == "set id":
        request.submission_set.unique_id += ".9"
    errors = S.check_submission(_settings(authority), DOCTOR, request)
    assert errors and all(e.code == "XDSRepositoryMetadataError" for e in errors)


def test_untrusted_signer_refused(authority):
    request = _request()
    S.sign_submission(request, DevAuthority.create().key, DevAuthority.create().cert)
    assert S.check_submission(_settings(authority), DOCTOR, request)


def test_required_signatures(authority):
    request = _request()
    assert S.check_submission(_settings(authority), DOCTOR, request) == []
    required = _settings(authority, require_signed_submissions=True)
    assert S.check_submission(required, DOCTOR, request)
    assert S.check_submission(required, Actor(id="feed", kind="system"), request) == []
    S.sign_submission(request, authority.key, authority.cert)
    assert S.check_submission(required, DOCTOR, request) == []


def test_sign_command(authority, tmp_path):
    from partage.cli import main

    out = tmp_path / "signed.xml"
    assert main(["sign", str(EXAMPLE), "--credentials", str(authority.directory), "--out", str(out)]) == 0
    body = parse_envelope(out.read_bytes()).body
    request = ebrim.read_submission(body.find(f"{{{C.LCM}}}SubmitObjectsRequest"))
    import hashlib
    import io

    from partage.metadata.model import DocumentContent
    for document in body.findall(f"{{{C.XDSB}}}Document"):
        data = base64.b64decode(document.text)
        request.contents[document.get("id")] = DocumentContent(file=io.BytesIO(data), size=len(data),
                                                               sha1=hashlib.sha1(data).hexdigest())
    signatures = [d for d in request.documents if S.is_signature(d)]
    assert len(signatures) == 1
    assert S.check_submission(_settings(authority), DOCTOR, request) == []
    manifest = S.verify_signature(request.contents[signatures[0].entry_uuid].file.getvalue(),
                                  str(authority.directory / "ca.pem"))
    assert manifest.tag == f"{{{S.DS}}}Manifest"
    assert etree.QName(manifest).localname == "Manifest"


def test_without_trust(authority):
    request = _request()
    S.sign_submission(request, authority.key, authority.cert)
    assert S.check_submission(Settings(), DOCTOR, request)                        # cannot verify: refused
    assert S.check_submission(Settings(insecure_dev=True), DOCTOR, request) == []  # development: logged
