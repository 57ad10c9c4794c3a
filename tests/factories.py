"""Valid model objects for tests, with the CI-SIS codes of the shipped default domain."""

from __future__ import annotations

import copy
import hashlib
import io
import itertools
import uuid

from partage.metadata.datatypes import CX, DTM, HD, XCN, XON
from partage.metadata.model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentContent,
    DocumentEntry,
    Folder,
    SubmissionRequest,
    SubmissionSet,
)

INS_NIR_TEST = "1.2.250.1.213.1.4.10"
_counter = itertools.count(1)


def patient_id(n: int | None = None) -> CX:
    """A test INS-NIR; its str() is the HL7 text the wire carries."""
    n = next(_counter) if n is None else n
    return CX(str(279035121518000 + n), HD.iso(INS_NIR_TEST))


def cx(pid: str | CX) -> CX:
    """A test patient id (the HL7 text the wire carries) as the model's typed value."""
    return pid if isinstance(pid, CX) else CX.parse(pid)


def token(pid: CX) -> str:
    """The FHIR search token of a patient id: `urn:oid:<authority>|<id>`."""
    return f"urn:oid:{pid.assigning_authority.universal_id}|{pid.id}"


AUTHOR_XCN = XCN.parse("801234567890^MARTIN^Claire^^^Dr^^^&1.2.250.1.71.4.2.1&ISO")
AUTHOR_XON = XON.parse("Hopital X^^^^^&1.2.250.1.71.4.2.2&ISO^IDNST^^^11111111")


def oid(prefix: str = "1.2.250.1.999.1") -> str:
    return f"{prefix}.{uuid.uuid4().int % 10**12}.{next(_counter)}"


def document(pid: str | CX, entry_id: str = "doc1", **overrides) -> DocumentEntry:
    doc = DocumentEntry(
        entry_uuid=entry_id, unique_id=oid(), patient_id=cx(pid), source_patient_id=cx(pid),
        mime_type="text/xml", creation_time=DTM("20240315093000"), language_code="fr-FR",
        title="Compte rendu", service_start_time=DTM("20240314"), service_stop_time=DTM("20240315"),
        class_code=Code("10", "1.2.250.1.213.1.1.4.1", "Compte rendu"),
        type_code=Code("11490-0", "2.16.840.1.113883.6.1", "Lettre de sortie"),
        format_code=Code("urn:asip:ci-sis:vsm:2012", "1.2.250.1.213.1.1.4.2.282"),
        healthcare_facility_type_code=Code("SA01", "1.2.250.1.71.4.2.4"),
        practice_setting_code=Code("ETABLISSEMENT", "1.2.250.1.213.1.1.4.9"),
        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25", "Normal")],
        event_codes=[Code("E1", "1.2.3.4")],
        authors=[Author(person=AUTHOR_XCN, institutions=[AUTHOR_XON],
                        specialties=["G15_10/SM26^Medecine generale^1.2.250.1.213.1.1.4.5"])],
    )
    for key, value in overrides.items():
        setattr(doc, key, value)
    return doc


def submission(pid: str | CX, docs: list[DocumentEntry] | None = None, *, contents: bool = True,
               folders: list[Folder] | None = None, extra_associations: list[Association] | None = None,
               payload: bytes | None = None) -> SubmissionRequest:
    docs = docs if docs is not None else [document(pid)]
    folders = folders or []
    ss = SubmissionSet(entry_uuid="ss", unique_id=oid(), source_id="1.2.250.1.999.2", patient_id=cx(pid),
                       submission_time=DTM("20240315100000"),
                       content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2", "Hospitalisation"),
                       authors=[Author(person=AUTHOR_XCN)])
    assocs = [Association(entry_uuid=f"a-{o.entry_uuid}", association_type=AssociationType.HAS_MEMBER,
                          source_uuid="ss", target_uuid=o.entry_uuid, submission_set_status="Original")
              for o in [*docs, *folders]]
    request = SubmissionRequest(ss, docs, folders, assocs + (extra_associations or []))
    if contents:
        for doc in docs:
            data = payload if payload is not None else f"<doc>{doc.unique_id}</doc>".encode()
            request.contents[doc.entry_uuid] = DocumentContent(
                file=io.BytesIO(data), size=len(data), sha1=hashlib.sha1(data).hexdigest())
    return request


def folder(pid: str | CX, entry_id: str = "fol1") -> Folder:
    return Folder(entry_uuid=entry_id, unique_id=oid(), patient_id=cx(pid), title="Dossier",
                  codes=[Code("F1", "1.2.3.4.5", "Folder code")])


def update_set(pid: str | CX) -> SubmissionSet:
    """The SubmissionSet of an ITI-57 update (symbolic id "ss": the registry assigns the UUID)."""
    return SubmissionSet(entry_uuid="ss", unique_id=oid(), source_id="1.2.250.1.999.2", patient_id=cx(pid),
                         submission_time=DTM("20240401"), content_type_code=Code("04", "1.2.250.1.213.1.1.4.2.2"))


def new_version(doc: DocumentEntry, pid: str | CX | None = None, **changes) -> SubmissionRequest:
    """ITI-57: the next version of `doc` (a registered DocumentEntry), for its patient or for
    `pid` (a new version naming another patient moves the document), with these changes."""
    new = copy.deepcopy(doc)
    new.lid, new.entry_uuid, new.version = doc.logical_id, "newversion", ""
    new.patient_id = cx(pid) if pid is not None else doc.patient_id
    for key, value in changes.items():
        setattr(new, key, value)
    return SubmissionRequest(update_set(new.patient_id), [new], [], [Association(
        entry_uuid="hm", association_type=AssociationType.HAS_MEMBER, source_uuid="ss", target_uuid="newversion",
        submission_set_status="Original", previous_version=doc.version or "1")])


class PatternStream:
    """`size` bytes of hash-derived data, produced in chunks as a non-seekable file: a large
    document a client can stream without ever holding it; `sha1` is known once it is read."""

    def __init__(self, size: int) -> None:
        self.size, self.sent, self.sha1 = size, 0, hashlib.sha1()

    def read(self, n: int = 1 << 20) -> bytes:
        n = min(n, self.size - self.sent)
        if n <= 0:
            return b""
        block = (hashlib.sha256(str(self.sent).encode()).digest() * (n // 32 + 1))[:n]
        self.sent += n
        self.sha1.update(block)
        return block

    def seekable(self) -> bool:
        return False

    def close(self) -> None:
        pass


def registered_ids(request: SubmissionRequest) -> SubmissionRequest:
    """The submission with UUID entryUUIDs, as the registry would have assigned them: what a
    bulk load (registry.bulk) takes, since it runs no registration step."""
    ids = {o.entry_uuid: uuid.uuid4().urn for o in request.objects()}
    for obj in request.objects():
        obj.entry_uuid = ids[obj.entry_uuid]
    for assoc in request.associations:
        assoc.source_uuid, assoc.target_uuid = ids[assoc.source_uuid], ids[assoc.target_uuid]
    return request

