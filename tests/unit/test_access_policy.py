"""The access rules against the tables of docs/access.md: every actor x confidentiality x
access mode x record state, every profession x document class; who may change a document."""

from __future__ import annotations

import dataclasses
import itertools
import json
from datetime import UTC, datetime, timedelta

import pytest

from partage.access import decisions as P
from partage.access.actor import BRIS_DE_GLACE, CENTRE_15, NORMAL, Actor
from partage.access.credentials import sample_actors
from partage.metadata.datatypes import CX, DTM, XCN, XON
from partage.metadata.model import Author, AvailabilityStatus, Code, DocumentEntry
from partage.registry.access_state import CLOSED, NONE, OPEN, RecordState
from tests.access_doc import table, yes

PID = "279035121518001^^^&1.2.250.1.213.1.4.10&ISO"
CONF = "1.2.250.1.213.1.1.4.13"
STRUCTURE = "10B0000001"

ACTORS = sample_actors(PID)
AUTHOR = dataclasses.replace(ACTORS["doctor"], id="810000000077", name="Dr Auteur")
TEST_ACTORS = {
    "gp": ACTORS["gp"], "author": AUTHOR, "doctor": ACTORS["doctor"], "nurse": ACTORS["nurse"],
    "pharmacist": ACTORS["pharmacist"], "occupational": ACTORS["occupational"],
    "patient": ACTORS["patient"], "guardian": ACTORS["guardian"],
    "connector": dataclasses.replace(ACTORS["connector"], structure=STRUCTURE),
    "admin": ACTORS["auditor"],
}
MODES = {"normal": (NORMAL, "at the practice"), "bris_de_glace": (BRIS_DE_GLACE, "unconscious patient"),
         "bdg-no-reason": (BRIS_DE_GLACE, ""), "centre_15": (CENTRE_15, "")}


def with_mode(actor: Actor, mode: str) -> Actor:
    purpose, reason = MODES[mode]
    return dataclasses.replace(actor, purpose=purpose, reason=reason)


def state(name: str, actor: Actor) -> RecordState:
    mt = ACTORS["gp"].id
    return {
        "none": RecordState(patient_pk=1, status=NONE),
        "open": RecordState(patient_pk=1, status=OPEN, medecin_traitant=mt),
        "closed": RecordState(patient_pk=1, status=CLOSED, medecin_traitant=mt),
        "blocked": RecordState(patient_pk=1, status=OPEN, medecin_traitant=mt, blocked=frozenset({actor.id})),
        "opposed": RecordState(patient_pk=1, status=OPEN, medecin_traitant=mt, bdg_opposed=True),
    }[name]


def document(conf: str, class_code: str = "11") -> DocumentEntry:
    codes = [Code("N", "2.16.840.1.113883.5.25")]
    if conf != "N":
        codes.append(Code(conf, CONF))
    return DocumentEntry(
        entry_uuid="urn:uuid:1", unique_id="1.2.3", patient_id=CX.parse(PID), creation_time=DTM("20240101"),
        class_code=Code(class_code, "1.2.250.1.213.1.1.4.1"), confidentiality_codes=codes,
        authors=[Author(person=XCN.parse(f"{AUTHOR.id}^AUTEUR^A^^^^^^&1.2.250.1.71.4.2.1&ISO"),
                        institutions=[XON.parse(f"Hopital^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{STRUCTURE}")])])


RECORD_ROWS = table("record-access")
VISIBILITY = {row["actor"]: row for row in table("document-visibility")}
STATES = ["none", "open", "closed", "blocked", "opposed"]
CODES = ["N", "MASQUE_PS", "INVISIBLE_PATIENT", "INVISIBLE_REPRESENTANTS_LEGAUX"]


def test_tables_cover_every_combination():
    covered = {(r["actor"], m) for r in RECORD_ROWS for m in (MODES if r["mode"] == "any" else [r["mode"]])}
    assert covered == set(itertools.product(TEST_ACTORS, MODES))
    assert set(VISIBILITY) | {"occupational", "admin"} == set(TEST_ACTORS)


@pytest.mark.parametrize("row", RECORD_ROWS, ids=lambda r: f"{r['actor']}-{r['mode']}")
def test_every_actor_mode_state_and_confidentiality(row):
    """Expected = the record-access cell AND the document-visibility cell (docs/access.md)."""
    checked = 0
    for mode in (MODES if row["mode"] == "any" else [row["mode"]]):
        actor = with_mode(TEST_ACTORS[row["actor"]], mode)
        for state_name in STATES:
            record = state(state_name, actor)
            record_ok = yes(row[state_name])
            got = P.read_decision(actor, record, None, P.DEFAULT_TABLE, own_patient=True
                                  if actor.kind in ("patient", "representative") else None)
            assert bool(got) == record_ok, (row["actor"], mode, state_name, got.reason)
            for conf in CODES:
                visible = VISIBILITY.get(row["actor"])
                expected = record_ok and visible is not None and yes(visible[conf])
                got = P.read_decision(actor, record, document(conf), P.DEFAULT_TABLE,
                                      own_patient=True if actor.kind in ("patient", "representative") else None)
                assert bool(got) == expected, (row["actor"], mode, state_name, conf, got.reason)
                checked += 1
    assert checked


def test_role_class_matrix():
    rows = table("role-class")
    for row in rows:
        profession = row["profession"].split()[0]
        actor = Actor(id=AUTHOR.id, role=profession)
        record = state("open", actor)
        for class_code, cell in row.items():
            if class_code == "profession":
                continue
            doc = document("N", class_code)
            assert bool(P.read_decision(actor, record, doc, P.DEFAULT_TABLE)) == yes(cell), (profession, class_code)
            assert bool(P.submit_decision(actor, record, [doc], P.DEFAULT_TABLE)) == yes(cell), (profession, class_code)


def test_patients_see_only_their_own_record():
    patient = ACTORS["patient"]
    record = state("open", patient)
    assert not P.read_decision(patient, record, document("N"), P.DEFAULT_TABLE, own_patient=False)
    assert not P.read_decision(patient, record, document("N"), P.DEFAULT_TABLE, own_patient=None)
    # a professional whose credential names another patient is refused too
    assert not P.read_decision(ACTORS["gp"], record, document("N"), P.DEFAULT_TABLE, own_patient=False)
    assert P.read_decision(ACTORS["gp"], record, document("N"), P.DEFAULT_TABLE, own_patient=True)


def test_patient_submits_only_class_90():
    patient = ACTORS["patient"]
    record = state("open", patient)
    assert P.submit_decision(patient, record, [document("N", "90")], P.DEFAULT_TABLE, own_patient=True)
    assert not P.submit_decision(patient, record, [document("N", "10")], P.DEFAULT_TABLE, own_patient=True)
    assert not P.submit_decision(patient, state("closed", patient), [document("N", "90")], P.DEFAULT_TABLE,
                                 own_patient=True)


def test_release_date_of_a_document_hidden_from_the_patient():
    doc = document("INVISIBLE_PATIENT")
    doc.creation_time = DTM("20240101")
    created = datetime(2024, 1, 1, tzinfo=UTC)
    assert P.hidden_from_patient(doc, created + timedelta(days=400))      # no release date: stays hidden
    doc.extra_slots[P.RELEASE_SLOT] = ["20240105"]
    assert P.hidden_from_patient(doc, created + timedelta(days=3))
    assert not P.hidden_from_patient(doc, created + timedelta(days=5))
    doc.extra_slots[P.RELEASE_SLOT] = ["20250101"]                        # capped at 15 days
    assert P.hidden_from_patient(doc, created + timedelta(days=14))
    assert not P.hidden_from_patient(doc, created + timedelta(days=15))


def test_connector_reads_only_its_structure(tmp_path):
    connector = TEST_ACTORS["connector"]
    other = dataclasses.replace(connector, structure="10Z9999999")
    record = state("open", connector)
    assert P.read_decision(connector, record, document("N"), P.DEFAULT_TABLE)
    assert not P.read_decision(other, record, document("N"), P.DEFAULT_TABLE)


def test_matrix_file_overrides(tmp_path):
    path = tmp_path / "matrix.json"
    path.write_text(json.dumps({"classes": {"21": ["10"], "10": "*"}, "forbidden_sectors": ["SA99"]}))
    custom = P.AccessTable.load(str(path))
    pharmacist = ACTORS["pharmacist"]
    record = state("open", pharmacist)
    assert P.read_decision(pharmacist, record, document("N", "10"), custom)
    assert not P.read_decision(pharmacist, record, document("N", "11"), custom)
    assert not P.read_decision(dataclasses.replace(ACTORS["gp"], sector="SA99"), record, document("N"), custom)
    assert custom.forbidden_specialties == P.DEFAULT_TABLE.forbidden_specialties


def test_only_an_author_submits():
    """DMP: the authenticated professional is one of the document's authors (or its legal
    authenticator); a connector's structure is one of its author institutions."""
    doc = document("N")
    record = state("open", AUTHOR)
    assert P.submit_decision(AUTHOR, record, [doc], P.DEFAULT_TABLE)
    assert not P.submit_decision(ACTORS["gp"], record, [doc], P.DEFAULT_TABLE)
    doc.legal_authenticator = XCN.parse(f"{ACTORS['gp'].id}^GENERALISTE^C^^^^^^&1.2.250.1.71.4.2.1&ISO")
    assert P.submit_decision(ACTORS["gp"], record, [doc], P.DEFAULT_TABLE)
    assert P.submit_decision(TEST_ACTORS["connector"], record, [doc], P.DEFAULT_TABLE)
    other = dataclasses.replace(TEST_ACTORS["connector"], structure="10Z9999999")
    assert not P.submit_decision(other, record, [doc], P.DEFAULT_TABLE)


@pytest.mark.parametrize("name", sorted(TEST_ACTORS))
def test_only_the_author_changes_a_document(name):
    """Replace, transform, update, status change, removal: the author (professional by id, a
    connector by structure), never another professional, a patient or an administrator."""
    actor = TEST_ACTORS[name]
    expected = name in ("author", "connector")
    for action in ("replace", "transform", "update", "change the status of", "remove"):
        got = P.modify_decision(actor, document("MASQUE_PS"), action)
        assert bool(got) == expected, (name, action, got.reason)
        if not got:
            assert action in got.reason


def test_a_legal_authenticator_may_change_the_document():
    doc = document("N")
    assert not P.modify_decision(ACTORS["gp"], doc, "replace")
    doc.legal_authenticator = XCN.parse(f"{ACTORS['gp'].id}^GENERALISTE^C")
    assert P.modify_decision(ACTORS["gp"], doc, "replace")


def test_a_deleted_document_is_for_its_author_only():
    doc = document("N")
    doc.availability_status = AvailabilityStatus.DELETED
    record = state("open", AUTHOR)
    assert P.read_decision(AUTHOR, record, doc, P.DEFAULT_TABLE)
    assert not P.read_decision(ACTORS["gp"], record, doc, P.DEFAULT_TABLE)
    assert not P.read_decision(ACTORS["patient"], record, doc, P.DEFAULT_TABLE, own_patient=True)


def test_a_patient_changes_masking_and_nothing_else():
    before = document("N")
    masked = dataclasses.replace(before, confidentiality_codes=[*before.confidentiality_codes, P.masque_ps()])
    assert P.masking_problem(masked, before) == ""
    assert P.masking_problem(before, masked) == ""
    invisible = dataclasses.replace(before, confidentiality_codes=[*before.confidentiality_codes,
                                                                   Code("INVISIBLE_PATIENT", CONF)])
    assert "MASQUE_PS" in P.masking_problem(invisible, before)
    retitled = dataclasses.replace(masked, title="autre")
    assert P.masking_problem(retitled, before)
