"""Clinical reading speed for a chronic patient with 31 documents of the corpus kinds.

    .venv/bin/python benchmarks/bench_clinical.py                    # SQLite in a temp dir
    .venv/bin/python benchmarks/bench_clinical.py --database postgresql+psycopg://postgres@127.0.0.1/bench

The patient's record is generated from the ANS examples in ../shared/corpus (patient and
document ids rewritten in memory): an IPS-FR synthesis, a DLU, a vaccination record,
12 lab reports derived from BIO-CR-BIO (creatinine and HbA1c at monthly dates, TSH),
prescriptions, imaging and discharge letters, and PDF reports. Every document goes
through the real ingest flow (CDA profile included). Then each question the issue asks
is ONE HTTP request to the app (Flask test client: server-side time, no network) by the
patient's médecin traitant with her bearer JWT (verified on every request, as the FHIR door
does; the access gate decides as for any professional), repeated --repeat times after a
warm-up; figures are per request. Nothing is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from lxml import etree

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.common import fmt, load_average, machine, percentiles  # noqa: E402
from partage.access.actor import INSECURE_DEV_ACTOR  # noqa: E402
from partage.access.credentials import DevAuthority, sample_actors  # noqa: E402
from partage.config import Settings  # noqa: E402
from partage.hl7.routing import route  # noqa: E402
from partage.ingest import IngestService  # noqa: E402
from partage.metadata.datatypes import CX, DTM, HD, XCN  # noqa: E402
from partage.metadata.model import Author, Code  # noqa: E402
from partage.registry import patients  # noqa: E402
from partage.registry.access_state import Records  # noqa: E402
from partage.server.app import create_app  # noqa: E402
from partage.services import Services  # noqa: E402
from tests import clinical_support as C  # noqa: E402

H = "{urn:hl7-org:v3}"
NIR = "279035121510031"
LAB_TEMPLATE = "1.3.6.1.4.1.19376.1.3.1.6"
CREATININE = ("2160-0", "Créatinine [Masse/Volume] Sérum/Plasma ; Numérique", "mg/L", "7.0", "12.0")
HBA1C = ("4548-4", "Hémoglobine A1c/Hémoglobine totale Sang ; Numérique", "%", "4.0", "6.0")
SYNTHESIS = Code("11", "1.2.250.1.213.1.1.4.1", "Synthèse")


def lab_report(template: bytes, test: tuple[str, str, str, str, str], value: float, when: str) -> bytes:
    """A BIO-CR-BIO report of one result: the template's first lab observation, re-coded."""
    root = etree.fromstring(template)
    code, display, unit, low, high = test
    root.find(f"{H}effectiveTime").set("value", when + "0800+0100")
    for obs in root.iter(f"{H}observation"):
        if LAB_TEMPLATE in {t.get("root") for t in obs.findall(f"{H}templateId")}:
            obs.find(f"{H}code").set("code", code)
            obs.find(f"{H}code").set("displayName", display)
            obs.find(f"{H}effectiveTime").set("value", when + "0730+0100")
            v = obs.find(f"{H}value")
            v.set("value", f"{value:g}")
            v.set("unit", unit)
            rng = obs.find(f"{H}referenceRange/{H}observationRange/{H}value")
            if rng is not None:
                for side, bound in (("low", low), ("high", high)):
                    el = rng.find(H + side)
                    if el is not None:
                        el.set("value", bound)
                        el.set("unit", unit)
            break
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def record_documents(corpus: Path) -> list[tuple[str, bytes, dict]]:
    valid = corpus / "cda" / "valid"

    def cda(name: str) -> bytes:
        return (valid / name).read_bytes()
    docs: list[tuple[str, bytes, dict]] = []
    docs.append(("IPS-FR", cda("IPS-FR_2024.01_DLU.xml"), {"class_code": SYNTHESIS}))
    for name in ("DLU-EHPAD-DLU_2022.01.xml", "VAC_2023.01.xml", "LDL-EES_2022.01.xml", "CSE-CS24_2024.01.xml",
                 "eP-MED-DM_2024.01_PosoStruct.xml", "eP-MED-DM_2023.01_PosoStruct.xml",
                 "IMG_CR_IMG_2024.01.xml", "IMG-DA-IMG_2024.01_Radiographie_ChevilleGenou.xml",
                 "BIO-CR-BIO_2024.01_TSH_1.xml", "BIO-CR-BIO_2024.01_TSH_2.xml",
                 "BIO-CR-BIO_2024.01_Electrophorese.xml", "CARD-F-PRC-TAP_2022.01.xml",
                 "TLM-DA_2022.01_TCG.xml", "SDM-MR_2022.01.xml", "ANEST-CR-ANEST_2022.01.xml"):
        docs.append((name.split("_")[0], cda(name), {}))
    template = cda("BIO-CR-BIO_2024.01_Glycemie_mole.xml")
    for month in range(1, 9):
        docs.append(("creatinine", lab_report(template, CREATININE, 9.0 + month * 0.4, f"2024{month:02d}15"), {}))
    for month in (2, 5, 8, 11):
        docs.append(("hba1c", lab_report(template, HBA1C, 7.9 - month * 0.1, f"2024{month:02d}20"), {}))
    return docs


PATIENT_NAME = ("DURAND", "Élise")        # the sample patient, fed by ITI-8 (born 15/03/1979, F)
BIRTH_DATE = "19790315"
GP = sample_actors()["gp"]                   # her médecin traitant, author of the consultation letters
GP_XCN = XCN(GP.id, "MARTIN", "Claire", prefix="Dr", assigning_authority=HD.iso("1.2.250.1.71.4.2.1"))


def feed_patient(services: Services) -> CX:
    """The patient as a hospital's identity feed gives her (ITI-8 ADT^A04 over the real route),
    her record opened with her médecin traitant."""
    pid = C.patient_cx(NIR)
    family, given = PATIENT_NAME
    message = "\r".join([
        "MSH|^~\\&|DPI|HOPITAL|PARTAGE|PARTAGE|20241120090000||ADT^A04^ADT_A01|BENCH0001|P|2.5",
        "EVN|A04|20241120090000",
        f"PID|||{pid.format()}||{family}^{given}||{BIRTH_DATE}|F", "PV1||O"]) + "\r"
    answer = route(services, message)
    assert "MSA|AA" in answer, answer
    Records(services.registry).open(pid, medecin_traitant=GP.id)
    return pid


def build(services: Services, corpus: Path) -> CX:
    pid = feed_patient(services)
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    documents = record_documents(corpus)
    for i, (_kind, data, extra) in enumerate(documents):
        ingest.provide_and_register(C.submission(C.for_patient(data, NIR), f"d{i}", **extra))
    for i in range(31 - len(documents)):
        pdf = C.make_pdf(f"Compte rendu de consultation {i}: patient diabetique, fonction renale suivie")
        ingest.provide_and_register(C.pdf_submission(pid, pdf, f"p{i}", creation_time=DTM(f"202409{i + 1:02d}100000"),
                                                     title="Consultation de suivi", authors=[Author(person=GP_XCN)]))
    from partage.clinical.queue import drain

    drain(services)   # PDF text is indexed in the background (no server thread here)
    return pid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default=str(ROOT.parent / "shared" / "corpus"))
    parser.add_argument("--database", default="")
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--json", type=Path, help="also write the figures there (machine, date, load average, "
                        "ms per request)")
    args = parser.parse_args(argv)
    date, load_before = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), load_average()
    corpus = Path(args.corpus)
    if not (corpus / "cda" / "valid").is_dir():
        print(f"no corpus at {corpus}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=args.database or f"sqlite:///{tmp}/registry.sqlite3",
                            trust=str(Path(tmp) / "ca" / "ca.pem"))
        authority = DevAuthority.create()
        authority.save(Path(tmp) / "ca")
        # every request as the médecin traitant with her bearer JWT: the real authentication and gate
        headers = {"Authorization": f"Bearer {authority.jwt(GP, hours=2)}"}
        services = Services.open(settings)
        started = time.perf_counter()
        build(services, corpus)
        built_s = time.perf_counter() - started
        with services.registry.read() as conn:
            rid = patients.record(conn, services.registry.patient_pk(conn, C.patient_cx(NIR))).fhir_id
        patient = f"Patient/{rid}"
        client = create_app(services=services).test_client()
        questions = [
            ("latest creatinine", f"/fhir/Observation?patient={patient}&code=http://loinc.org|2160-0&_sort=-date&_count=1"),
            ("latest HbA1c", f"/fhir/Observation?patient={patient}&code=http://loinc.org|4548-4&_sort=-date&_count=1"),
            ("allergies", f"/fhir/AllergyIntolerance?patient={patient}"),
            ("current treatments", f"/fhir/MedicationStatement?patient={patient}&status=active,intended"),
            ("keyword search", f"/fhir/DocumentReference?patient={patient}&_content=creatinine"),
            ("$summary", f"/fhir/{patient}/$summary"),
            ("professional's page", f"/dossier/{rid}"),
            ("page + search", f"/dossier/{rid}?q=thyro%C3%AFde"),
            ("creatinine history", f"/dossier/{rid}/resultats?code=2160-0&system=2.16.840.1.113883.6.1"),
        ]
        host = machine()
        print(f"patient with 31 documents built in {built_s:.1f} s ({services.registry.engine.dialect.name}); "
              f"{args.repeat} runs per request after a warm-up; {date}; {host['cpu']}, {host['cores']} cores; "
              f"load average {os.getloadavg()[0]:.2f}")
        figures: dict[str, dict] = {}
        print(f"  {'request':<22} {'median ms':>10} {'p95 ms':>9}  answer")
        for label, url in questions:
            response = client.get(url, headers=headers)
            assert response.status_code == 200, (url, response.status_code, response.get_data(as_text=True)[:500])
            times = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                response = client.get(url, headers=headers)
                times.append((time.perf_counter() - t) * 1000)
            figures[label] = {"url": url, **percentiles(times)}   # p95: None below 20 runs
            print(f"  {label:<22} {statistics.median(times):>10.2f} {fmt(figures[label]['p95']):>9}  "
                  f"{_answer(response)}")
        backend = services.registry.engine.dialect.name
        services.close()
    if args.json:
        args.json.write_text(json.dumps({
            "benchmark": "clinical", "date": date, "machine": host, "backend": backend,
            "command": " ".join(["python -m benchmarks.bench_clinical", *(sys.argv[1:] if argv is None else argv)]),
            "load_average_before": load_before, "load_average_after": load_average(), "build_s": round(built_s, 2),
            "repeat": args.repeat, "requests_ms": figures}, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return 0


def _answer(response) -> str:
    if response.mimetype.startswith("text/html"):
        return f"{len(response.data) // 1024} KB of HTML"
    body = response.get_json()
    if body.get("type") == "document":
        return f"document Bundle, {len(body['entry'])} entries"
    if body.get("entry"):
        first = body["entry"][0]["resource"]
        shown = first.get("valueQuantity") or first.get("code", {}).get("text") or \
            first.get("medicationCodeableConcept", {}).get("text") or \
            (first.get("content") or [{}])[0].get("attachment", {}).get("title", "")
        return f"total {body.get('total')}; first: {shown}"
    return f"total {body.get('total')}"


if __name__ == "__main__":
    raise SystemExit(main())
