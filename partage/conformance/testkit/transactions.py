"""Build each transaction's request from its template, as the toolkit does, and send it.

The order of the toolkit's BasicTransaction.prepareMetadata is kept, because plans
depend on it: test parameters and UseReport values first; then, for submissions,
$now$/$lastyear$, the patient id, UseId values, fresh uniqueIds, the sourceId, fresh
entryUUIDs (AssignUuids), UseId values again; finally ebRIM 2.1 templates are
converted to 3.0. Queries, retrieves and removals only get the substitutions.
"""

from __future__ import annotations

import base64
import mimetypes
import re
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from lxml import etree

from ...ebxml import constants as C
from ...ebxml.mtom import Attachment, xop_includes
from ...xmlsafe import parse_xml
from . import rim
from .assertions import RetrievedDocument
from .client import SoapClient, SoapResponse
from .context import (
    PATIENT_PARAM,
    NotRun,
    SectionLog,
    TestRun,
    resolve_use_id,
    resolve_use_report,
    substitute,
)
from .plan import Step, Transaction, resolve_file

SUBMISSIONS = {"RegisterTransaction", "ProvideAndRegisterTransaction", "MuTransaction", "RmuTransaction"}
# transaction -> (SOAP action, endpoint, top element of the answer)
ROUTES = {
    "RegisterTransaction": (C.ACTION_REGISTER, "registry", "RegistryResponse"),
    "ProvideAndRegisterTransaction": (C.ACTION_PNR, "repository", "RegistryResponse"),
    "StoredQueryTransaction": (C.ACTION_STORED_QUERY, "registry", "AdhocQueryResponse"),
    "RetrieveTransaction": (C.ACTION_RETRIEVE, "repository", "RetrieveDocumentSetResponse"),
    "MuTransaction": (C.ACTION_UPDATE, "registry", "RegistryResponse"),
    "RmuTransaction": (C.ACTION_RESTRICTED_UPDATE, "registry", "RegistryResponse"),
    "RemoveMetadataTransaction": (C.ACTION_REMOVE_METADATA, "registry", "RegistryResponse"),
}
PLACEHOLDER = re.compile(r"\$[A-Za-z][A-Za-z0-9_]*\$")
PARAM_HINTS = {"$repuid$": "give --repository-uid (the repository's uniqueId)"}


@dataclass
class Endpoints:
    registry: str
    repository: str


@dataclass
class Prepared:
    """A request ready to send, with what was assigned and substituted on the way."""

    request: etree._Element
    attachments: list[Attachment] = field(default_factory=list)
    assigned: dict[str, dict[str, str]] = field(default_factory=dict)
    substitutions: dict[str, str] = field(default_factory=dict)


def standard_linkage() -> dict[str, str]:
    """$now$ and $lastyear$ (UTC, as XDS times are).

    $now$ is a few seconds ahead: the toolkit's query data was loaded long before, here
    it is loaded moments before the query, and ITI-18 time ranges exclude their upper
    bound, so an object updated in this very second must still fall inside.
    """
    now = datetime.now(UTC) + timedelta(seconds=5)
    stamp = "%Y%m%d%H%M%S"
    return {"$now$": now.strftime(stamp), "$lastyear$": (now - timedelta(days=365)).strftime(stamp)}


def use_report_values(run: TestRun, log: SectionLog, tx: Transaction) -> dict[str, str]:
    return {use.use_as: resolve_use_report(run.session, run, log, use) for use in tx.use_reports}


def use_id_values(run: TestRun, log: SectionLog, tx: Transaction) -> dict[str, str]:
    return {use.symbol: resolve_use_id(run.session, log, use) for use in tx.use_ids}


def load_template(log: SectionLog, run: TestRun, tx: Transaction) -> etree._Element:
    section = run.test.section(log.section)
    if not tx.metadata_file:
        raise NotRun(f"{tx.kind} has no MetadataFile")
    path = resolve_file(section.directory, tx.metadata_file)
    if path is None:
        raise NotRun(f"MetadataFile {tx.metadata_file} not found in {section.directory}")
    root = parse_xml(path.read_bytes())
    if run.session.code_map is not None:
        run.session.code_map.translate(tx.kind, root, section.directory)
    return root


def prepare(run: TestRun, log: SectionLog, step: Step, tx: Transaction) -> Prepared:
    """The request for a step, following the toolkit's order of substitutions and assignments."""
    root = load_template(log, run, tx)
    template_text = etree.tostring(root, encoding="unicode")
    reported = use_report_values(run, log, tx)
    # Test parameters first, except where the plan names its own value with a UseReport.
    needed = [p for p in PLACEHOLDER.findall(template_text) if p not in reported]
    params = {k: v for k, v in run.params(needed).items() if k not in reported}
    substitute(root, params)
    substitute(root, reported)
    standard = standard_linkage()
    prepared = Prepared(request=root, substitutions={**params, **reported, **standard})
    ids = use_id_values(run, log, tx)
    prepared.substitutions.update(ids)

    if tx.kind in SUBMISSIONS and tx.parse_metadata:
        objects = rim.top_objects(root)
        substitute(root, standard)
        session = run.session
        if tx.assign_patient_id:
            prepared.assigned["AssignedPatientId"] = rim.assign_patient_id(
                objects, _submission_patient(run, step, reported))
        substitute(root, ids)
        if tx.assign_uids:
            prepared.assigned["AssignedUids"] = rim.assign_unique_ids(
                objects, session.ids.unique_id, skip_id=tx.no_assign_uid_to,
                keep_schemes=frozenset(tx.uuid_exclusions))
        prepared.assigned["AssignedSourceId"] = rim.assign_source_id(objects, session.ids.source_id)
        if tx.assign_uuids:
            prepared.assigned["AssignedUuids"] = rim.assign_uuids(objects)
        substitute(root, ids)
        substitute(root, standard)
        if tx.no_convert:
            request = root
        else:
            request = rim.submit_objects_request(root, objects)
    else:
        substitute(root, standard)
        substitute(root, ids)
        request = root

    if tx.kind == "ProvideAndRegisterTransaction":
        request, prepared.attachments = _provide_and_register(run, log, tx, request,
                                                              prepared.assigned.get("AssignedUuids", {}))
    prepared.request = request
    _refuse_placeholders(request)
    return prepared


def _submission_patient(run: TestRun, step: Step, reported: dict[str, str]) -> str:
    """The patient id written into a submission: AltPatientId's, else the one the plan names.

    In the toolkit the test parameter $patientid$ and the forced PatientId are the same
    session patient. When a step names its own $patientid$ with a UseReport (20000d takes
    15818's), that patient is the one it means, so it is also the one assigned.
    """
    if step.alt_patient_id:
        if not run.alt_patient:
            raise NotRun("AltPatientId without an alternate patient id")
        return run.alt_patient
    return reported.get(PATIENT_PARAM) or run.patient_id()


def _provide_and_register(run: TestRun, log: SectionLog, tx: Transaction, submit: etree._Element,
                          uuids: dict[str, str]) -> tuple[etree._Element, list[Attachment]]:
    wrapper = etree.Element(f"{{{C.XDSB}}}ProvideAndRegisterDocumentSetRequest",
                            nsmap={"xdsb": C.XDSB, "xop": C.XOP})
    wrapper.append(submit if rim.local(submit) == "SubmitObjectsRequest" else
                   next(e for e in submit.iter() if rim.local(e) == "SubmitObjectsRequest"))
    section = run.test.section(log.section)
    mime_types = {eo.get("id"): eo.get("mimeType") for eo in wrapper.iter()
                  if rim.local(eo) == "ExtrinsicObject"}
    attachments = []
    for index, (doc_id, file_name) in enumerate(tx.documents):
        path = resolve_file(section.directory, file_name)
        if path is None:
            raise NotRun(f"Document file {file_name} not found in {section.directory}")
        entry_id = uuids.get(doc_id, doc_id)
        cid = f"doc{index}.{uuid.uuid4().hex}@partage-testkit"
        content_type = mime_types.get(entry_id) or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        document = etree.SubElement(wrapper, f"{{{C.XDSB}}}Document", id=entry_id)
        etree.SubElement(document, f"{{{C.XOP}}}Include", href=f"cid:{cid}")
        attachments.append(Attachment(cid, content_type, path))
    return wrapper, attachments


def _refuse_placeholders(request: etree._Element) -> None:
    """A $symbol$ left in a request means a parameter the runner could not supply."""
    texts = []
    for element in request.iter():
        if isinstance(element.tag, str):   # comments may keep placeholders: they are not sent data
            texts += [element.text or "", element.tail or "", *element.attrib.values()]
        else:
            texts.append(element.tail or "")
    left = sorted(set(PLACEHOLDER.findall("\n".join(texts))))
    if left:
        hints = [PARAM_HINTS[p] for p in left if p in PARAM_HINTS]
        raise NotRun(f"template parameter(s) {', '.join(left)} have no value"
                     + (f" ({'; '.join(hints)})" if hints else ""))


def send(client: SoapClient, endpoints: Endpoints, tx: Transaction, prepared: Prepared) -> SoapResponse:
    action, endpoint, _ = ROUTES[tx.kind]
    if tx.wait_before_ms:
        time.sleep(tx.wait_before_ms / 1000)
    url = getattr(endpoints, endpoint)
    if not url:
        raise NotRun(f"{tx.kind} goes to the {endpoint}: give --{endpoint} URL")
    mtom = tx.kind in ("ProvideAndRegisterTransaction", "RetrieveTransaction")
    return client.call(url, action, prepared.request, prepared.attachments, mtom=mtom)


def retrieved_documents(response: SoapResponse) -> list[RetrievedDocument]:
    """The DocumentResponse elements of a retrieve answer, with their bytes (XOP or inline)."""
    documents: list[RetrievedDocument] = []
    if response.body is None:
        return documents
    for item in response.body.iter(f"{{{C.XDSB}}}DocumentResponse"):
        content = None
        document = item.find(f"{{{C.XDSB}}}Document")
        if document is not None:
            includes = xop_includes(document)
            if includes:
                part = response.parts.get(includes[0][1])
                content = part.read() if part is not None else None
            else:
                try:
                    content = base64.b64decode("".join((document.text or "").split()), validate=True)
                except ValueError:
                    content = None
        documents.append(RetrievedDocument(
            repository_id=(item.findtext(f"{{{C.XDSB}}}RepositoryUniqueId") or "").strip(),
            unique_id=(item.findtext(f"{{{C.XDSB}}}DocumentUniqueId") or "").strip(),
            mime_type=(item.findtext(f"{{{C.XDSB}}}mimeType") or "").strip(),
            content=content))
    return documents
