"""Property (hypothesis): for random records, lineages and actors, every read path of the
server answers what docs/access.md allows and nothing else, and every change of a document
is the author's alone.

Each example builds one patient's record through the real flows (a first submission with
a folder, then RPLC / XFRM_RPLC / APND / XFRM, ITI-57 new versions changing the masking,
ITI-57 status changes to Deprecated, Deleted or back to Approved, ITI-62 removals), sets
the record's state (no consent, open, closed; médecin traitant; blocks; opposition to bris
de glace), picks an actor of any kind (médecin traitant, author, other doctor, nurse,
pharmacist, occupational medicine, in every access mode; patient, legal representative;
connector of the authoring structure or another; administrator; credentials naming the
patient, another patient or none), and then, through the Flask app with real credentials
(SAML on SOAP, JWT on FHIR and the page), reads the record by a sample of every read path
and tries one change of a document.

The ORACLE is `tests/access_oracle.py`: docs/access.md's tables and rules, written without
calling `partage.access`. Checks: nothing hidden is returned, named (entryUUID, uniqueId,
title, facts, relations, submission sets, lists) or counted; a question about a hidden
object answers as about an unknown one; what the oracle allows is found (FindDocuments,
GetAll, ITI-67, ITI-43, Binary, facts, keyword search); a change by anyone but the author
is refused (XDSPolicyViolation / 403) and leaves the record unchanged, and the author's
own change goes through.

Examples: 500 by default (derandomized: the same examples each run), PARTAGE_ACCESS_EXAMPLES
for more (the nightly profile of docs/access.md).
"""

from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import io
import itertools
import json
import os
import re
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st
from lxml import etree
from sqlalchemy import select

from partage import lifecycle
from partage.access import audit, saml
from partage.access.actor import PATIENT_FEED_ACTOR, Actor
from partage.access.credentials import sample_actors
from partage.config import DEFAULT_REPOSITORY_UNIQUE_ID, Settings
from partage.ebxml import constants as C
from partage.ebxml import ebrim
from partage.ebxml.mtom import read_soap_request
from partage.ebxml.soap import build_envelope, parse_envelope
from partage.ingest import IngestService
from partage.metadata.datatypes import CX, DTM, XCN, XON
from partage.metadata.model import (
    Association,
    AssociationType,
    AvailabilityStatus,
    Code,
    DocumentContent,
    DocumentEntry,
    SubmissionRequest,
    SubmissionSet,
)
from partage.registry import patients, schema
from partage.registry.access_state import Records
from partage.server.app import create_app
from partage.services import Services
from tests import factories as F
from tests.access_oracle import (
    ADMIN,
    APPROVED,
    CONNECTOR,
    DELETED,
    DEPRECATED,
    J08,
    MODES,
    PATIENT,
    PROFESSIONAL,
    REPRESENTATIVE,
    Oracle,
    Record,
    Version,
    Who,
)

EXAMPLES = int(os.environ.get("PARTAGE_ACCESS_EXAMPLES", "500"))
# PARTAGE_ACCESS_SHRINK=0: report the first failing example as found (faster while debugging)
PHASES = [p for p in Phase if os.environ.get("PARTAGE_ACCESS_SHRINK", "1") == "1" or p != Phase.shrink]
CONF = "1.2.250.1.213.1.1.4.13"
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"
RIM, RS, XDSB, LCM, QRY = (f"{{{ns}}}" for ns in (C.RIM, C.RS, C.XDSB, C.LCM, C.QUERY))
STATUS_URN = {s.short: str(s) for s in AvailabilityStatus}
ALL_STATUSES = [f"('{STATUS_URN[s]}')" for s in (APPROVED, DEPRECATED, DELETED)]
TRANSITIONS = {(APPROVED, DEPRECATED), (DEPRECATED, APPROVED), (APPROVED, DELETED), (DEPRECATED, DELETED)}
REFERENCE_ID = "ORD-1^^^&1.2.250.1.999.9&ISO^urn:ihe:iti:xds:2013:order"
KEYWORD = "creatinine"

ACTORS = sample_actors()
GP, DOCTOR, NURSE, PHARMACIST = (ACTORS[n].id for n in ("gp", "doctor", "nurse", "pharmacist"))
EMERGENCY = ACTORS["emergency"].id
AUTHOR = "810000000077"             # a doctor who writes most of the documents
NOBODY = "810000000099"             # an author who never asks
HOSPITAL = ACTORS["connector"].structure
ELSEWHERE = "10Z0000009"
_serial = itertools.count(1)


# ============================================================================ the world
@dataclass
class World:
    services: Services
    client: Any
    authority: Any
    other: CX                      # another patient, for credentials naming the wrong one


@pytest.fixture(scope="module")
def world(tmp_path_factory, authority, module_database_url):
    """The app in process (Flask test client), authentication on, on SQLite and PostgreSQL."""
    directory = tmp_path_factory.mktemp("access-property")
    if module_database_url:
        _no_commit_flush(module_database_url)
    services = Services.open(Settings(data_dir=directory / "data", database_url=module_database_url,
                                      trust=authority.ca_file, mllp_port=0, text_indexer=False))
    other = F.patient_id()
    with services.registry.write() as conn:
        services.registry.upsert_patient(conn, [other])
    Records(services.registry).open(other)
    yield World(services, create_app(services=services).test_client(), authority, other)
    services.close()


def _no_commit_flush(url: str) -> None:
    """This throwaway database need not survive a crash: commits that do not wait for the WAL
    flush make the hundreds of small transactions of each example (the setup's, one per
    single-use assertion, one audit row per request) several times cheaper under load."""
    import psycopg

    from tests.support import PG_ADMIN_URL

    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{url.rsplit("/", 1)[1]}" SET synchronous_commit TO off')


# ============================================================================ generation
J08_SETS = st.sets(st.sampled_from(J08), max_size=2) | st.just(frozenset())
doc_spec = st.fixed_dictionaries({
    "conf": J08_SETS,
    "klass": st.sampled_from(["10", "11", "42", "90"]),
    "author": st.sampled_from([AUTHOR, AUTHOR, GP, DOCTOR, NURSE, NOBODY]),
    "institution": st.sampled_from([HOSPITAL, HOSPITAL, ELSEWHERE]),
    "legal": st.sampled_from([None, None, None, AUTHOR, GP]),
})
_relation = st.tuples(st.sampled_from(["rplc", "rplc", "xfrm_rplc", "apnd", "xfrm"]), st.integers(0, 20), doc_spec)
_version = st.tuples(st.just("version"), st.integers(0, 20), J08_SETS)       # masking (or unmasking) by ITI-57
_status = st.tuples(st.just("status"), st.integers(0, 20), st.sampled_from([DEPRECATED, DELETED, APPROVED]))
operation = st.one_of(_relation, _relation, _version, _version, _status, _status,
                      st.tuples(st.just("remove"), st.integers(0, 20), st.none()))
# Lineages the issue names, made likely: masking after filing (by an ITI-57 version, by a
# replacement), a replaced document set back to Approved (two current versions), the newest
# version deprecated or deleted by status, the replacement removed. Targets: 0 the first
# possible version, -1 the newest.
# "aim": the code that hides the document from the first actor (MASQUE_PS from a professional,
# INVISIBLE_PATIENT from the patient...), so that masking reaches the actor who reads.
_masking = st.just("aim") | st.sets(st.sampled_from(J08), min_size=1, max_size=2)
_masked_spec = doc_spec | st.builds(lambda d, c: {**d, "conf": c}, doc_spec, _masking)
AIMED = {PROFESSIONAL: frozenset({"MASQUE_PS"}), PATIENT: frozenset({"INVISIBLE_PATIENT"}),
         REPRESENTATIVE: frozenset({"INVISIBLE_REPRESENTANTS_LEGAUX"}), CONNECTOR: frozenset({"MASQUE_PS"}),
         ADMIN: frozenset({"MASQUE_PS"})}
script = st.one_of(
    st.just([]),
    st.tuples(st.just("version"), st.just(0), _masking).map(lambda op: [op]),
    st.tuples(st.sampled_from(["rplc", "xfrm_rplc"]), st.just(0), _masked_spec).map(lambda op: [op]),
    _masked_spec.map(lambda d: [("rplc", 0, d), ("status", 0, APPROVED)]),
    _masking.map(lambda c: [("version", 0, c), ("status", -1, DEPRECATED)]),
    _masked_spec.map(lambda d: [("rplc", 0, d), ("status", -1, DEPRECATED)]),
    _masked_spec.map(lambda d: [("rplc", 0, d), ("status", -1, DELETED)]),
    _masked_spec.map(lambda d: [("rplc", 0, d), ("remove", -1, None)]),
)
PROFESSIONALS = ["gp", "author", "author", "author", "doctor", "nurse", "pharmacist", "occupational",
                 "emergency", "regulator"]
_any_mode = st.tuples(st.just(PROFESSIONAL), st.sampled_from(PROFESSIONALS), st.sampled_from(MODES),
                     st.sampled_from([None, None, "own", "other"]))
_normal = st.tuples(st.just(PROFESSIONAL), st.sampled_from(PROFESSIONALS), st.just("normal"), st.just(None))
_patient = st.tuples(st.sampled_from([PATIENT, REPRESENTATIVE]), st.just(""), st.just("normal"),
                     st.sampled_from(["own", "own", "other"]))
_connector = st.tuples(st.just(CONNECTOR), st.sampled_from([HOSPITAL, HOSPITAL, ELSEWHERE]), st.just("normal"),
                       st.just(None))
_admin = st.tuples(st.just(ADMIN), st.just(""), st.just("normal"), st.just(None))
_actors = {"any mode": _any_mode, "normal": _normal, "patient": _patient, "connector": _connector, "admin": _admin}
actor_spec = st.sampled_from(["any mode"] * 3 + ["normal"] * 3 + ["patient"] * 2 + ["connector", "admin"]) \
    .flatmap(lambda kind: _actors[kind])
READ_PATHS = [
    "FindDocuments", "FindDocumentsByReferenceId", "FindSubmissionSets", "FindFolders", "GetAll",
    "GetDocuments", "GetFolders", "GetAssociations", "GetDocumentsAndAssociations", "GetSubmissionSets",
    "GetSubmissionSetAndContents", "GetFolderAndContents", "GetFoldersForDocument", "GetRelatedDocuments",
    "ITI-43", "ITI-67 search", "ITI-67 read", "ITI-66", "ITI-68", "_content", "Observation & co", "$summary",
    "dossier", "Patient", "AuditEvent",
]
CHANGES = ["iti-62", "iti-86", "status", "version", "patch-status", "patch-label", "delete", "xfrm", "rplc"]
scenario = st.fixed_dictionaries({
    "record": st.sampled_from(["none", "open", "open", "open", "open", "open", "closed"]),
    "medecin_traitant": st.sampled_from(["", GP, GP, DOCTOR]),
    "blocked": st.sets(st.sampled_from([DOCTOR, NURSE, PHARMACIST, AUTHOR, GP, EMERGENCY]), max_size=2),
    "opposed": st.booleans(),
    "docs": st.lists(doc_spec, min_size=1, max_size=3),
    "in_folder": st.integers(0, 3),
    "script": script,
    "operations": st.lists(operation, max_size=2),
    # one record, read by one or two actors (each by a sample of paths); the first one then
    # tries a change
    "actors": st.lists(st.tuples(actor_spec, st.lists(st.sampled_from(READ_PATHS), min_size=2, max_size=2,
                                                      unique=True)), min_size=1, max_size=2),
    "picks": st.lists(st.integers(0, 1000), min_size=4, max_size=4),
    # (what, which version, a variant, who: the actor, the actor among its own documents, or
    # the target's author / its structure's connector, so that the author's changes are tried often)
    "change": st.tuples(st.sampled_from(CHANGES), st.integers(0, 20), st.booleans(),
                        st.sampled_from(["actor", "actor", "own", "author", "structure"])),
})


# ============================================================================ the model
def bare(entry_uuid: str) -> str:
    return entry_uuid.removeprefix("urn:uuid:")


@dataclass
class Model:
    """One patient's record as the test built it: document versions (the oracle's input),
    the objects as submitted (to make new versions), their tokens, and the registry's
    containers and associations (read back after each step)."""

    pid: CX
    versions: dict[str, Version] = field(default_factory=dict)
    entries: dict[str, DocumentEntry] = field(default_factory=dict)
    tokens: dict[str, tuple[str, str, str]] = field(default_factory=dict)   # uniqueId -> title token, lab, problem
    containers: dict[str, set[str]] = field(default_factory=dict)
    container_kind: dict[str, str] = field(default_factory=dict)
    container_uid: dict[str, str] = field(default_factory=dict)
    associations: dict[str, tuple[str, str]] = field(default_factory=dict)
    association_type: dict[str, str] = field(default_factory=dict)
    removed: set[str] = field(default_factory=set)       # document versions removed by ITI-62
    seq: int = 0

    def ordered(self) -> list[Version]:
        return sorted(self.versions.values(), key=lambda v: v.seq)

    def latest_of_lid(self, v: Version) -> bool:
        return all(int(self.entries[o.uuid].version or 1) <= int(self.entries[v.uuid].version or 1)
                   for o in self.versions.values() if o.lid == v.lid)

    def by_uid(self, uid: str) -> list[Version]:
        return [v for v in self.versions.values() if v.uid == uid]


def _cda(uid: str, token: str, lab: str, problem: str) -> bytes:
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<ClinicalDocument xmlns="urn:hl7-org:v3" xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance">
 <templateId root="1.2.250.1.213.1.1.1.55"/><id root="{uid}"/><effectiveTime value="20240315093000"/>
 <component><structuredBody><component><section><title>Resultats</title>
  <text>Compte rendu {token}: nephrologie, {KEYWORD} stable.</text>
  <entry><observation classCode="OBS" moodCode="EVN"><templateId root="1.3.6.1.4.1.19376.1.3.1.6"/>
   <code code="{lab}" codeSystem="2.16.840.1.113883.6.1" displayName="Dosage {lab}"/>
   <statusCode code="completed"/><effectiveTime value="20240315"/>
   <value xsi:type="PQ" value="1.5" unit="mg/L"/></observation></entry>
  <entry><observation classCode="OBS" moodCode="EVN"><templateId root="1.3.6.1.4.1.19376.1.5.3.1.4.5"/>
   <code code="55607006" codeSystem="2.16.840.1.113883.6.96" displayName="Problem"/><statusCode code="completed"/>
   <value xsi:type="CD" code="{problem}" codeSystem="2.16.840.1.113883.6.90" displayName="Probleme {problem}"/>
  </observation></entry>
 </section></component></structuredBody></component></ClinicalDocument>""".encode()


def _codes(conf) -> list[Code]:
    return [Code("N", "2.16.840.1.113883.5.25", "Normal")] + [Code(c, CONF, c) for c in sorted(conf)]


def _person(person_id: str) -> XCN:
    return XCN.parse(f"{person_id}^AUTEUR^Test^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")


def _new_entry(model: Model, symbol: str, spec: dict) -> tuple[DocumentEntry, bytes]:
    n = next(_serial)
    uid, token, lab, problem = f"1.2.250.1.999.77.{n}", f"T{n:06d}x", f"L{n:06d}", f"P{n:06d}"
    doc = F.document(model.pid, symbol, unique_id=uid, title=f"Compte rendu {token}",
                     class_code=Code(spec["klass"], CLASS_SYSTEM, "classe"),
                     confidentiality_codes=_codes(spec["conf"]), reference_ids=[CX.parse(REFERENCE_ID)])
    doc.authors[0].person = _person(spec["author"])
    doc.authors[0].institutions = [XON.parse(f"Structure^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{spec['institution']}")]
    if spec.get("legal"):
        doc.legal_authenticator = _person(spec["legal"])
    model.tokens[uid] = (token, lab, problem)
    return doc, _cda(uid, token, lab, problem)


def _content(data: bytes) -> DocumentContent:
    return DocumentContent(file=io.BytesIO(data), size=len(data), sha1=hashlib.sha1(data).hexdigest())


def _update_set(pid: CX) -> SubmissionSet:
    return SubmissionSet(entry_uuid="ss", unique_id=F.oid(), source_id="1.2.250.1.999.2", patient_id=pid,
                         submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))


def _remember(model: Model, doc: DocumentEntry, lineage: str) -> None:
    model.seq += 1
    authors = {a.person.id_number for a in doc.authors if a.person is not None}
    if doc.legal_authenticator is not None:
        authors.add(doc.legal_authenticator.id_number)
    model.entries[doc.entry_uuid] = copy.deepcopy(doc)
    model.versions[doc.entry_uuid] = Version(
        uuid=doc.entry_uuid, uid=doc.unique_id, lid=doc.lid or doc.entry_uuid, lineage=lineage, seq=model.seq,
        codes=frozenset(c.code for c in doc.confidentiality_codes if c.scheme == CONF),
        klass=doc.class_code.code, authors=frozenset(authors),
        institutions=frozenset(x.organization_identifier for a in doc.authors for x in a.institutions))


SYSTEM = PATIENT_FEED_ACTOR       # the setup acts as the internal feed: the policy is not asked


def _submit(world: World, request: SubmissionRequest) -> None:
    IngestService(world.services, SYSTEM, document_checks=[]).provide_and_register(request)


def build(world: World, s: dict) -> Model:
    """The record of one example, through the real ingest and lifecycle flows."""
    pid = F.patient_id()
    model = Model(pid)
    with world.services.registry.write() as conn:
        world.services.registry.upsert_patient(conn, [pid], {"name": f"NOM{pid.id}^Jean", "birth_date": "19790315"})
    docs, data = zip(*[_new_entry(model, f"doc{i}", spec) for i, spec in enumerate(s["docs"])], strict=True)
    folder = F.folder(pid)
    members = docs[:s["in_folder"]]
    inner = [Association(entry_uuid=f"fm{i}", association_type=AssociationType.HAS_MEMBER,
                         source_uuid=folder.entry_uuid, target_uuid=d.entry_uuid) for i, d in enumerate(members)]
    request = F.submission(pid, list(docs), folders=[folder] if members else [], extra_associations=inner,
                           contents=False)
    request.associations += [Association(entry_uuid=f"ss-{a.entry_uuid}", association_type=AssociationType.HAS_MEMBER,
                                         source_uuid="ss", target_uuid=a.entry_uuid) for a in inner]
    for doc, content in zip(docs, data, strict=True):
        request.contents[doc.entry_uuid] = _content(content)
    _submit(world, request)
    for doc in docs:
        _remember(model, doc, doc.entry_uuid)
    aimed = AIMED[s["actors"][0][0][0]]
    for kind, pick, arg in [*s["script"], *s["operations"]]:
        if arg == "aim" or (isinstance(arg, dict) and arg["conf"] == "aim"):
            arg = aimed if arg == "aim" else {**arg, "conf": aimed}
        _apply(world, model, (kind, pick, arg))
    _load_structure(world, model)
    records = Records(world.services.registry)
    if s["record"] != "none":
        records.open(pid, medecin_traitant=s["medecin_traitant"])
        for professional in sorted(s["blocked"] - {s["medecin_traitant"]}):
            records.block(pid, professional)
        records.oppose_bris_de_glace(pid, s["opposed"])
        if s["record"] == "closed":
            records.close(pid)
    return model


def _apply(world: World, model: Model, op: tuple) -> None:
    kind, pick, arg = op
    current = [v for v in model.ordered() if _possible(model, kind, v, arg)]
    if not current:
        return
    target = current[pick % len(current)]
    entry = model.entries[target.uuid]
    event(f"setup {kind} of a {target.status} version")
    if kind in ("rplc", "xfrm_rplc", "apnd", "xfrm"):
        new, content = _new_entry(model, "new", arg)
        relation = {"rplc": AssociationType.RPLC, "xfrm_rplc": AssociationType.XFRM_RPLC,
                    "apnd": AssociationType.APND, "xfrm": AssociationType.XFRM}[kind]
        request = F.submission(model.pid, [new], contents=False, extra_associations=[Association(
            entry_uuid="rel", association_type=relation, source_uuid="new", target_uuid=target.uuid)])
        request.contents["new"] = _content(content)
        dependents = [s for a, (s, t) in model.associations.items() if t == target.uuid
                      and model.association_type[a] in (str(AssociationType.APND), str(AssociationType.XFRM))]
        _submit(world, request)
        replacing = kind in ("rplc", "xfrm_rplc")
        _remember(model, new, target.lineage if replacing else new.entry_uuid)
        if replacing:   # the registry deprecates the target, and its addenda and transforms
            target.status = DEPRECATED
            for source in dependents:
                if source in model.versions and model.versions[source].status == APPROVED:
                    model.versions[source].status = DEPRECATED
    elif kind == "version":
        new = copy.deepcopy(entry)
        new.entry_uuid, new.lid, new.version = "nv", entry.lid or entry.entry_uuid, ""
        new.confidentiality_codes = _codes(arg)
        request = SubmissionRequest(_update_set(model.pid), [new], [], [Association(
            entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss", target_uuid="nv",
            submission_set_status="Original", previous_version=entry.version or "1")])
        lifecycle.update_document_set(world.services, SYSTEM, request)
        target.status = DEPRECATED
        _remember(model, new, target.lineage)
    elif kind == "status":
        request = SubmissionRequest(_update_set(model.pid), [], [], [Association(
            entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS, source_uuid="ss",
            target_uuid=target.uuid, original_status=STATUS_URN[target.status], new_status=STATUS_URN[arg])])
        lifecycle.update_document_set(world.services, SYSTEM, request)
        target.status = arg
    elif kind == "remove":
        _load_structure(world, model)
        lifecycle.remove_metadata(world.services, SYSTEM, removal_closure(model, target.uuid))
        del model.versions[target.uuid]
        model.removed.add(target.uuid)
    _load_structure(world, model)


def _possible(model: Model, kind: str, v: Version, arg: Any) -> bool:
    """Whether the registry's rules let the setup do this to this version (the setup only
    does what it may: a refusal would be a disagreement between the model and the registry)."""
    if kind == "version":
        return v.status == APPROVED and model.latest_of_lid(v)
    if kind == "status":
        return (v.status, arg) in TRANSITIONS and model.latest_of_lid(v)
    if kind == "remove":
        return True
    return v.status == APPROVED


def removal_closure(model: Model, doc_uuid: str) -> list[str]:
    """What an ITI-62 must name to remove a document: it, every association referencing it
    (and those referencing them), and the SubmissionSets left without a member."""
    refs = {doc_uuid}
    changed = True
    while changed:
        changed = False
        for a, ends in model.associations.items():
            if a not in refs and set(ends) & refs:
                refs.add(a)
                changed = True
    for c, kind in model.container_kind.items():
        if kind == "S":
            owned = [a for a, (s, _t) in model.associations.items() if s == c]
            if owned and set(owned) <= refs:
                refs.add(c)
    return sorted(refs)


def _load_structure(world: World, model: Model) -> None:
    """The SubmissionSets, Folders and associations of the patient as the registry holds
    them (structure only: who sees them is the oracle's question); and a check that the
    model's document statuses are the registry's."""
    o = schema.registry_objects
    with world.services.registry.read() as conn:
        pk = world.services.registry.patient_pk(conn, model.pid)
        rows = conn.execute(select(o.c.entry_uuid, o.c.kind, o.c.status, o.c.source_uuid, o.c.target_uuid,
                                   o.c.assoc_type, o.c.unique_id).where(o.c.patient_pk == pk)).all()
    model.containers.clear(), model.container_kind.clear(), model.associations.clear()
    model.association_type.clear()
    for r in rows:
        if r.kind in ("S", "F"):
            model.containers[r.entry_uuid] = set()
            model.container_kind[r.entry_uuid] = r.kind
            model.container_uid[r.entry_uuid] = r.unique_id
        elif r.kind == "A":
            model.associations[r.entry_uuid] = (r.source_uuid, r.target_uuid)
            model.association_type[r.entry_uuid] = r.assoc_type
    # What a container holds or changes (docs/access.md): its document members, the documents
    # whose status it updated, the documents an association it holds links.
    content = {str(AssociationType.HAS_MEMBER), str(AssociationType.UPDATE_AVAILABILITY_STATUS)}
    for a, (source, target) in model.associations.items():
        if source not in model.containers or model.association_type[a] not in content:
            continue
        ends = model.associations.get(target, (target,))
        model.containers[source].update(end for end in ends if end in model.versions)
    stored = {r.entry_uuid: r.status for r in rows if r.kind == "D"}
    assert stored == {v.uuid: v.status for v in model.versions.values()}, "the model disagrees with the registry"


def snapshot(world: World, model: Model) -> list[tuple]:
    o = schema.registry_objects
    with world.services.registry.read() as conn:
        pk = world.services.registry.patient_pk(conn, model.pid)
        return sorted(tuple(r) for r in conn.execute(
            select(o.c.entry_uuid, o.c.status, o.c.body, o.c.blob_address).where(o.c.patient_pk == pk)).all())


# ============================================================================ the actor
def make_actor(world: World, model: Model, spec: tuple) -> tuple[Actor, Who]:
    kind, base, mode, names = spec
    named = {"own": model.pid, "other": world.other, None: None}[names]
    if kind == PROFESSIONAL:
        actors = sample_actors(model.pid)
        actor = actors["doctor"] if base == "author" else actors[base]
        purpose, reason = {"normal": ("normal", ""), "bris_de_glace": ("bris_de_glace", "coma"),
                           "bdg-no-reason": ("bris_de_glace", ""), "centre_15": ("centre_15", "")}[mode]
        if base in ("emergency", "regulator") and mode == "normal":
            purpose, reason, mode = actor.purpose, actor.reason, \
                "bris_de_glace" if actor.purpose == "bris_de_glace" else "centre_15"
        actor = dataclasses.replace(actor, id=AUTHOR if base == "author" else actor.id, purpose=purpose,
                                    reason=reason, patient_id=named)
        return actor, Who(PROFESSIONAL, actor.id, actor.role, actor.specialty, mode, actor.structure, names)
    if kind in (PATIENT, REPRESENTATIVE):
        actor = sample_actors(named)["patient" if kind == PATIENT else "guardian"]
        return actor, Who(kind, actor.id, names=names)
    if kind == CONNECTOR:
        actor = dataclasses.replace(ACTORS["connector"], structure=base, id=base)
        return actor, Who(CONNECTOR, actor.id, structure=base)
    return ACTORS["auditor"], Who(ADMIN, ACTORS["auditor"].id)


# ============================================================================ one example's view
@dataclass
class Case:
    world: World
    model: Model
    actor: Actor
    oracle: Oracle
    picks: list[int]
    visible: set[str] = field(default_factory=set)
    hidden_ids: set[str] = field(default_factory=set)       # bare entryUUIDs
    hidden_uids: set[str] = field(default_factory=set)
    hidden_tokens: set[str] = field(default_factory=set)    # title tokens and lab codes
    public_id: str = ""

    def __post_init__(self) -> None:
        m, o = self.model, self.oracle
        self.visible = o.visible_ids()
        shown = [v for v in m.versions.values() if v.uuid in self.visible]
        lids_shown = {bare(v.lid) for v in shown}
        self.hidden_ids = ({bare(x) for x in [*m.versions, *m.containers, *m.associations, *m.removed]
                            if x not in self.visible} - lids_shown)
        shown_uids = {v.uid for v in shown}
        self.hidden_uids = (set(m.tokens) - shown_uids) | \
            {m.container_uid[c] for c in m.containers if c not in self.visible}
        self.hidden_tokens = {t for uid, pair in m.tokens.items() if uid not in shown_uids for t in pair}
        with self.world.services.registry.read() as conn:
            pk = self.world.services.registry.patient_pk(conn, m.pid)
            self.public_id = patients.record(conn, pk).fhir_id

    # --- what to look for ----------------------------------------------------------------------
    def approved_visible(self) -> list[Version]:
        return [v for v in self.model.ordered() if v.uuid in self.visible and v.status == APPROVED]

    def pick(self, i: int, items: list[str]) -> str:
        return items[self.picks[i] % len(items)]

    def some_versions(self) -> list[Version]:
        """For paths asked once per version: one hidden and one visible version (if any)."""
        versions = self.model.ordered()
        hidden = [v for v in versions if v.uuid not in self.visible]
        shown = [v for v in versions if v.uuid in self.visible]
        return [group[self.picks[2] % len(group)] for group in (hidden, shown) if group]

    def assert_nothing_hidden(self, text: str, where: str, asked: set[str] = frozenset()) -> None:
        for x in self.hidden_ids - asked:
            assert x not in text, f"{where}: hidden object {x} is named"
        for uid in self.hidden_uids - asked:
            assert not re.search(rf"(?<![0-9.]){re.escape(uid)}(?![0-9]|\.[0-9])", text), \
                f"{where}: hidden uniqueId {uid} is named"
        for token in self.hidden_tokens:
            assert token not in text, f"{where}: content {token} of a hidden document is shown"
        assert "withheld" not in text, f"{where}: says that something was withheld"

    # --- doors ---------------------------------------------------------------------------------
    def soap(self, action: str, path: str, body: etree._Element) -> tuple[etree._Element, bytes]:
        header = saml.security_header(self.world.authority.saml_assertion(self.actor))
        response = self.world.client.post(path, data=build_envelope(action, body, extra_headers=[header]),
                                          content_type="application/soap+xml")
        assert response.status_code in (200, 500), response.data[:500]
        message = read_soap_request(response.headers.get("Content-Type", ""), io.BytesIO(response.data),
                                    max_total=1 << 26)
        return parse_envelope(message.root, require_action=False).body, response.data

    def fhir(self, method: str, path: str, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {self.world.authority.jwt(self.actor)}",
                   "Accept": "application/fhir+json", **kw.pop("headers", {})}
        return getattr(self.world.client, method)(path, headers=headers, **kw)


def _errors(body: etree._Element) -> list[str]:
    return [e.get("errorCode") for e in body.iter(f"{RS}RegistryError")]


def stored_query(case: Case, name: str, params: dict[str, list[str]], return_type: str,
                 asked: set[str] = frozenset()) -> set[str]:
    """The ids an ITI-18 answers, after checking it names nothing hidden."""
    body = etree.Element(QRY + "AdhocQueryRequest", nsmap={"query": C.QUERY, "rim": C.RIM})
    etree.SubElement(body, QRY + "ResponseOption", returnType=return_type, returnComposedObjects="true")
    adhoc = etree.SubElement(body, RIM + "AdhocQuery", id=C.STORED_QUERY_IDS[name])
    for key, values in params.items():
        slot = etree.SubElement(adhoc, RIM + "Slot", name=key)
        value_list = etree.SubElement(slot, RIM + "ValueList")
        for value in values:
            etree.SubElement(value_list, RIM + "Value").text = value
    answer, raw = case.soap(C.ACTION_STORED_QUERY, "/xds/registry", body)
    assert not _errors(answer), (name, _errors(answer), raw[:800])
    case.assert_nothing_hidden(raw.decode(), f"{name}/{return_type}", asked)
    found = answer.find(f"{RIM}RegistryObjectList")
    if found is None:
        return set()
    ids = {child.get("id") for child in found}     # ObjectRef, ExtrinsicObject, RegistryPackage, Association
    assert ids <= case.visible | {None}, f"{name}/{return_type} returns hidden {ids - case.visible}"
    return ids


# ============================================================================ the read paths
def read_path(case: Case, path: str) -> None:
    m, o = case.model, case.oracle
    pid = f"'{m.pid}'"
    doc_ids = [v.uuid for v in m.ordered()]
    objects = [x for x in [*doc_ids, *m.containers] if x]
    versions = set(m.versions)
    rtype = "ObjectRef" if case.picks[3] % 2 else "LeafClass"
    if path == "FindDocuments":
        got = stored_query(case, "FindDocuments", {"$XDSDocumentEntryPatientId": [pid],
                                                   "$XDSDocumentEntryStatus": ALL_STATUSES}, rtype)
        assert got == versions & case.visible, "FindDocuments: what the oracle allows is found"
        approved = stored_query(case, "FindDocuments", {"$XDSDocumentEntryPatientId": [pid],
                                                        "$XDSDocumentEntryStatus": ALL_STATUSES[:1]}, "LeafClass")
        assert approved == {v.uuid for v in case.approved_visible()}
    elif path == "FindDocumentsByReferenceId":
        got = stored_query(case, "FindDocumentsByReferenceId", {
            "$XDSDocumentEntryPatientId": [pid], "$XDSDocumentEntryStatus": ALL_STATUSES,
            "$XDSDocumentEntryReferenceIdList": [f"('{REFERENCE_ID}')"]}, rtype)
        assert got == versions & case.visible
    elif path == "FindSubmissionSets":
        got = stored_query(case, "FindSubmissionSets", {"$XDSSubmissionSetPatientId": [pid],
                                                        "$XDSSubmissionSetStatus": ALL_STATUSES[:1]}, rtype)
        assert got == {c for c, k in m.container_kind.items() if k == "S"} & case.visible
    elif path == "FindFolders":
        got = stored_query(case, "FindFolders", {"$XDSFolderPatientId": [pid],
                                                 "$XDSFolderStatus": ALL_STATUSES[:1]}, rtype)
        assert got == {c for c, k in m.container_kind.items() if k == "F"} & case.visible
    elif path == "GetAll":
        got = stored_query(case, "GetAll", {"$patientId": [pid], "$XDSDocumentEntryStatus": ALL_STATUSES,
                                            "$XDSSubmissionSetStatus": ALL_STATUSES[:1],
                                            "$XDSFolderStatus": ALL_STATUSES[:1]}, rtype)
        assert got == case.visible, "GetAll: every visible object and relation, and no other"
    elif path == "GetDocuments":
        how = case.picks[0] % 3
        if how == 0:
            params = {"$XDSDocumentEntryEntryUUID": [f"('{u}')" for u in doc_ids]}
        elif how == 1:
            params = {"$XDSDocumentEntryUniqueId": [f"('{u}')" for u in {v.uid for v in m.versions.values()}]}
        else:
            params = {"$XDSDocumentEntryLogicalID": [f"('{u}')" for u in {v.lid for v in m.versions.values()}]}
        if doc_ids:
            asked = {bare(u) for u in doc_ids} if how == 0 else \
                {v.uid for v in m.versions.values()} if how == 1 else {bare(v.lid) for v in m.versions.values()}
            assert stored_query(case, "GetDocuments", params, rtype, asked) == versions & case.visible
    elif path == "GetFolders":
        folders = [c for c, k in m.container_kind.items() if k == "F"]
        if folders:
            got = stored_query(case, "GetFolders", {"$XDSFolderEntryUUID": [f"('{f}')" for f in folders]}, rtype,
                               {bare(f) for f in folders})
            assert got == set(folders) & case.visible
    elif path in ("GetAssociations", "GetDocumentsAndAssociations", "GetSubmissionSets",
                  "GetFoldersForDocument", "GetRelatedDocuments"):
        pool = objects if path in ("GetAssociations", "GetSubmissionSets") else doc_ids
        if not pool:
            return
        x = case.pick(0, pool)          # ONLY this object's id: a hidden one is not among the loaded objects
        asked = {bare(x), *(v.uid for v in m.versions.values() if v.uuid == x)}
        touching = {a for a, ends in m.associations.items() if x in ends}
        member_of = {a for a in touching if m.association_type[a] == str(AssociationType.HAS_MEMBER)
                     and m.associations[a][1] == x}
        if path == "GetAssociations":
            got = stored_query(case, path, {"$uuid": [f"('{x}')"]}, rtype, asked)
            expected = touching & case.visible if x in case.visible else set()
        elif path == "GetDocumentsAndAssociations":
            got = stored_query(case, path, {"$XDSDocumentEntryEntryUUID": [f"('{x}')"]}, rtype, asked)
            expected = ({x} | touching) & case.visible if x in case.visible else set()
        elif path == "GetSubmissionSets":
            got = stored_query(case, path, {"$uuid": [f"('{x}')"]}, rtype, asked)
            sets = {a for a in member_of if m.container_kind.get(m.associations[a][0]) == "S"}
            expected = (sets | {m.associations[a][0] for a in sets}) & case.visible if x in case.visible else set()
        elif path == "GetFoldersForDocument":
            got = stored_query(case, path, {"$XDSDocumentEntryEntryUUID": [f"'{x}'"]}, rtype, asked)
            expected = {m.associations[a][0] for a in member_of
                        if m.container_kind.get(m.associations[a][0]) == "F"} & case.visible \
                if x in case.visible else set()
        else:
            types = [t for t in AssociationType if t.is_relationship]
            got = stored_query(case, path, {"$XDSDocumentEntryEntryUUID": [f"'{x}'"],
                                            "$AssociationTypes": [f"('{t}')" for t in types]}, rtype, asked)
            relations = {a for a in touching if m.association_type[a] in {str(t) for t in types}} & case.visible
            expected = (relations | {e for a in relations for e in m.associations[a]}) \
                if x in case.visible and relations else set()
        assert got == expected, f"{path} of {'a visible' if x in case.visible else 'a hidden'} object"
    elif path in ("GetSubmissionSetAndContents", "GetFolderAndContents"):
        kind = "S" if path == "GetSubmissionSetAndContents" else "F"
        pool = [c for c, k in m.container_kind.items() if k == kind]
        if not pool:
            return
        x = case.pick(1, pool)
        slot = "$XDSSubmissionSetEntryUUID" if kind == "S" else "$XDSFolderEntryUUID"
        got = stored_query(case, path, {slot: [f"'{x}'"]}, rtype, {bare(x)})
        if x in case.visible:
            assert x in got
        else:
            assert got == set(), f"{path} of a hidden container answers"
    elif path == "ITI-43":
        retrieve(case)
    elif path == "ITI-67 search":
        token = F.token(m.pid)
        response = case.fhir("get", "/fhir/DocumentReference", query_string={
            "patient.identifier": token, "status": "current,superseded,entered-in-error"})
        assert response.status_code == 200, response.data[:300]
        case.assert_nothing_hidden(response.data.decode(), "ITI-67")
        bundle = response.json
        ids = {e["resource"]["id"] for e in bundle.get("entry", [])}
        assert ids == {bare(u) for u in versions & case.visible}, "ITI-67: what the oracle allows is found"
        assert bundle["total"] == len(ids)
        _relates_to_visible(case, [e["resource"] for e in bundle.get("entry", [])])
        current = case.fhir("get", "/fhir/DocumentReference", query_string={"patient.identifier": token,
                                                                               "status": "current"}).json
        assert {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in current.get("entry", [])} == \
            {v.uid for v in case.approved_visible()}
    elif path == "ITI-67 read":
        for v in m.ordered():
            response = case.fhir("get", f"/fhir/DocumentReference/{bare(v.uuid)}")
            assert response.status_code == (200 if v.uuid in case.visible else 404), v
            case.assert_nothing_hidden(response.data.decode(), "ITI-67 read", {bare(v.uuid)})
            if response.status_code == 200:
                _relates_to_visible(case, [response.json])
    elif path == "ITI-66":
        response = case.fhir("get", "/fhir/List", query_string={"patient.identifier": F.token(m.pid),
                                                                "status": "current"})
        assert response.status_code == 200
        case.assert_nothing_hidden(response.data.decode(), "ITI-66")
        assert {e["resource"]["id"] for e in response.json.get("entry", [])} == {bare(c) for c in m.containers
                                                                        if c in case.visible}
        for c in m.containers:
            read = case.fhir("get", f"/fhir/List/{bare(c)}")
            assert read.status_code == (200 if c in case.visible else 404)
            case.assert_nothing_hidden(read.data.decode(), "ITI-66 read", {bare(c)})
    elif path == "ITI-68":
        unknown = case.fhir("get", "/fhir/Binary/00000000-0000-4000-8000-000000000000")
        for v in m.ordered():
            response = case.fhir("get", f"/fhir/Binary/{bare(v.uuid)}")
            assert response.status_code == (200 if v.uuid in case.visible else 404), v
            if response.status_code == 404:
                assert response.json == json.loads(unknown.data.decode().replace(
                    "00000000-0000-4000-8000-000000000000", bare(v.uuid))), "a hidden Binary answers as unknown"
    elif path == "_content":
        response = case.fhir("get", "/fhir/DocumentReference", query_string={
            "patient.identifier": F.token(m.pid), "_content": KEYWORD})
        assert response.status_code == 200, response.data[:300]
        case.assert_nothing_hidden(response.data.decode(), "_content")
        got = {e["resource"]["masterIdentifier"]["value"].removeprefix("urn:oid:") for e in response.json.get("entry", [])}
        assert got == {v.uid for v in case.approved_visible()}
        assert response.json["total"] == len(got)
    elif path == "Observation & co":
        for rtype, which in (("Observation", 1), ("Condition", 2)):
            response = case.fhir("get", f"/fhir/{rtype}", query_string={"patient.identifier": F.token(m.pid),
                                                                         "_count": "100"})
            assert response.status_code == 200, response.data[:300]
            case.assert_nothing_hidden(response.data.decode(), rtype)
            codes = {c["code"] for e in response.json.get("entry", [])
                     for c in (e["resource"].get("code") or {}).get("coding", [])}
            assert codes & {t[which] for t in m.tokens.values()} == \
                {m.tokens[v.uid][which] for v in case.approved_visible()}, rtype
            assert response.json["total"] == len(response.json.get("entry", []))
        shown = {m.tokens[v.uid][1] for v in case.approved_visible()}
        for fact_id, lab in [f for f in _facts(case) if f[1].startswith("L")][:2]:
            read = case.fhir("get", f"/fhir/Observation/{fact_id}")
            assert read.status_code == (200 if lab in shown else 404)
    elif path == "$summary":
        response = case.fhir("get", f"/fhir/Patient/{case.public_id}/$summary")
        assert response.status_code == (200 if o.record_ok() else 404)
        text = response.data.decode()
        case.assert_nothing_hidden(text, "$summary")
        if response.status_code == 200:
            for v in case.approved_visible():
                assert m.tokens[v.uid][1] in text and m.tokens[v.uid][2] in text
        else:
            assert f"NOM{m.pid.id}" not in text and m.pid.id not in text
    elif path == "dossier":
        response = case.fhir("get", f"/dossier/{case.public_id}", headers={"Accept": "text/html"})
        assert response.status_code == (200 if o.record_ok() else 403)
        text = response.data.decode()
        case.assert_nothing_hidden(text, "/dossier")
        if response.status_code == 200:
            for v in case.approved_visible():
                assert m.tokens[v.uid][0] in text, "the page lists what the actor may see"
            withheld = any(v.status == APPROVED and v.uuid not in case.visible for v in m.versions.values())
            told = o.who.kind not in (PATIENT, REPRESENTATIVE) and withheld
            assert ("ne vous sont pas accessibles" in text) == told, "the page says (only) that some are not shown"
        else:
            for secret in (f"NOM{m.pid.id}", m.pid.id, "1979"):
                assert secret not in text, "a refusal page names the patient"
        for v in case.some_versions():     # a document's page and bytes
            shown = v.uuid in case.visible and v.status == APPROVED
            for suffix in ("", "/content"):
                page = case.fhir("get", f"/dossier/{case.public_id}/documents/{bare(v.uuid)}{suffix}",
                                 headers={"Accept": "text/html"})
                assert page.status_code == (200 if shown else 404 if o.record_ok() else 403), (suffix, v)
                if page.status_code != 200:
                    case.assert_nothing_hidden(page.data.decode(), "/dossier document", {bare(v.uuid)})
    elif path == "Patient":
        found = case.fhir("get", "/fhir/Patient", query_string={"identifier": F.token(m.pid)})
        assert found.status_code == 200
        assert found.json["total"] == (1 if o.identity_ok() else 0)
        read = case.fhir("get", f"/fhir/Patient/{case.public_id}")
        assert read.status_code == (200 if o.identity_ok() else 404)
        if not o.identity_ok():
            assert f"NOM{m.pid.id}" not in found.data.decode() + read.data.decode()
    elif path == "AuditEvent":
        audit_trail(case)


def _relates_to_visible(case: Case, resources: list[dict]) -> None:
    for resource in resources:
        for relation in resource.get("relatesTo") or []:
            target = relation["target"]["reference"].rsplit("/", 1)[-1]
            assert f"urn:uuid:{target}" in case.visible, f"relatesTo names hidden {target}"


def _facts(case: Case) -> list[tuple[int, str]]:
    t = schema.clinical_facts
    with case.world.services.registry.read() as conn:
        pk = case.world.services.registry.patient_pk(conn, case.model.pid)
        return [(r.pk, r.code) for r in conn.execute(select(t.c.pk, t.c.code).where(t.c.patient_pk == pk))]


def retrieve(case: Case) -> None:
    """ITI-43 by every version's uniqueId (and one never registered)."""
    m = case.model
    unknown = "1.2.250.1.999.77.0"
    uids = sorted({v.uid for v in m.versions.values()}) + [unknown]
    body = etree.Element(XDSB + "RetrieveDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    for uid in uids:
        item = etree.SubElement(body, XDSB + "DocumentRequest")
        etree.SubElement(item, XDSB + "RepositoryUniqueId").text = DEFAULT_REPOSITORY_UNIQUE_ID
        etree.SubElement(item, XDSB + "DocumentUniqueId").text = uid
    answer, raw = case.soap(C.ACTION_RETRIEVE, "/xds/repository", body)
    returned = {r.findtext(f"{XDSB}DocumentUniqueId") for r in answer.iter(f"{XDSB}DocumentResponse")}
    assert returned == {v.uid for v in m.versions.values() if v.uuid in case.visible}, "ITI-43"
    errors = {e.get("location") or "": (e.get("errorCode"), (e.get("codeContext") or "").replace(
        e.get("location") or "\0", "UID")) for e in answer.iter(f"{RS}RegistryError")}
    for uid in set(uids) - returned:
        assert errors.get(uid) == errors.get(unknown), f"ITI-43 of hidden {uid} answers unlike an unknown one"
    text = raw.decode("utf-8", "replace")
    case.assert_nothing_hidden(text, "ITI-43", asked=set(uids))


def audit_trail(case: Case) -> None:
    """Someone who sees everything retrieved every document; then the actor reads the trail."""
    m = case.model
    ctx = audit.AuditContext(action="ITI-43", actor=sample_actors()["gp"])
    ctx.patients[m.pid.format()] = None
    ctx.objects = sorted(m.tokens)     # every document of the example, removed ones too
    event = audit.finish(case.world.services, ctx)
    response = case.fhir("get", "/fhir/AuditEvent")
    who = case.oracle.who
    if who.kind == PROFESSIONAL or who.kind == CONNECTOR:
        assert response.status_code == 403
        return
    assert response.status_code == 200, response.data[:300]
    read = case.fhir("get", f"/fhir/AuditEvent/{event}")
    if who.kind == ADMIN:
        return       # the administrator reads the whole trail
    case.assert_nothing_hidden(response.data.decode(), "AuditEvent")
    case.assert_nothing_hidden(read.data.decode(), "AuditEvent read")
    bundle = response.json
    assert bundle["total"] == len(bundle.get("entry", []))
    shown = {v.uid for v in m.versions.values() if v.uuid in case.visible}
    named = {e["what"]["identifier"]["value"].removeprefix("urn:oid:") for entry in bundle.get("entry", [])
             for e in entry["resource"].get("entity", []) if e["type"]["code"] == "2"}
    assert named <= shown
    if who.names == "own" and shown:
        assert read.status_code == 200 and shown <= named, "the patient sees who read their documents"
    if who.names == "own" and not shown:
        assert read.status_code == 404, "an access to documents the patient may not see is not shown"


# ============================================================================ changes
ROLES = {GP: "10", DOCTOR: "10", AUTHOR: "10", NOBODY: "10", NURSE: "60", PHARMACIST: "21"}


def try_change(case: Case, kind: str, pick: int, flag: bool, who: str) -> None:
    m = case.model
    current = m.ordered()
    if who == "own":     # the author's own changes (the patient's masking) must go through: make them likely
        current = [v for v in current if case.oracle.owns(v) or (
            case.oracle.may_mask(v) and v.status == APPROVED and m.latest_of_lid(v))] or current
    if not current:
        return
    target = current[pick % len(current)]
    if who == "author":       # the target's author asks (normal mode, no patient named)
        author = sorted(target.authors)[pick % len(target.authors)]
        actor = Actor(id=author, name="Dr Auteur", role=ROLES[author], structure=ELSEWHERE)
        case = dataclasses.replace(case, actor=actor, oracle=dataclasses.replace(
            case.oracle, who=Who(PROFESSIONAL, author, actor.role, "", "normal", ELSEWHERE, None)))
    elif who == "structure":  # the connector of (one of) its author institutions
        structure = sorted(target.institutions)[0]
        actor = dataclasses.replace(ACTORS["connector"], id=structure, structure=structure)
        case = dataclasses.replace(case, actor=actor, oracle=dataclasses.replace(
            case.oracle, who=Who(CONNECTOR, structure, structure=structure)))
    o = case.oracle
    before = snapshot(case.world, m)
    head = m.latest_of_lid(target)
    if kind in ("rplc", "xfrm"):
        allowed = o.may_submit(*_new_for(case, target)[1:]) and o.may_change(target)
        ok = _submit_relation(case, target, AssociationType.RPLC if kind == "rplc" else AssociationType.XFRM)
        possible = target.status == APPROVED
    elif kind == "status":
        new = DELETED if flag else DEPRECATED
        allowed, possible = o.may_change(target), head and (target.status, new) in TRANSITIONS
        ok = _status_change(case, target, new)
    elif kind == "version":
        mask = flag or o.who.kind in (PATIENT, REPRESENTATIVE)
        allowed = o.may_mask(target) if o.who.kind in (PATIENT, REPRESENTATIVE) else o.may_change(target)
        possible = head and target.status == APPROVED
        ok = _new_version(case, target, mask)
    elif kind == "patch-status":
        allowed, possible = o.may_change(target), head and (target.status, DELETED) in TRANSITIONS
        ok = _patch(case, target, [{"op": "replace", "path": "/status", "value": "entered-in-error"}])
    elif kind == "delete":     # FHIR DELETE: the document becomes Deleted
        allowed = o.may_change(target)
        possible = target.status == DELETED or (head and (target.status, DELETED) in TRANSITIONS)
        ok = _delete(case, target)
    elif kind == "patch-label":
        allowed = o.may_mask(target) if o.who.kind in (PATIENT, REPRESENTATIVE) else o.may_change(target)
        possible = head and target.status == APPROVED
        ok = _patch(case, target, None)
    elif kind == "iti-62":
        closure = removal_closure(m, target.uuid)
        partners = [m.versions[x] for a in closure if a in m.associations for x in m.associations[a]
                    if x in m.versions]
        allowed, possible = o.may_change(target, *partners), True
        ok = _remove_metadata(case, closure)
    else:
        allowed, possible = o.may_change(*m.by_uid(target.uid)), True
        ok = _remove_documents(case, target.uid)
    after = snapshot(case.world, m)
    event(f"change {kind} by {o.who.kind}: {'allowed' if allowed else 'refused'}{'' if possible else ' (impossible)'} -> {ok}")
    fhir = kind.startswith("patch") or kind == "delete"
    if fhir and ok == "hidden":
        assert target.uuid not in case.visible, f"{kind} of a visible document answered 404"
        assert after == before
        return
    if fhir and target.uuid not in case.visible:
        raise AssertionError(f"{kind} of a hidden document answered {ok}")
    if not allowed:
        assert ok == "refused", f"{kind} by a non-author: {ok}"
        assert after == before, f"a refused {kind} changed the record"
    elif possible:
        assert ok == "done", f"{kind} by the author: {ok}"
        if not (kind in ("patch-status", "delete") and target.status == DELETED):
            assert after != before
    else:
        assert ok != "done" or after == before


def _outcome(answer: etree._Element, raw: bytes, case: Case, asked: set[str]) -> str:
    """done, refused (XDSPolicyViolation alone) or failed; a refusal names nothing hidden."""
    case.assert_nothing_hidden(raw.decode("utf-8", "replace"), "change", {bare(a) for a in asked} | asked)
    status = (answer.get("status") or "").rsplit(":", 1)[-1]
    if status == "Success":
        return "done"
    return "refused" if _errors(answer) == ["XDSPolicyViolation"] else "failed: " + ",".join(_errors(answer))


def _new_for(case: Case, target: Version) -> tuple[DocumentEntry, str, list[str], list[str]]:
    """A document this actor could submit: its own authorship, the target's class (a patient: 90)."""
    actor, who = case.actor, case.oracle.who
    klass = "90" if who.kind in (PATIENT, REPRESENTATIVE) else target.klass
    author = actor.id if who.kind == PROFESSIONAL else NOBODY
    institution = actor.structure or ELSEWHERE
    doc = F.document(case.model.pid, "change", mime_type="text/plain", class_code=Code(klass, CLASS_SYSTEM, "c"),
                     unique_id=f"1.2.250.1.999.78.{next(_serial)}")
    doc.authors[0].person = _person(author)
    doc.authors[0].institutions = [XON.parse(f"S^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^{institution}")]
    return doc, klass, [author], [institution]


def _submit_relation(case: Case, target: Version, relation: AssociationType) -> str:
    doc, *_ = _new_for(case, target)
    request = F.submission(case.model.pid, [doc], contents=False, extra_associations=[Association(
        entry_uuid="rel", association_type=relation, source_uuid="change", target_uuid=target.uuid)])
    body = etree.Element(XDSB + "ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    submit = etree.SubElement(body, LCM + "SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), submit)
    etree.SubElement(body, XDSB + "Document", id="change").text = base64.b64encode(b"addendum").decode()
    return _outcome(*case.soap(C.ACTION_PNR, "/xds/repository", body), case, {target.uuid})


def _update(case: Case, request: SubmissionRequest, target: Version) -> str:
    submit = etree.Element(LCM + "SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), submit)
    return _outcome(*case.soap(C.ACTION_UPDATE, "/xds/registry", submit), case, {target.uuid, target.lid})


def _status_change(case: Case, target: Version, new: str) -> str:
    return _update(case, SubmissionRequest(_update_set(case.model.pid), [], [], [Association(
        entry_uuid="chg", association_type=AssociationType.UPDATE_AVAILABILITY_STATUS, source_uuid="ss",
        target_uuid=target.uuid, original_status=STATUS_URN[target.status], new_status=STATUS_URN[new])]), target)


def _new_version(case: Case, target: Version, mask: bool) -> str:
    entry = case.model.entries[target.uuid]
    new = copy.deepcopy(entry)
    new.entry_uuid, new.lid, new.version = "nv", entry.lid or entry.entry_uuid, ""
    if mask:
        codes = set(target.codes) ^ {"MASQUE_PS"}
        new.confidentiality_codes = _codes(codes)
    else:
        new.title = "Titre changé"
    return _update(case, SubmissionRequest(_update_set(case.model.pid), [new], [], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss", target_uuid="nv",
        submission_set_status="Original", previous_version=entry.version or "1")]), target)


def _patch(case: Case, target: Version, operations: list | None) -> str:
    rid = bare(target.uuid)
    if operations is None:    # toggle MASQUE_PS in securityLabel
        current = case.fhir("get", f"/fhir/DocumentReference/{rid}")
        if current.status_code != 200:
            operations = [{"op": "add", "path": "/securityLabel/-",
                           "value": {"coding": [{"system": f"urn:oid:{CONF}", "code": "MASQUE_PS"}]}}]
        else:
            labels = current.json.get("securityLabel", [])
            kept = [lab for lab in labels if not any(c.get("code") == "MASQUE_PS" for c in lab.get("coding", []))]
            if len(kept) == len(labels):
                kept.append({"coding": [{"system": f"urn:oid:{CONF}", "code": "MASQUE_PS"}]})
            operations = [{"op": "replace", "path": "/securityLabel", "value": kept}]
    response = case.fhir("patch", f"/fhir/DocumentReference/{rid}", data=json.dumps(operations),
                         content_type="application/json-patch+json")
    case.assert_nothing_hidden(response.data.decode(), "PATCH", {rid})
    if response.status_code == 404:
        return "hidden"
    if response.status_code == 403:
        assert response.json["resourceType"] == "OperationOutcome"
        return "refused"
    return "done" if response.status_code == 200 else f"failed: {response.status_code}"


def _delete(case: Case, target: Version) -> str:
    rid = bare(target.uuid)
    response = case.fhir("delete", f"/fhir/DocumentReference/{rid}")
    case.assert_nothing_hidden(response.data.decode(), "DELETE", {rid})
    if response.status_code == 404:
        return "hidden"
    if response.status_code == 403:
        assert response.json["resourceType"] == "OperationOutcome"
        return "refused"
    return "done" if response.status_code == 204 else f"failed: {response.status_code}"


def _remove_metadata(case: Case, refs: list[str]) -> str:
    body = etree.Element(LCM + "RemoveObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    refs_list = etree.SubElement(body, RIM + "ObjectRefList")
    for ref in refs:
        etree.SubElement(refs_list, RIM + "ObjectRef", id=ref)
    return _outcome(*case.soap(C.ACTION_REMOVE_METADATA, "/xds/registry", body), case, set(refs))


def _remove_documents(case: Case, uid: str) -> str:
    body = etree.Element(f"{{{C.RMD}}}RemoveDocumentsRequest", nsmap={"rmd": C.RMD, "xdsb": C.XDSB})
    item = etree.SubElement(body, XDSB + "DocumentRequest")
    etree.SubElement(item, XDSB + "RepositoryUniqueId").text = DEFAULT_REPOSITORY_UNIQUE_ID
    etree.SubElement(item, XDSB + "DocumentUniqueId").text = uid
    return _outcome(*case.soap(C.ACTION_REMOVE_DOCUMENTS, "/xds/repository", body), case, {uid})


# ============================================================================ the property
@settings(max_examples=EXAMPLES, derandomize=True, deadline=None, database=None, phases=PHASES,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(s=scenario)
def test_every_path_answers_what_the_page_allows(world, s):
    model = build(world, s)
    record = Record(status=s["record"], medecin_traitant=s["medecin_traitant"] if s["record"] != "none" else "",
                    blocked=frozenset(s["blocked"] - {s["medecin_traitant"]}) if s["record"] != "none" else frozenset(),
                    bdg_opposed=s["opposed"] and s["record"] != "none")
    cases = []
    for spec, reads in s["actors"]:
        actor, who = make_actor(world, model, spec)
        case = Case(world, model, actor, Oracle(who, record, model.versions, model.containers, model.associations,
                                                  [st for a, st in model.associations.items()
                                                   if model.association_type[a] == str(AssociationType.XFRM)]),
                    s["picks"])
        _statistics(case)
        if who.kind in (PATIENT, REPRESENTATIVE) and "AuditEvent" not in reads:
            reads = [*reads, "AuditEvent"]     # "who looked at my record": always asked by the patient
        for path in reads:
            read_path(case, path)
        cases.append(case)
    try_change(cases[0], *s["change"])


def _statistics(case: Case) -> None:
    """What the example exercised (pytest --hypothesis-show-statistics)."""
    model, oracle, who = case.model, case.oracle, case.oracle.who
    event(f"actor {who.kind}" + (f" {who.mode}" if who.kind == PROFESSIONAL else ""))
    event("some objects hidden" if case.hidden_ids else "nothing hidden")
    for lineage in {v.lineage for v in model.versions.values()}:
        newest = oracle.newest(lineage)
        members = [v for v in model.versions.values() if v.lineage == lineage]
        if len(newest) > 1:
            event("a lineage with several current versions")
        if any(oracle.own_codes_ok(v) and not oracle.document_visible(v) for v in members):
            dead = all(v.status == DEPRECATED for v in members)
            event("a version hidden by its lineage" + (" (every version Deprecated)" if dead else ""))
