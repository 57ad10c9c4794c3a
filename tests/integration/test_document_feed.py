"""Hospital document feed over real MLLP (ANS IG "transmission de documents CDA-R2 en HL7v2"):
MDM^T02/T10/T04 and ORU^R01 carrying corpus CDA documents, found again by ITI-18 and ITI-67.

Also: replacement and deletion, refusals naming the failed rules (HL7 ACK and ZAM^Z01 business
acknowledgement), the journal of messages not processed and `partage hl7 replay`.

One server for the module (2-core machine): the corpus loops run inside one test per message
type. The server runs the full CDA profile (the corpus XSD and value sets), so a document is
accepted exactly when the ANS reference pipeline passes it.
"""

from __future__ import annotations

import base64
import json
import os
import socketserver
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import requests
from lxml import etree

from partage.hl7.journal import Journal
from partage.hl7.mllp import MllpClient, MllpDecoder, frame
from partage.metadata.datatypes import CX, HD
from tests.conftest import corpus_path
from tests.support import LiveServer
from tests.xdsclient import XdsClient, objects_of

pytestmark = pytest.mark.corpus

HL7 = "urn:hl7-org:v3"
H = f"{{{HL7}}}"
INS_ROOTS = {"1.2.250.1.213.1.4.8", "1.2.250.1.213.1.4.9", "1.2.250.1.213.1.4.10", "1.2.250.1.213.1.4.11"}
APPROVED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Approved"
DEPRECATED = "urn:oasis:names:tc:ebxml-regrep:StatusType:Deprecated"
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"

# Facts of the ANS terminology the mapping must reproduce (ASS_X04 typeCode -> classCode,
# ASS_A11 document model -> formatCode, ASS_A12 unstructured mediaType -> formatCode).
EXPECTED = {
    "BIO-CR-BIO_2024.01_TSH_1.xml": ("10", "urn:ihe:lab:xd-lab:2008"),
    "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml": ("10", "urn:ihe:iti:xds-sd:pdf:2008"),
    "IMG_CR_IMG_2024.01.xml": ("31", "urn:ihe:rad:CDA:ImagingReportStructuredHeadings:2013"),
    "eP-MED-DM_2024.01_PosoStruct.xml": ("42", "urn:ihe:pharm:pre:2010"),
    "CSE-CS24_2024.01.xml": ("52", "urn:asip:ci-sis:cse-cs24:2017"),
    "CNAM-HR_2021.01.xml": ("60", "urn:asip:ci-sis:hr:2019"),
    "AVC-AUNV_2022.01.xml": ("11", "urn:asip:ci-sis:aunv:2013"),
    "CANCER-PPS_2022.01_feuille-de-style-externe.xml": ("44", "urn:asip:ci-sis:pps-cancer:2017"),
}


# --- CDA and message builders ------------------------------------------------------------------

def header(data: bytes) -> dict:
    root = etree.fromstring(data)
    ids = [(i.get("root"), i.get("extension") or "")
           for i in root.findall(f"{H}recordTarget/{H}patientRole/{H}id")]
    ins = next(i for i in ids if i[0] in INS_ROOTS)
    doc_id = root.find(f"{H}id")
    code = root.find(f"{H}code")
    unique_id = doc_id.get("root") + (f"^{doc_id.get('extension')}" if doc_id.get("extension") else "")
    return {"ins": ins, "unique_id": unique_id, "type": code.get("code"),
            "confidentiality": root.find(f"{H}confidentialityCode").get("code")}


def renamed(data: bytes, tag: str, *, replaces: str = "") -> bytes:
    """The same CDA under a new ClinicalDocument/id (root + '.<tag>'), optionally replacing
    the document `replaces` (relatedDocument typeCode RPLC, versionNumber + 1)."""
    root = etree.fromstring(data)
    doc_id = root.find(f"{H}id")
    doc_id.set("root", f"{doc_id.get('root')}.{tag}")
    if replaces:
        for old in root.findall(f"{H}relatedDocument"):
            root.remove(old)
        version = root.find(f"{H}versionNumber")
        version.set("value", str(int(version.get("value", "1")) + 1))
        related = etree.Element(f"{H}relatedDocument", typeCode="RPLC")
        parent = etree.SubElement(related, f"{H}parentDocument")
        root_, _, ext = replaces.partition("^")
        etree.SubElement(parent, f"{H}id", root=root_, **({"extension": ext} if ext else {}))
        anchor = next(el for el in root if el.tag in (f"{H}authorization", f"{H}componentOf", f"{H}component"))
        anchor.addprevious(related)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def pid3(ins: tuple[str, str]) -> str:
    return f"{ins[1]}^^^ASIP-SANTE-INS-NIR&{ins[0]}&ISO^INS^^20101207"


def adt_a28(ins: tuple[str, str]) -> str:
    return "\r".join([
        f"MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20240101120000||ADT^A28^ADT_A05|a28-{uuid.uuid4().hex[:12]}|P|2.5",
        "EVN|A28|20240101120000",
        f"PID|||{pid3(ins)}||PAT-TROIS^DOMINIQUE^^^^^L||19790328|F",
        "PV1|1|N"]) + "\r"


META = [("MASQUE_PS", "Masqué aux professionnels de Santé"),
        ("INVISIBLE_PATIENT", "Document Non Visible par le patient"),
        ("INVISIBLE_REP_LEGAUX", "Non visible par les représentants Légaux du patient"),
        ("CONNEXION_SECRETE", "Connexion Secrete"),
        ("MODIF_CONF_CODE", "Modification Confidentiality Code"),
        ("DESTDMP", "Destinataire DMP"),
        ("ACK_RECEPTION", "Accusé de réception")]
PROCESSING = {"F": ("NW", "T02"), "C": ("RO", "T10"), "D": ("CA", "T04")}
SENDER = ("PRT||UC||SB^Send by^participation|801234564895^Eric^Thomas^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO"
          "^D^^^IDNPS|||Organisation-Y^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985")


def ei(unique_id: str) -> str:
    root, _, ext = unique_id.partition("^")
    return f"{ext}^^{root}^ISO" if ext else root


def message(kind: str, data: bytes, *, status: str = "F", control: str = "", flags: dict | None = None,
            parent: str = "") -> str:
    """An MDM (v2.6) or ORU^R01 (v2.5) message carrying `data`, as the IG profiles them."""
    h = header(data)
    control = control or uuid.uuid4().hex[:12]
    order_control, trigger = PROCESSING[status]
    flags = {**{code: "N" for code, _ in META}, "DESTDMP": "Y", **(flags or {})}
    obx_type = "CWE" if kind == "MDM" else "CE"
    b64 = base64.b64encode(data).decode()
    if kind == "MDM":
        segments = [
            f"MSH|^~\\&|RIS-Y|Organisation-Y|PFI-Y|Organisation-Y|202106060931||MDM^{trigger}^MDM_T02|{control}|P|2.6"
            "|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
            "EVN||20211005152908",
            f"PID|||{pid3(h['ins'])}||PAT-TROIS^DOMINIQUE^DOMINIQUE^^^^L||19790328|F",
            "PV1|1|I|UFNEPH",
            f"ORC|{order_control}|",
            f"OBR|1|||{h['type']}^Document^LN|",
            f"TXA|1|{h['type']}|TEXT|202212160932||||||||{ei(h['unique_id'])}|{ei(parent) if parent else ''}"
            "||||AU|||||801234564895",
            f"OBX|1|ED|{h['type']}^Document^LN||^text^XML^Base64^{b64}||||||{status}|",
        ]
    else:
        segments = [
            f"MSH|^~\\&|SIL-Y|labo|PFI-X|Organisation-X|202106060931||ORU^R01^ORU_R01|{control}|P|2.5"
            "|||||FRA|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
            f"PID|||{pid3(h['ins'])}||PAT-TROIS^DOMINIQUE^DOMINIQUE^^^^L||19790328|F",
            "PV1|1|O|UFNEPH",
            f"ORC|{order_control}|98765431^Nephro|1001-E1^labo",
            f"OBR|1|98765431^Nephro|1001-E1^labo|{h['type']}^Document^LN",
            f"OBX|1|ED|{h['type']}^Document^LN||^TEXT^XML^Base64^{b64}||||||{status}|",
        ]
    segments.append(SENDER)
    for n, (code, label) in enumerate(META, start=2):
        segments.append(f"OBX|{n}|{obx_type}|{code}^{label}^MetaDMPMSS||{flags[code]}^^expandedYes-NoIndicator"
                        "||||||F|")
    return "\r".join(segments) + "\r"


def msa(ack: str) -> list[str]:
    return next(s for s in ack.split("\r") if s.startswith("MSA|")).split("|")


def err_rules(ack: str) -> list[str]:
    return [s.split("|")[5].split("^")[0] for s in ack.split("\r") if s.startswith("ERR|")]


# --- server and queries --------------------------------------------------------------------------

class ZamReceiver(socketserver.ThreadingTCPServer):
    """The creator's MLLP listener for business acknowledgements: keeps what it receives."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self) -> None:
        self.received: list[str] = []
        super().__init__(("127.0.0.1", 0), _ZamHandler)

    def wait_for(self, control_id: str, timeout: float = 30.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for text in list(self.received):
                obx = next((s for s in text.split("\r") if s.startswith("OBX|1|")), "")
                if obx.split("|")[4:5] == [control_id]:
                    return text
            time.sleep(0.1)
        raise AssertionError(f"no ZAM for {control_id}; received {self.received}")


class _ZamHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        decoder = MllpDecoder()
        while data := self.request.recv(65536):
            for raw in decoder.feed(data):
                text = raw.decode("utf-8")
                self.server.received.append(text)
                control = text.split("\r", 1)[0].split("|")[9]
                self.request.sendall(frame(f"MSH|^~\\&|DPI|H|PFI|H|20240101||ACK^Z01^ACK|a|P|2.6\rMSA|AA|{control}\r"
                                           .encode()))


@pytest.fixture(scope="module")
def zam():
    receiver = ZamReceiver()
    thread = threading.Thread(target=receiver.serve_forever, daemon=True)
    thread.start()
    yield receiver
    receiver.shutdown()
    receiver.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory, zam):
    xsd, valuesets = corpus_path("xsd", "cda"), corpus_path("valuesets")
    live = LiveServer(tmp_path_factory.mktemp("docfeed") / "data",
                      extra_args=["--cda-schema-dir", str(xsd), "--cda-valuesets", str(valuesets)])
    previous = os.environ.get("PARTAGE_HL7_BUSINESS_ACK_TO")
    os.environ["PARTAGE_HL7_BUSINESS_ACK_TO"] = f"127.0.0.1:{zam.server_address[1]}"
    try:
        live.start()
    finally:
        if previous is None:
            del os.environ["PARTAGE_HL7_BUSINESS_ACK_TO"]
        else:
            os.environ["PARTAGE_HL7_BUSINESS_ACK_TO"] = previous
    try:
        yield live
    finally:
        live.stop()


@pytest.fixture(scope="module")
def mllp(server):
    with MllpClient("127.0.0.1", server.mllp_port, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def valid_files() -> list[Path]:
    files = sorted(corpus_path("cda", "valid").glob("*.xml"))
    assert len(files) == 62
    return files


@pytest.fixture(scope="module")
def verdicts() -> dict:
    return json.loads(corpus_path("cda", "ans-verdicts.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def patients(mllp, valid_files):
    """The patient identity feed first: every INS of the corpus, by ADT^A28."""
    known = set()
    for path in valid_files:
        ins = header(path.read_bytes())["ins"]
        if ins not in known:
            assert msa(mllp.send(adt_a28(ins)))[1] == "AA"
            known.add(ins)
    return known


def cx(ins: tuple[str, str]) -> CX:
    return CX(ins[1], HD.iso(ins[0]))


def find(server, ins, status: str = APPROVED) -> dict:
    reply = XdsClient(server.base_url).stored_query("FindDocuments", {
        "$XDSDocumentEntryPatientId": [f"'{cx(ins)}'"], "$XDSDocumentEntryStatus": [f"('{status}')"]})
    assert reply.status == "Success", reply.error_codes
    return {o.unique_id: o for o in objects_of(reply) if o.kind == "DocumentEntry"}


def fhir_unique_ids(server, ins) -> set[str]:
    url = f"{server.base_url}/fhir/DocumentReference"
    params = {"patient.identifier": f"urn:oid:{ins[0]}|{ins[1]}", "status": "current", "_count": "100"}
    found: set[str] = set()
    while url:
        response = requests.get(url, params=params, headers={"Accept": "application/fhir+json"}, timeout=60)
        assert response.status_code == 200, response.text[:500]
        bundle = response.json()
        for entry in bundle.get("entry", []):
            value = entry["resource"].get("masterIdentifier", {}).get("value", "")
            found.add(value.removeprefix("urn:oid:"))
        url = next((link["url"] for link in bundle.get("link", []) if link["relation"] == "next"), None)
        params = None
    return found


def corpus_round(server, mllp, files, verdicts, kind: str, tag: str) -> None:
    """Every corpus document wrapped in `kind`: accepted iff the ANS pipeline passes it, then
    found by ITI-18 with the mapped metadata and by ITI-67."""
    sent: dict[str, tuple[str, dict]] = {}
    refused = []
    for path in files:
        data = renamed(path.read_bytes(), tag)
        h = header(data)
        ack = mllp.send(message(kind, data))
        code = msa(ack)[1]
        if verdicts[path.name]["verdict"] == "pass":
            assert code == "AA", (path.name, ack)
            sent[h["unique_id"]] = (path.name, h)
        else:
            assert code == "AE" and err_rules(ack), (path.name, ack)
            refused.append(path.name)
    assert len(sent) >= 60 and len(sent) + len(refused) == len(files)
    by_patient: dict = {}
    for unique_id, (name, h) in sent.items():
        by_patient.setdefault(h["ins"], {})[unique_id] = (name, h)
    for ins, docs in by_patient.items():
        entries = find(server, ins)
        missing = set(docs) - set(entries)
        assert not missing, missing
        for unique_id, (name, h) in docs.items():
            entry = entries[unique_id]
            assert entry.patient_id == cx(ins)
            assert entry.type_code.code == h["type"]
            assert entry.class_code.scheme == CLASS_SYSTEM and entry.class_code.code
            assert entry.mime_type == "text/xml"
            assert h["confidentiality"] in {c.code for c in entry.confidentiality_codes}
            assert entry.format_code.code and entry.healthcare_facility_type_code and entry.practice_setting_code
            if name in EXPECTED:
                assert (entry.class_code.code, entry.format_code.code) == EXPECTED[name], name
        assert set(docs) <= fhir_unique_ids(server, ins)


# --- tests ----------------------------------------------------------------------------------------

@pytest.mark.slow
def test_every_corpus_document_in_mdm_t02_is_indexed(server, mllp, patients, valid_files, verdicts):
    corpus_round(server, mllp, valid_files, verdicts, "MDM", "71")


@pytest.mark.slow
def test_every_corpus_document_in_oru_r01_is_indexed(server, mllp, patients, valid_files, verdicts):
    corpus_round(server, mllp, valid_files, verdicts, "ORU", "72")


@pytest.mark.parametrize("kind", ["MDM", "ORU"])
def test_replacement_deprecates_the_earlier_version(server, mllp, patients, kind):
    source = corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes()
    tag = "73" if kind == "MDM" else "74"
    v1 = renamed(source, tag)
    v1_id = header(v1)["unique_id"]
    assert msa(mllp.send(message(kind, v1)))[1] == "AA"
    v2 = renamed(source, tag + ".2", replaces=v1_id)
    v2_id = header(v2)["unique_id"]
    ack = mllp.send(message(kind, v2, status="C", parent=v1_id))
    assert msa(ack)[1] == "AA", ack
    ins = header(v1)["ins"]
    current = find(server, ins)
    assert v2_id in current and v1_id not in current
    assert v1_id in find(server, ins, DEPRECATED)
    # Replacing a document that is no longer current is refused (IG error 900).
    v3 = renamed(source, tag + ".3", replaces=v1_id)
    ack = mllp.send(message(kind, v3, status="C", parent=v1_id))
    assert msa(ack)[1] == "AE" and "900" in err_rules(ack), ack


@pytest.mark.parametrize("kind", ["MDM", "ORU"])
def test_deletion_gives_the_document_the_deleted_status(server, mllp, patients, kind):
    source = corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_Glycemie_mole.xml").read_bytes()
    doc = renamed(source, "75" if kind == "MDM" else "76")
    h = header(doc)
    assert msa(mllp.send(message(kind, doc)))[1] == "AA"
    assert h["unique_id"] in find(server, h["ins"])
    # The same document id under another (known) patient's INS: not that patient's document.
    other = doc.replace(b'extension="279035121518989"', b'extension="277076322082910"')
    ack = mllp.send(message(kind, other, status="D"))
    assert msa(ack)[1] == "AE" and "XDSPatientIDReconciliationError" in err_rules(ack), ack
    assert h["unique_id"] in find(server, h["ins"])
    ack = mllp.send(message(kind, doc, status="D"))
    assert msa(ack)[1] == "AA", ack
    assert h["unique_id"] not in find(server, h["ins"])
    assert h["unique_id"] in find(server, h["ins"], "urn:asip:ci-sis:2010:StatusType:Deleted")
    assert h["unique_id"] not in fhir_unique_ids(server, h["ins"])
    ack = mllp.send(message(kind, doc, status="D"))
    assert msa(ack)[1] == "AE" and "900" in err_rules(ack)


def test_non_conformant_cda_is_refused_naming_the_failed_rules(server, mllp, patients):
    expected = json.loads(corpus_path("cda", "invalid", "expected.json").read_text(encoding="utf-8"))
    for name in ("missing-legalAuthenticator__CANCER-PPS_2022.01_feuille-de-style-externe.xml",
                 "custodian-bad-id-root__01_Modeles_contenus_CDA.xml",
                 "bad-confidentialityCode__eP-MED-DM_2022.01_PosoNonStruct.xml"):
        data = corpus_path("cda", "invalid", name).read_bytes()
        for kind in ("MDM", "ORU"):
            ack = mllp.send(message(kind, data))
            assert msa(ack)[1] == "AE", ack
            assert expected[name]["rule"] in err_rules(ack), ack
            assert "207^Application error^HL70357" in ack
        assert header(data)["unique_id"] not in find(server, header(data)["ins"])


def test_business_acknowledgement_zam_z01_when_asked(server, mllp, patients, zam):
    """ACK_RECEPTION = Y: once processed, a ZAM^Z01 goes to the creator (Y, or N naming the rules)."""
    ok = renamed(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_2.xml").read_bytes(), "81")
    assert msa(mllp.send(message("ORU", ok, control="zam-ok", flags={"ACK_RECEPTION": "Y"})))[1] == "AA"
    name = "missing-legalAuthenticator__CANCER-PPS_2022.01_feuille-de-style-externe.xml"
    bad = renamed(corpus_path("cda", "invalid", name).read_bytes(), "81")
    assert msa(mllp.send(message("MDM", bad, control="zam-ko", flags={"ACK_RECEPTION": "Y"})))[1] == "AE"
    quiet = renamed(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), "81")
    assert msa(mllp.send(message("ORU", quiet, control="zam-none")))[1] == "AA"

    accepted = zam.wait_for("zam-ok").split("\r")
    assert accepted[0].split("|")[8] == "ZAM^Z01^ZAM_Z01" and accepted[0].split("|")[11] == "2.6"
    assert accepted[0].split("|")[4:6] == ["SIL-Y", "labo"]
    assert accepted[1].startswith("EVN||")
    assert accepted[2].split("|")[3].startswith("ACK_RECEPTION_DMP^")
    assert accepted[2].split("|")[5] == "Y^^expandedYes-NoIndicator"
    assert not any(s.startswith("ERR|") for s in accepted)
    refused = zam.wait_for("zam-ko").split("\r")
    assert refused[2].split("|")[5] == "N^^expandedYes-NoIndicator"
    [err] = [s for s in refused if s.startswith("ERR|")]
    assert err.split("|")[3] == "207^Application error^messageErrorCondition"
    assert "missing-legalAuthenticator" in err.split("|")[6].split("~")
    with pytest.raises(AssertionError):
        zam.wait_for("zam-none", timeout=2)


def test_unknown_patient_is_refused_kept_and_replayed(server, mllp, patients):
    data = renamed(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), "77")
    unknown = data.replace(b'extension="279035121518989"', b'extension="180012345678901"')
    text = message("ORU", unknown)
    ack = mllp.send(text)
    assert msa(ack)[1] == "AR" and "902" in err_rules(ack), ack
    journal = Journal.in_data_dir(server.data_dir)
    kept = journal.directory / f"{Journal.key(text)}.hl7"
    assert kept.read_bytes() == text.encode("utf-8")
    assert json.loads(kept.with_suffix(".json").read_text(encoding="utf-8"))["rules"] == ["902"]

    ins = header(unknown)["ins"]
    assert msa(mllp.send(adt_a28(ins)))[1] == "AA"
    replay = subprocess.run([sys.executable, "-m", "partage.cli", "hl7", "replay", "--data", str(server.data_dir),
                             "--to", f"127.0.0.1:{server.mllp_port}"], capture_output=True, text=True, timeout=300)
    assert f"{kept.name}: AA" in replay.stdout, replay.stdout + replay.stderr
    assert not kept.exists() and not kept.with_suffix(".json").exists()
    assert header(unknown)["unique_id"] in find(server, ins)


def test_inconsistent_processing_request_is_refused(server, mllp, patients):
    data = renamed(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_TSH_1.xml").read_bytes(), "78")
    text = message("MDM", data).replace("ORC|NW|", "ORC|CA|")   # T02 + F but ORC-1 says cancel
    ack = mllp.send(text)
    assert msa(ack)[1] == "AE" and "hl7-processing-inconsistent" in err_rules(ack)
    ack = mllp.send(text.replace("MDM^T02^MDM_T02", "MDM^T99^MDM_T02"))
    assert msa(ack)[1] == "AR" and "201^Unsupported event code" in ack


# --- the IG's example messages (exemples.md), typed from the spec ---------------------------------
# exemples.md gives the OBSERVATION / OBXNTE groups (OBX, PRT, NTE) of five ORU and five MDM
# messages; they are typed below as the IG prints them (lines it wraps joined). Their OBX-5
# documents are placeholders ("Document médical au format CDA"): a corpus CDA of the same kind
# takes their place ({b64}). The segments before them are the IG's: the MSH of its ACK example
# (profils-messages.md) and the PID/PV1/ORC/OBR/TXA of its complete MDM and ORU examples.

IG_MDM_HEADER = [
    "MSH|^~\\&|RIS-Y|Organisation-Y|PFI-Y|Organisation-Y|202106060931||MDM^{trigger}^MDM_T02|{control}|P|2.6|||||FRA"
    "|UNICODE UTF-8|||2.1^CISIS_CDA_HL7_V2",
    "EVN||20211005152908|||PAT^ADMIN PAT-CMEDICAL I^ADM PAT^^^^^^CMEDICAL&1.2.250.8.154&ISO^U^^^RI|20211005152908",
    "PID|||279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS^^20101207||PAT-TROIS^DOMINIQUE^DOMINIQUE"
    "^^^^L||19790328|F|||28 Av de Breteuil^^PARIS^^75007^FRA^H^^^^^^^~^^^^^^BDL^^63220|||||||405660^^^AUT-AFFECTATION"
    "&1204567809&M^AN^^20101205|||||||||||||N|VALI",
    "PV1|1|I|UFNEPH||||||||||||||||000897406^^^AUT-AFFECTATION&120456789&M^VN^^20210409",
    "ORC|{orc}|",
    "OBR|1|||18748-4^CR d'imagerie médicale^LN|",
    "TXA|1|18748-4|TEXT|202212160932||||||||{txa12}|{txa13}||||AU|||||801234564895",
]

IG_ORU_HEADER = [
    "MSH|^~\\&|SIL|CHU_X|PFI|CHU_X|202310030830||ORU^R01^ORU_R01|{control}|P|2.5|||||FRA|8859/15|||2.1^ CISIS_CDA_HL7_V2",
    "PID|||279035121518989^^^ASIP-SANTE-INS-NIR&1.2.250.1.213.1.4.10&ISO^INS^^20101207||PAT-TROIS^DOMINIQUE^DOMINIQUE"
    "^^^^L||19790328|F|||Av de Breteuil^^PARIS^^75007^FRA^H^^63220^^^^^~^^^^^^BDL^^63220^^^^^|||||||405660^^^"
    "AUT-AFFECTATION&1204567809&M^AN^^20101205|||||||||||||N|VALI",
    "PV1|1|I|UFNEPH||||||||||||||||000897406^^^AUT-AFFECTATION&120456789&M^VN^^20210104",
    "ORC|{orc}|98765431^Nephro|1001-E1^labo|777^CHAbbeville|||||202106060710|R854^NURSE^JANET^^^^^^^D^^^EI|",
    "OBR|1|98765431^Nephro|1001-E1^labo|{obr4}||||||^BLEDER^Roberta^^^^^^^D||||||^BLUE^Eva^^^DR^^^^D|||||||||F|||||||"
    "L07&LABBIO&JULIE",
]

IG_ORU_EXAMPLE_0 = [
    "OBX|1|ED|11502-2^CR d'examens biologiques^LN||^TEXT^XML^Base64^{b64}||||||F|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation||||||12|||||^^X.400^appliExemple@hopitalB.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "PRT||UC||REPLY^Reply to^participation|||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "OBX|2|ED|11502-2^CR d'examens biologiques^LN||^TEXT^XML^Base64^{b64_n1}||||||F|",
    "OBX|3|CE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^ expandedYes-NoIndicator ||||||F|",
    "OBX|4|CE|INVISIBLE_PATIENT^Document Non Visible par le patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|5|CE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|12|CE|ACK_LECTURE^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|13|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS||^TEXT^^Base64^Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA==||||||F|",
]

IG_ORU_EXAMPLE_1 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN ||^TEXT^XML^Base64^{b64}||||||F|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "OBX|2|CE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|5|CE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "NTE|1|||FIN|",
    "OBX|10|CE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PATIENT^Corps du mail pour le patient^MetaDMPMSS ||^TEXT^^Base64^Qm9uam91ciBNLkR1cG9udCwgY2ktam9pbnQgdm90cmUgQ1IgZOKAmWltYWdlcmllLg==|||||F|",
]

IG_ORU_EXAMPLE_2 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^TEXT^XML^Base64^{b64}||||||D|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^results Copies To^participation||||Radiologie^^^^^120456789^UF^^^3435|||||||^^X.400^radiologie@hopitalA.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr ",
    "OBX|2|CE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS ||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|5|CE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|8|CE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CE|ACK_LECTURE^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS ||^TEXT^^Base64^Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA==||||||F|",
]

IG_ORU_EXAMPLE_3 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^TEXT^XML^Base64^{b64}||||||C|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "PRT||UC||RCT^results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.f",
    "OBX|2|CE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|5|CE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS ||^TEXT^^Base64^Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA==||||||F|",
]

IG_ORU_EXAMPLE_4 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^TEXT^XML^Base64^{b64}||||||C|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Result Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation||||||12|||||^^X.400^appliExemple@hopitalB.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "PRT||UC||REPLY^Reply to^participation|||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "OBX|2|CE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|5|CE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
]

IG_MDM_EXAMPLE_0 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^text^XML^Base64^{b64}||||||F|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "PRT||UC||RCT^results Copies To^participation||||||12|||||^^X.400^appliExemple@hopitalB.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation||||Radiologie^^^^^120456789^UF^^^3435|||||||^^X.400^radiologie@hopitalA.mssante.fr",
    "PRT||UC||RCT^Results Copies Toç participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "PRT||UC||REPLY^Reply to^participation|||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "OBX|2|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|3|CWE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS ||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CWE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|5|CWE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|6|CWE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS ||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|7|CWE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|8|CWE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|9|CWE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|10|CWE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|11|CWE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS ||^text^^Base64^Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA==||||||F|",
]

IG_MDM_EXAMPLE_1 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^text^XML^Base64^{b64}||||||F|",
    "PRT||UC||SB^send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "OBX|2|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|3|CWE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS ||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CWE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|5|CWE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|6|CWE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS ||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|7|CWE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|8|CWE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative) ^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|9|CWE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|10|CWE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|11|CWE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^ expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PATIENT^Corps du mail pour le patient^MetaDMPMSS ||^text^^Base64^Qm9uam91ciBNLkR1cG9udCwgY2ktam9pbnQgdm90cmUgQ1IgZOKAmWltYWdlcmllLg==|||||F|",
]

IG_MDM_EXAMPLE_2 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^text^XML^Base64^{b64}||||||D|",
    "PRT||UC||SB^send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr ",
    "OBX|2|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CWE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|4|CWE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|5|CWE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|6|CWE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS ||N^^ expandedYes-NoIndicator||||||F|",
    "OBX|7|CWE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CWE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CWE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CWE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CWE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS ||^text^^Base64^Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA==||||||F|",
]

IG_MDM_EXAMPLE_3 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^text^XML^Base64^{b64}||||||C|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr ",
    "PRT||UC||RCT^results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "OBX|2|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CWE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS ||N^^expandedYes-NoIndicator||||||F|",
    "OBX|4|CWE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|5|CWE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CWE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS ||N^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CWE|DESTDMP^Destinataire DMP||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CWE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CWE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CWE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CWE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|12|ED|CORPSMAIL_PS^Corps du mail pour un PS^MetaDMPMSS ||^text^^Base64^Q2hlciBjb25mcsOocmUsIHZvdXMgdHJvdXZlcmV6IGNpLWpvaW50IGxlIENSIGTigJlpbWFnZXJpZSBkZSBNLkR1cG9udA==||||||F|",
]

IG_MDM_EXAMPLE_4 = [
    "OBX|1|ED|18748-4^CR d’imagerie médicale^LN||^text^XML^Base64^{b64}||||||C|",
    "PRT||UC||SB^Send by^participation|801234567866^Dupont^Jean^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS|||Organisation-X^^^^^ASIP-SANTE-ST&1.2.250.1.71.4.2.2&ISO^FINEG^^^300017985                  ",
    "PRT||UC||RCT^Results Copies To^participation|101234567897^Hoda^Adam^^^^^^ASIP-SANTE- PS&1.2.250.1.71.4.2.1&ISO^D^^^RPPS||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr ",
    "PRT||UC||RCT^Results Copies To^participation||||||12|||||^^X.400^appliExemple@hopitalB.mssante.fr",
    "PRT||UC||RCT^Results Copies To^participation|||||||||||^^X.400^146026322000196@patient.mssante.fr",
    "PRT||UC||REPLY^Reply to^participation|||||||||||^^X.400^adam.hoda@test-ci-sis.mssante.fr",
    "OBX|2|CWE|MASQUE_PS^Masqué aux professionnels de Santé^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|3|CWE|INVISIBLE_PATIENT^ Document Non Visible par le patient^MetaDMPMSS ||N^^expandedYes-NoIndicator||||||F|",
    "OBX|4|CWE|INVISIBLE_REP_LEGAUX^Non visible par les représentants Légaux du patient^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|5|CWE|CONNEXION_SECRETE^Connexion Secrete^MetaDMPMSS||N^^expandedYes-NoIndicator||||||F|",
    "OBX|6|CWE|MODIF_CONF_CODE^Modification Confidentiality Code^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|7|CWE|DESTDMP^Destinataire DMP^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|8|CWE|DESTMSSANTEPS^Destinataire (Professionnel de Santé, organisation ou BAL applicative)^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|9|CWE|DESTMSSANTEPAT^Destinataire Patient^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|10|CWE|ACK_RECEPTION^Accusé de réception^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|11|CWE|ACK_LECTURE_MSS^Accusé de lecture^MetaDMPMSS||Y^^expandedYes-NoIndicator||||||F|",
    "OBX|13|XTN|REPLY_TO^Adresse mail de |||||F|",
]


IMAGING = "18748-4^CR d’imagerie médicale^LN"
BIOLOGY = "11502-2^CR d'examens biologiques^LN"


def ig_oru(example: list[str], control: str, orc: str, obr4: str, **documents: bytes) -> str:
    text = "\r".join(IG_ORU_HEADER + example) + "\r"
    return text.format(control=control, orc=orc, obr4=obr4,
                       **{k: base64.b64encode(v).decode() for k, v in documents.items()})


def ig_mdm(example: list[str], control: str, trigger: str, orc: str, doc: bytes, replaced: str = "") -> str:
    text = "\r".join(IG_MDM_HEADER + example) + "\r"
    return text.format(control=control, trigger=trigger, orc=orc, txa12=ei(header(doc)["unique_id"]),
                       txa13=ei(replaced) if replaced else "", b64=base64.b64encode(doc).decode())


def confidentiality(server, ins, unique_id: str) -> set[str]:
    return {c.code for c in find(server, ins)[unique_id].confidentiality_codes}


def test_ig_oru_examples_are_accepted(server, mllp, patients):
    """Exemple 0 (two documents, N3 and N1), then one imaging report through exemples 1
    (initial, masked to professionals), 3 (replacement), 4 (replacement, MODIF_CONF_CODE) and
    2 (deletion)."""
    n3 = renamed(corpus_path("cda", "valid", "BIO-CR-BIO_2024.01_Electrophorese.xml").read_bytes(), "80")
    n1 = renamed(corpus_path("cda", "valid", "BIO-CR-BIO_2021.01_CDA-R2-Niveau-1.xml").read_bytes(), "80")
    ack = mllp.send(ig_oru(IG_ORU_EXAMPLE_0, "12345", "NW", BIOLOGY, b64=n3, b64_n1=n1))
    assert msa(ack)[:3] == ["MSA", "AA", "12345"], ack
    assert ack.startswith("MSH|^~\\&|PFI|CHU_X|SIL|CHU_X|") and "|ACK^R01^ACK|" in ack
    assert "|P|2.5|||||FRA|8859/15" in ack
    ins = header(n3)["ins"]
    entries = find(server, ins)
    assert entries[header(n1)["unique_id"]].format_code.code == "urn:ihe:iti:xds-sd:pdf:2008"
    assert entries[header(n3)["unique_id"]].format_code.code == "urn:ihe:lab:xd-lab:2008"

    source = corpus_path("cda", "valid", "IMG_CR_IMG_2024.01.xml").read_bytes()
    v1 = renamed(source, "82")
    ids = [header(v1)["unique_id"]]
    assert msa(mllp.send(ig_oru(IG_ORU_EXAMPLE_1, "oru-ex1", "NW", IMAGING, b64=v1)))[1] == "AA"
    assert "MASQUE_PS" in confidentiality(server, ins, ids[-1])
    for tag, example in (("82.3", IG_ORU_EXAMPLE_3), ("82.4", IG_ORU_EXAMPLE_4)):
        new = renamed(source, tag, replaces=ids[-1])
        ack = mllp.send(ig_oru(example, f"oru-{tag}", "RO", IMAGING, b64=new))
        assert msa(ack)[1] == "AA", ack
        ids.append(header(new)["unique_id"])
        current = find(server, ins)
        assert ids[-1] in current and ids[-2] not in current
        # example 3 (MODIF_CONF_CODE N) keeps the replaced document's mask; example 4 (Y) restates
        # the flags, MASQUE_PS N: the mask is lifted
        masked = "MASQUE_PS" in confidentiality(server, ins, ids[-1])
        assert masked == (example is IG_ORU_EXAMPLE_3), (tag, masked)
    last = renamed(source, "82.4", replaces=ids[-2])
    ack = mllp.send(ig_oru(IG_ORU_EXAMPLE_2, "oru-ex2", "CA", IMAGING, b64=last))
    assert msa(ack)[1] == "AA", ack
    assert not set(ids) & set(find(server, ins))


def test_ig_mdm_examples_are_accepted(server, mllp, patients):
    """Exemples 0 and 1 (T02; the second masked to professionals), 3 and 4 (T10 replacing the
    first), 2 (T04 deleting its last version)."""
    source = corpus_path("cda", "valid", "IMG_CR_IMG_2024.01.xml").read_bytes()
    first, masked = renamed(source, "83"), renamed(source, "84")
    ins = header(first)["ins"]
    ack = mllp.send(ig_mdm(IG_MDM_EXAMPLE_0, "015", "T02", "NW", first))
    assert msa(ack)[:3] == ["MSA", "AA", "015"], ack
    assert ack.startswith("MSH|^~\\&|PFI-Y|Organisation-Y|RIS-Y|Organisation-Y|")
    assert "|ACK^T02^ACK|" in ack and "|P|2.6|||||FRA|UNICODE UTF-8" in ack
    entry = find(server, ins)[header(first)["unique_id"]]
    assert (entry.class_code.code, entry.type_code.code) == ("31", "18748-4")
    assert "MASQUE_PS" not in {c.code for c in entry.confidentiality_codes}
    assert msa(mllp.send(ig_mdm(IG_MDM_EXAMPLE_1, "016", "T02", "NW", masked)))[1] == "AA"
    assert "MASQUE_PS" in confidentiality(server, ins, header(masked)["unique_id"])

    ids = [header(first)["unique_id"]]
    for tag, example in (("83.3", IG_MDM_EXAMPLE_3), ("83.4", IG_MDM_EXAMPLE_4)):
        new = renamed(source, tag, replaces=ids[-1])
        ack = mllp.send(ig_mdm(example, f"mdm-{tag}", "T10", "RO", new, replaced=ids[-1]))
        assert msa(ack)[1] == "AA" and "|ACK^T10^ACK|" in ack, ack
        ids.append(header(new)["unique_id"])
        current = find(server, ins)
        assert ids[-1] in current and ids[-2] not in current
    last = renamed(source, "83.4", replaces=ids[-2])
    ack = mllp.send(ig_mdm(IG_MDM_EXAMPLE_2, "mdm-ex2", "T04", "CA", last))
    assert msa(ack)[1] == "AA" and "|ACK^T04^ACK|" in ack, ack
    assert not set(ids) & set(find(server, ins))
