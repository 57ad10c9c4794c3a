"""The ITI-8 patient identity feed tried as an attacker would: merges against the record's
access state, the old id after a merge, escapes and character sets in PID, and the ACK of a
refusal (MSA-2, ERR naming the field). In-process (Services + route / an in-process MLLP
listener on a free port), SQLite: light on a shared machine."""

from __future__ import annotations

import io
import socket
import uuid

import pytest
from lxml import etree

from partage.config import Settings
from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.ebxml.mtom import read_soap_request
from partage.ebxml.soap import build_envelope, parse_envelope
from partage.hl7.routing import route
from partage.hl7.server import MllpServer
from partage.metadata.er7 import Er7Message
from partage.registry import patients as registry_patients
from partage.registry.access_state import Records
from partage.server.app import create_app
from partage.services import Services
from tests import factories as F
from tests.xdsclient import Reply

RIM, LCM, RS, Q = (f"{{{ns}}}" for ns in (C.RIM, C.LCM, C.RS, C.QUERY))
APPROVED = "('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"


@pytest.fixture(scope="module")
def app(tmp_path_factory):
    settings = Settings(data_dir=tmp_path_factory.mktemp("pidfeed") / "data", insecure_dev=True)
    services = Services.open(settings)
    application = create_app(settings, services)
    application.services = services
    yield application
    services.close()


def _adt(trigger: str, pid: str, *, mrg: str = "", control: str = "", name: str = "DUPONT^JEANNE",
         version: str = "2.3.1", charset: str = "") -> str:
    control = control or uuid.uuid4().hex[:16]   # unique: a reused MSH-10 is a retransmission or refused
    msh = f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^{trigger}^ADT_{trigger}|{control}|P|{version}"
    if charset:
        msh += f"||||||{charset}"
    segments = [msh, f"EVN|{trigger}|20240101120000", f"PID|||{pid}||{name}||19700101|F", "PV1||O"]
    if mrg:
        segments.insert(3, f"MRG|{mrg}")
    return "\r".join(segments) + "\r"


def _feed(app, pid) -> None:
    assert "MSA|AA" in route(app.services, _adt("A01", str(pid)))


def _post(app, action: str, body) -> Reply:
    envelope = build_envelope(action, body, to="http://localhost/xds/registry")
    r = app.test_client().post("/xds/registry", data=envelope, headers={
        "Content-Type": f'application/soap+xml; charset=UTF-8; action="{action}"'})
    assert r.status_code < 500, r.data[:500]
    message = read_soap_request(r.headers.get("Content-Type", ""), io.BytesIO(r.data), max_total=1 << 31)
    return Reply(r.status_code, parse_envelope(message.root, require_action=False).body, message.parts)


def _register(app, request) -> Reply:
    submit = etree.Element(LCM + "SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), submit)
    return _post(app, C.ACTION_REGISTER, submit)


def _find(app, pid) -> Reply:
    body = etree.Element(Q + "AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
    etree.SubElement(body, Q + "ResponseOption", returnType="LeafClass", returnComposedObjects="true")
    adhoc = etree.SubElement(body, RIM + "AdhocQuery", id=C.STORED_QUERY_IDS["FindDocuments"])
    for key, value in (("$XDSDocumentEntryPatientId", f"'{pid}'"), ("$XDSDocumentEntryStatus", APPROVED)):
        etree.SubElement(etree.SubElement(etree.SubElement(adhoc, RIM + "Slot", name=key), RIM + "ValueList"),
                         RIM + "Value").text = value
    return _post(app, C.ACTION_STORED_QUERY, body)


def _entry_patient_ids(reply: Reply) -> list[str]:
    out = []
    for eo in reply.body.iter(f"{RIM}ExtrinsicObject"):
        for ei in eo.iter(f"{RIM}ExternalIdentifier"):
            if ei.get("identificationScheme") == C.DOC_PATIENT_ID:
                out.append(ei.get("value"))
    return out


def _sub(pid):
    """A register-only submission (ITI-42) of one document for `pid`."""
    doc = F.document(pid, hash="a" * 40, size=10, repository_unique_id="1.2.3")
    return F.submission(pid, [doc], contents=False)


def _merge(app, kept, merged, control="") -> str:
    return route(app.services, _adt("A40", str(kept), mrg=str(merged), control=control))


# ----------------------------------------------------------------------------- merge x record state
def test_merge_does_not_reopen_a_closed_record(app):
    """The merged patient's record was closed (consent withdrawn): its documents were out of
    every professional's reach. Observed: the merge moves the documents to the survivor, whose
    open record then shows them; the closed state is simply dropped (patient_access is not
    merged). Expected: the strictest state holds (the survivor's record closed), or the merge is
    refused (AE/AR) until an operator settles the two records' states."""
    kept, merged = F.patient_id(), F.patient_id()
    _feed(app, kept), _feed(app, merged)
    records = Records(app.services.registry)
    records.open(kept, medecin_traitant="810000000001")
    records.open(merged, medecin_traitant="810000000002")
    assert _register(app, _sub(merged)).status == "Success"
    records.close(merged)
    ack = _merge(app, kept, merged)
    if "MSA|AA" in ack:
        assert records.state(kept).status == "closed"
        assert records.state(merged).status == "closed"


def test_merge_keeps_the_professionals_the_patient_blocked(app):
    """A professional blocked on the merged patient's record must stay blocked on the documents
    that record held. Observed: patient_blocks is not merged: after the A40 the blocked
    professional reads the survivor's (open) record, the merged documents included."""
    kept, merged = F.patient_id(), F.patient_id()
    _feed(app, kept), _feed(app, merged)
    records = Records(app.services.registry)
    records.open(kept, medecin_traitant="810000000001")
    records.open(merged, medecin_traitant="810000000002")
    records.block(merged, "810000000666")
    records.block(kept, "810000000777")
    assert _register(app, _sub(merged)).status == "Success"
    ack = _merge(app, kept, merged)
    if "MSA|AA" in ack:
        blocked = records.state(kept).blocked
        assert {"810000000666", "810000000777"} <= blocked, blocked


def test_merge_keeps_the_opposition_to_bris_de_glace(app):
    kept, merged = F.patient_id(), F.patient_id()
    _feed(app, kept), _feed(app, merged)
    records = Records(app.services.registry)
    records.open(kept)
    records.open(merged)
    records.oppose_bris_de_glace(merged)
    assert _register(app, _sub(merged)).status == "Success"
    ack = _merge(app, kept, merged)
    if "MSA|AA" in ack:
        assert records.state(kept).bdg_opposed


def test_merge_into_a_patient_without_record_does_not_open_the_merged_documents(app):
    """Survivor without consent (no record), merged patient closed: after the merge the
    documents must not become readable under a reopened record either way (held: none)."""
    kept, merged = F.patient_id(), F.patient_id()
    _feed(app, kept), _feed(app, merged)
    records = Records(app.services.registry)
    records.open(merged)
    records.close(merged)
    _merge(app, kept, merged)
    assert records.state(kept).status in ("none", "closed")


# ----------------------------------------------------------------------------- merge shapes
def test_merge_into_itself_self_cycle_and_chain_are_answered(app):
    a, b, c = F.patient_id(), F.patient_id(), F.patient_id()
    _feed(app, a), _feed(app, b)
    assert _register(app, _sub(a)).status == "Success"
    for ack in (_merge(app, a, a, "s1"),):
        assert "MSA|A" in ack and "internal error" not in ack
    assert "MSA|AA" in _merge(app, b, a, "s2")
    assert "MSA|AA|s3" in _merge(app, c, b, "s3")   # c unknown yet: created by the merge
    cycle = _merge(app, a, c, "s4")                  # a was merged away: a cycle back
    assert "internal error" not in cycle and "MSA|A" in cycle
    with app.services.registry.read() as conn:
        survivors = {app.services.registry.patient_pk(conn, x) for x in (a, b, c)}
    assert len(survivors) == 1


def test_iti42_for_a_merged_away_id_is_refused(app):
    """After `A40 keep <- gone`, a submission for `gone` (ITI TF-2a 3.8, Patient Identity Merge: the
    subsumed id is no longer an active id of the affinity domain) must be refused
    XDSUnknownPatientId, not filed under the survivor with a patientId that no longer names
    anyone: FindDocuments(keep) would return entries whose patientId is not `keep`."""
    kept, merged = F.patient_id(), F.patient_id()
    _feed(app, kept), _feed(app, merged)
    assert "MSA|AA" in _merge(app, kept, merged)
    reply = _register(app, _sub(merged))
    if reply.status == "Success":
        ids = _entry_patient_ids(_find(app, kept))
        assert all(i == str(kept) for i in ids), ids
    else:
        assert "XDSUnknownPatientId" in reply.error_codes


def test_iti18_by_merged_away_id(app):
    """Held if: either XDSUnknownPatientId or the survivor's documents."""
    kept, merged = F.patient_id(), F.patient_id()
    _feed(app, kept), _feed(app, merged)
    assert _register(app, _sub(merged)).status == "Success"
    assert "MSA|AA" in _merge(app, kept, merged)
    reply = _find(app, merged)
    assert reply.status == "Success" and len(list(reply.body.iter(f"{RIM}ExtrinsicObject"))) == 1 or \
        "XDSUnknownPatientId" in reply.error_codes


# ----------------------------------------------------------------------------- A08 and PID content
def test_a08_escapes_are_decoded_into_the_patient_name(app):
    pid = F.patient_id()
    assert "MSA|AA" in route(app.services, _adt("A08", str(pid), name="O\\T\\BRIEN\\F\\X^JEAN\\S\\PAUL"))
    with app.services.registry.read() as conn:
        rec = registry_patients.record(conn, app.services.registry.patient_pk(conn, pid))
    from partage.metadata.datatypes import XPN
    xpn = XPN.parse(rec.demographics["name"])
    assert xpn.family_name == "O&BRIEN|X"
    assert xpn.given_name == "JEAN^PAUL"


def _mllp_send_bytes(port: int, payload: bytes) -> str:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(b"\x0b" + payload + b"\x1c\x0d")
        data = b""
        while not data.endswith(b"\x1c\x0d"):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    return data.strip(b"\x0b\x1c\x0d").decode("utf-8", "replace")


@pytest.fixture(scope="module")
def mllp(app):
    server = MllpServer(("127.0.0.1", 0), app.services, idle_timeout=30).start()
    yield server.port
    server.stop()


def _name_of(app, pid) -> str:
    with app.services.registry.read() as conn:
        rec = registry_patients.record(conn, app.services.registry.patient_pk(conn, pid))
    return rec.demographics["name"] if rec else ""


def test_msh18_8859_1_name_is_read_in_its_declared_charset(app, mllp):
    """MSH-18 `8859/1` declares ISO-8859-1 (HL7 table 0211). Observed: the listener decodes every
    message as UTF-8 with errors replaced: MÜLLER is stored as M\\ufffdLLER and the ACK is AA,
    the patient's name silently lost. Expected: the bytes read in the declared charset."""
    pid = F.patient_id()
    text = _adt("A01", str(pid), name="MÜLLER^HÉLÈNE", charset="8859/1", control="l1")
    ack = _mllp_send_bytes(mllp, text.encode("latin-1"))
    assert "MSA|AA|l1" in ack
    assert _name_of(app, pid) == "MÜLLER^HÉLÈNE"


def test_bytes_not_in_the_declared_charset_are_refused_not_mangled(app, mllp):
    """MSH-18 `UNICODE UTF-8` but the name's bytes are Latin-1: not UTF-8. Observed: AA and a
    name holding U+FFFD (the input lost without a word). Expected: AE naming the field (the
    sender's encoding is wrong; HL7 0357 code 102 data type error), nothing stored."""
    pid = F.patient_id()
    text = _adt("A01", str(pid), name="MÜLLER^HÉLÈNE", charset="UNICODE UTF-8", control="u1")
    ack = _mllp_send_bytes(mllp, text.encode("latin-1"))
    assert "\ufffd" not in _name_of(app, pid)
    assert "MSA|AE|u1" in ack or "MSA|AR|u1" in ack


def test_non_latin_utf8_name_round_trips(app, mllp):
    pid = F.patient_id()
    ack = _mllp_send_bytes(mllp, _adt("A01", str(pid), name="ИВАНОВ^小林", charset="UNICODE UTF-8",
                                      control="r1").encode("utf-8"))
    assert "MSA|AA|r1" in ack
    assert _name_of(app, pid) == "ИВАНОВ^小林"


# ----------------------------------------------------------------------------- ACKs
def _err(ack: str):
    return [s for s in Er7Message.parse(ack).segments if s.name == "ERR"]


@pytest.mark.parametrize("version", ["2.3.1", "2.5"])
def test_refusal_ack_names_the_field(app, version):
    """A PID-3 without a usable identifier: the ACK must say where (v2.3.1 ERR-1 ELD
    `PID^1^3^101&Required field missing&HL70357`; v2.5 ERR-2 `PID^1^3`, ERR-3 `101^...^HL70357`
    and ERR-4 severity, both required in v2.5). Observed: `ERR|^^^101&PID-3 has no identifier...`
    for both versions: no segment, no field, and a v2.5 ACK without ERR-3/ERR-4."""
    ack = route(app.services, _adt("A01", "12345", control="e1", version=version))
    assert "MSA|AE|e1" in ack
    err = _err(ack)
    assert err
    if version == "2.3.1":
        eld = err[0].field(1).split("^")
        assert eld[:3] == ["PID", "1", "3"], err[0].fields
    else:
        assert err[0].field(2).split("^")[:3] == ["PID", "1", "3"], err[0].fields
        assert err[0].field(3).split("^")[0] == "101" and err[0].field(4) == "E"


def test_a40_without_mrg_ack_names_mrg1(app):
    ack = route(app.services, _adt("A40", str(F.patient_id()), control="e2"))
    assert "MSA|AE|e2" in ack
    assert _err(ack)[0].field(1).split("^")[:3] == ["MRG", "1", "1"], ack
