"""Signed submission sets: IHE DSG detached signatures (XAdES) over a submission.

A SubmissionSet signature is a document of the submission (formatCode
`urn:ihe:iti:dsg:detached:2014`) holding an XML signature (XAdES, signxml) whose signed
object is a `ds:Manifest`: one `ds:Reference` per other document of the submission,
`URI="urn:oid:<document uniqueId>"` with the SHA-256 of the document's bytes, and one
reference to the SubmissionSet, `URI="urn:oid:<SubmissionSet uniqueId>"`, Type
`urn:ihe:iti:dsg:submissionset`, whose digest is the SHA-256 of the SubmissionSet
uniqueId followed by the sorted document uniqueIds (one per line), so that a document
added to or removed from the set breaks the signature too. The signature document is a
member of the SubmissionSet, with a `signs` association to each document it covers (the
registry links SIGNS between DocumentEntries only).

At ingest (`check_submission`) every signature document present is verified: the XML
signature and its certificate chain (the trusted CAs of `--trust`), then the manifest
against the submission, exactly: the same documents, the same bytes, the same set.
`Settings.require_signed_submissions` makes a signature mandatory for authenticated
actors. `partage sign` signs a submission for clients and tests.
"""

from __future__ import annotations

import base64
import hashlib
import io
import logging
import uuid

from lxml import etree
from signxml import methods
from signxml.xades import XAdESSignatureConfiguration, XAdESSigner, XAdESVerifier

from ..metadata.errors import ErrorCode, XdsError
from ..metadata.model import (
    Association,
    AssociationType,
    Author,
    Code,
    DocumentContent,
    DocumentEntry,
    SubmissionRequest,
)
from .actor import CONNECTOR, PATIENT, PROFESSIONAL, REPRESENTATIVE

DS = "http://www.w3.org/2000/09/xmldsig#"
SHA256 = "http://www.w3.org/2001/04/xmlenc#sha256"
DSG_FORMAT = Code("urn:ihe:iti:dsg:detached:2014", "1.3.6.1.4.1.19376.1.2.3", "Detached signature")
DSG_TYPE = Code("E1762", "ASTM", "Full Document")
DSG_CLASS = Code("99", "1.2.250.1.213.1.1.4.1", "Technique")
SUBMISSION_SET_TYPE = "urn:ihe:iti:dsg:submissionset"
log = logging.getLogger("partage.access")


class SignatureError(Exception):
    pass


def _b64_sha256(data: bytes) -> str:
    return base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")


def set_digest(submission_set_uid: str, document_uids: list[str]) -> str:
    return _b64_sha256("\n".join([submission_set_uid, *sorted(document_uids)]).encode("utf-8"))


def is_signature(doc: DocumentEntry) -> bool:
    return doc.format_code is not None and doc.format_code.code == DSG_FORMAT.code


def _read(content: DocumentContent) -> bytes:
    content.file.seek(0)
    data = content.file.read()
    content.file.seek(0)
    return data


# --------------------------------------------------------------------------- signing
def build_manifest(submission_set_uid: str, documents: dict[str, bytes]) -> etree._Element:
    """documents: uniqueId -> bytes."""
    manifest = etree.Element(f"{{{DS}}}Manifest", Id="IHEManifest", nsmap={"ds": DS})
    for uid, data in sorted(documents.items()):
        ref = etree.SubElement(manifest, f"{{{DS}}}Reference", URI=f"urn:oid:{uid}")
        etree.SubElement(ref, f"{{{DS}}}DigestMethod", Algorithm=SHA256)
        etree.SubElement(ref, f"{{{DS}}}DigestValue").text = _b64_sha256(data)
    ref = etree.SubElement(manifest, f"{{{DS}}}Reference", URI=f"urn:oid:{submission_set_uid}",
                           Type=SUBMISSION_SET_TYPE)
    etree.SubElement(ref, f"{{{DS}}}DigestMethod", Algorithm=SHA256)
    etree.SubElement(ref, f"{{{DS}}}DigestValue").text = set_digest(submission_set_uid, list(documents))
    return manifest


def sign_manifest(manifest: etree._Element, key, cert) -> bytes:
    signer = XAdESSigner(method=methods.enveloping, signature_algorithm="rsa-sha256", digest_algorithm="sha256")
    return etree.tostring(signer.sign(manifest, key=key, cert=[cert]), xml_declaration=True, encoding="UTF-8")


def sign_submission(request: SubmissionRequest, key, cert, *, entry_id: str = "dsg-signature",
                    author: Author | None = None) -> DocumentEntry:
    """Add a SubmissionSet signature document (and its `signs` association) to `request`,
    whose documents must all have their contents. Returns the signature's entry."""
    ss = request.submission_set
    documents = {}
    for doc in request.documents:
        content = request.contents.get(doc.entry_uuid)
        if content is None:
            raise SignatureError(f"document {doc.entry_uuid} has no content to sign")
        documents[doc.unique_id] = _read(content)
    signature = sign_manifest(build_manifest(ss.unique_id, documents), key, cert)
    patient = ss.patient_id
    template = request.documents[0] if request.documents else None
    entry = DocumentEntry(
        entry_uuid=entry_id, unique_id=f"2.25.{uuid.uuid4().int}", patient_id=patient,
        source_patient_id=template.source_patient_id if template else patient,
        mime_type="text/xml", title="Signature du lot de soumission",
        creation_time=ss.submission_time, language_code=template.language_code if template else "fr-FR",
        class_code=DSG_CLASS, type_code=DSG_TYPE, format_code=DSG_FORMAT,
        healthcare_facility_type_code=template.healthcare_facility_type_code if template else None,
        practice_setting_code=template.practice_setting_code if template else None,
        confidentiality_codes=[Code("N", "2.16.840.1.113883.5.25", "Normal")],
        authors=[author] if author else list(template.authors if template else ss.authors),
        hash=hashlib.sha1(signature).hexdigest(), size=len(signature))
    if template is not None and not entry.authors:
        entry.authors = list(template.authors)
    request.documents.append(entry)
    request.contents[entry_id] = DocumentContent(file=io.BytesIO(signature), size=len(signature),
                                                 sha1=hashlib.sha1(signature).hexdigest())
    request.associations.append(Association(
        entry_uuid=f"{entry_id}-member", association_type=AssociationType.HAS_MEMBER,
        source_uuid=ss.entry_uuid, target_uuid=entry_id, submission_set_status="Original"))
    for i, doc in enumerate(request.documents[:-1]):
        request.associations.append(Association(
            entry_uuid=f"{entry_id}-signs-{i}", association_type=AssociationType.SIGNS,
            source_uuid=entry_id, target_uuid=doc.entry_uuid))
    return entry


# --------------------------------------------------------------------------- verifying
def verify_signature(data: bytes, ca_pem_file: str) -> etree._Element:
    """The signed ds:Manifest of a DSG signature document (signature and chain verified)."""
    try:
        results = XAdESVerifier().verify(data, ca_pem_file=ca_pem_file,
                                         expect_config=XAdESSignatureConfiguration(expect_references=3))
    except Exception as exc:   # signxml raises several exception types for a bad signature
        raise SignatureError(f"the signature does not verify: {exc}") from exc
    for result in results:
        signed = result.signed_xml
        if signed is None:
            continue
        manifest = signed if signed.tag == f"{{{DS}}}Manifest" else signed.find(f"{{{DS}}}Manifest")
        if manifest is not None:
            return manifest
    raise SignatureError("the signature signs no ds:Manifest")


def check_manifest(manifest: etree._Element, submission_set_uid: str, documents: dict[str, bytes]) -> list[str]:
    """Differences between a signed manifest and the submission (empty: it matches)."""
    problems = []
    signed_docs: dict[str, str] = {}
    set_ref = None
    for ref in manifest.findall(f"{{{DS}}}Reference"):
        uri = ref.get("URI", "")
        method = ref.find(f"{{{DS}}}DigestMethod")
        if method is None or method.get("Algorithm") != SHA256:
            problems.append(f"reference {uri}: digest method must be SHA-256")
            continue
        digest = (ref.findtext(f"{{{DS}}}DigestValue") or "").strip()
        if ref.get("Type") == SUBMISSION_SET_TYPE:
            set_ref = (uri, digest)
        else:
            signed_docs[uri.removeprefix("urn:oid:")] = digest
    if set_ref is None or set_ref[0] != f"urn:oid:{submission_set_uid}":
        problems.append(f"the signature does not name SubmissionSet {submission_set_uid}")
    elif set_ref[1] != set_digest(submission_set_uid, list(documents)):
        problems.append("the signed list of the SubmissionSet's documents differs from the submission")
    for uid in sorted(set(documents) - set(signed_docs)):
        problems.append(f"document {uid} is not covered by the signature")
    for uid in sorted(set(signed_docs) - set(documents)):
        problems.append(f"the signature covers document {uid}, absent from the submission")
    for uid in sorted(set(documents) & set(signed_docs)):
        if signed_docs[uid] != _b64_sha256(documents[uid]):
            problems.append(f"document {uid} differs from the signed one")
    return problems


def check_submission(settings, actor, request: SubmissionRequest) -> list[XdsError]:
    """Verify every DSG signature document of a provided submission (ITI-41, ITI-65)."""
    signatures = [d for d in request.documents if is_signature(d)]
    if not signatures:
        if getattr(settings, "require_signed_submissions", False) and actor.kind in (
                PROFESSIONAL, CONNECTOR, PATIENT, REPRESENTATIVE):
            return [XdsError(ErrorCode.REPOSITORY_METADATA,
                             "this registry requires signed submission sets (IHE DSG detached signature)")]
        return []
    if not settings.trust:
        if settings.insecure_dev:
            log.warning("submission signature of %s not verified: no --trust (insecure development mode)",
                        request.submission_set.unique_id)
            return []
        return [XdsError(ErrorCode.REPOSITORY_METADATA,
                         "a submission signature cannot be verified: no trusted CA is configured (--trust)")]
    errors = []
    ss = request.submission_set
    for sig in signatures:
        content = request.contents.get(sig.entry_uuid)
        if content is None:
            continue   # ITI-42: the repository verified it
        others = {d.unique_id: _read(request.contents[d.entry_uuid]) for d in request.documents
                  if d is not sig and d.entry_uuid in request.contents and not is_signature(d)}
        try:
            manifest = verify_signature(_read(content), settings.trust)
            problems = check_manifest(manifest, ss.unique_id, others)
        except SignatureError as exc:
            problems = [str(exc)]
        signed_uids = {uid for uid, _ in others.items()}
        by_uuid = {d.entry_uuid: d.unique_id for d in request.documents}
        for assoc in request.associations:
            if (assoc.association_type == AssociationType.SIGNS and assoc.source_uuid == sig.entry_uuid
                    and by_uuid.get(assoc.target_uuid) not in signed_uids):
                problems.append(f"`signs` association to {assoc.target_uuid}, which the manifest does not cover")
        errors += [XdsError(ErrorCode.REPOSITORY_METADATA, f"submission signature: {p}", sig.entry_uuid)
                   for p in problems]
    return errors
