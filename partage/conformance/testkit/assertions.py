"""The checks a test plan makes on a response, each returning its mismatches as text.

ExpectedStatus, ExpectedErrorCode and ExpectedErrorMessage follow the toolkit's
BasicTransaction; ExpectedContents its Validator; Assertions its AssertionEngine (XPath
1.0 over the section's log, true when the string value is "true"); retrieved documents
are compared with the query metadata and the ReferenceDocument files. An empty list
means the response is what the plan expects.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass

from lxml import etree

from ...ebxml import constants as C
from ...ebxml.soap import SoapError
from .context import substitute_text, xpath_string
from .plan import Assertion, Step, UseId
from .rim import Objects, children, local, simple_status, simple_type

EBRS_STATUS_NS = "urn:oasis:names:tc:ebxml-regrep:ResponseStatusType:"
IHE_STATUS_NS = "urn:ihe:iti:2007:ResponseStatusType:"


@dataclass(frozen=True)
class RegistryError:
    code: str
    context: str
    severity: str

    @property
    def is_error(self) -> bool:
        return not self.severity or self.severity.endswith("Error")

    def __str__(self) -> str:
        return f"{self.code}: {' '.join(self.context.split())}" if self.context else self.code


def registry_response(body: etree._Element | None) -> etree._Element | None:
    """The element carrying @status and RegistryErrorList (nested in a Retrieve response)."""
    if body is None:
        return None
    if local(body) == "RetrieveDocumentSetResponse":
        nested = children(body, "RegistryResponse")
        return nested[0] if nested else None
    return body


def registry_errors(body: etree._Element | None) -> list[RegistryError]:
    holder = registry_response(body)
    if holder is None:
        return []
    errors = []
    for error_list in children(holder, "RegistryErrorList"):
        for error in children(error_list, "RegistryError"):
            errors.append(RegistryError(error.get("errorCode", ""),
                                        error.get("codeContext", "") or (error.text or "").strip(),
                                        error.get("severity", "")))
    return errors


def _status_word(value: str) -> str:
    return value.rpartition(":")[2].strip().lower()


def check_response(step: Step, body: etree._Element | None, fault: SoapError | None,
                   expected_top: str) -> list[str]:
    """ExpectedStatus, error codes and messages, the response's top element."""
    expected = [_status_word(s) for s in step.expected_status] or ["success"]
    if fault is not None:
        if "fault" in expected:
            return []
        sub = f" {fault.subcode}" if fault.subcode else ""
        return [f"SOAP Fault ({fault.code}{sub}): {fault.reason}"]
    if "fault" in expected:
        return ["expected a SOAP Fault, got a normal response"]
    if body is None:
        return ["empty SOAP body"]
    if local(body) != expected_top:
        return [f"response is {local(body)}, expected {expected_top}"]
    holder = registry_response(body)
    status = holder.get("status", "") if holder is not None else ""
    errors = registry_errors(body)
    real_errors = [e for e in errors if e.is_error]
    problems = []
    word = _status_word(status)
    namespace_ok = status.startswith(EBRS_STATUS_NS) or (word == "partialsuccess"
                                                         and status.startswith(IHE_STATUS_NS))
    wanted = " or ".join(s for s in step.expected_status) or "Success"
    if not status:
        problems.append("response has no status attribute")
    elif not namespace_ok:
        problems.append(f"status {status!r} is not an ebRS ResponseStatusType value (expected {wanted})")
    elif word not in expected:
        detail = f" ({'; '.join(str(e) for e in real_errors[:3])})" if real_errors else ""
        problems.append(f"status {word_case(word)}, expected {wanted}{detail}")
    if expected == ["success"] and real_errors and not problems:
        problems.append("response to a step expected to succeed carries errors: "
                        + "; ".join(str(e) for e in real_errors[:3]))
    codes = [e.code for e in errors]
    for code in step.expected_error_codes:
        if code not in codes:
            problems.append(f"expected error code {code}, got {', '.join(codes) or 'no error'}")
    texts = [t for e in real_errors for t in (e.context, e.code)]
    for message in step.expected_error_messages:
        if not any(message in t for t in texts):
            problems.append(f"expected an error mentioning {message!r}, got "
                            f"{'; '.join(str(e) for e in real_errors) or 'no error'}")
    return problems


def word_case(word: str) -> str:
    return {"success": "Success", "failure": "Failure", "partialsuccess": "PartialSuccess"}.get(word, word)


# --------------------------------------------------------------------------- ExpectedContents
class ContentsCheck:
    """The toolkit Validator's predicates over the objects a stored query returned.

    Errors accumulate across the predicates of one ExpectedContents, as in the
    toolkit (the None predicate looks at errors found so far).
    """

    def __init__(self, body: etree._Element | None, resolve: Callable[[UseId], str]) -> None:
        self.m = Objects(body)
        self.resolve = resolve
        self.errors: list[str] = []

    def run(self, expected: etree._Element) -> list[str]:
        for predicate in children(expected):
            name = local(predicate)
            count = int(predicate.get("count", "-1"))
            if name == "DocumentEntries":
                self.document_entries(predicate)
            else:
                getattr(self, "p_" + name)(count)
        return self.errors

    def err(self, message: str) -> None:
        self.errors.append(message)

    # counts ---------------------------------------------------------------------
    def _count(self, what: str, found: Sized, count: int) -> bool:
        if len(found) != count:
            self.err(f"found {len(found)} {what} instead of {count}")
            return False
        return True

    def the_submission_set(self) -> etree._Element | None:
        """The SubmissionSet returned, or None after noting that there is none."""
        if self.m.submission_set is None:
            self.err("no SubmissionSet found")
        return self.m.submission_set

    def has_submission_set(self) -> bool:
        return self.the_submission_set() is not None

    def has_no_submission_set(self) -> None:
        if self.m.submission_set is not None:
            self.err("a SubmissionSet was returned")

    def _association(self, source: etree._Element, target_ids: set[str | None],
                     kind: str) -> etree._Element | None:
        """The first `kind` association from `source` to one of `target_ids`, or None."""
        type_uri = C.ASSOCIATION_HAS_MEMBER if kind == "HasMember" else rim_ihe(kind)
        for a in self.m.associations:
            if (a.get("sourceObject") == source.get("id") and a.get("targetObject") in target_ids
                    and a.get("associationType") == type_uri):
                return a
        return None

    def has_association(self, source: etree._Element, target: etree._Element,
                        kind: str) -> etree._Element | None:
        found = self._association(source, {target.get("id")}, kind)
        if found is None:
            self.err(f"{kind} association missing from {self.m.describe(source.get('id'))} "
                     f"to {self.m.describe(target.get('id'))}")
        return found

    def has_association_to_one_of(self, source: etree._Element, targets: Iterable[etree._Element],
                                  kind: str) -> etree._Element | None:
        ids = {t.get("id") for t in targets}
        found = self._association(source, ids, kind)
        if found is not None:
            return found
        self.err(f"{kind} association missing from {self.m.describe(source.get('id'))} to one of "
                 f"{', '.join(sorted(self.m.describe(i) for i in ids if i)) or 'nothing'}")
        return None

    def status_is(self, obj: etree._Element, wanted: str, what: str) -> bool:
        status = simple_status(obj.get("status"))
        if status != wanted:
            self.err(f"{what} {obj.get('id')} has status {status or 'none'} instead of {wanted}")
            return False
        return True

    def all_with_status(self, objects: Iterable[etree._Element], wanted: str, what: str) -> None:
        """Each object has status `wanted`; only the first that has not is reported."""
        for obj in objects:
            if not self.status_is(obj, wanted, what):
                return

    def submission_set_holding(self, documents: int, folders: int,
                               associations: int) -> etree._Element | None:
        """The SubmissionSet, when it came with that many DocumentEntries and Folders and no
        error so far; then the associations are counted too. None otherwise."""
        self.has_submission_set()
        self._count("Documents", self.m.documents, documents)
        self._count("Folders", self.m.folders, folders)
        ss = self.m.submission_set
        if self.errors or ss is None:
            return None
        self._count("Associations", self.m.associations, associations)
        return ss

    # predicates -----------------------------------------------------------------
    def ss_one_doc(self) -> None:
        self.has_submission_set()
        self._count("Documents", self.m.documents, 1)
        self._count("Associations", self.m.associations, 1)
        if not self.errors and self.m.submission_set is not None:
            self.has_association(self.m.submission_set, self.m.documents[0], "HasMember")

    def ss_two_docs(self) -> None:
        # The toolkit's ss2Doc returns early once the first HasMember is found; both are checked here.
        self.has_submission_set()
        self._count("Documents", self.m.documents, 2)
        self._count("Associations", self.m.associations, 2)
        if not self.errors and self.m.submission_set is not None:
            for document in self.m.documents:
                self.has_association(self.m.submission_set, document, "HasMember")

    def p_SSwithOneDoc(self, _: int) -> None:
        self.ss_one_doc()
        self.p_SSApproved(_)

    def p_SSwithOneDocOnly(self, _: int) -> None:
        self.ss_one_doc()

    def p_SSwithTwoDocOnly(self, _: int) -> None:
        self.ss_two_docs()

    def p_SSwithTwoDoc(self, _: int) -> None:
        self.ss_two_docs()
        self.p_SSApproved(_)

    def p_NoSubmissionSet(self, _: int) -> None:
        self.has_no_submission_set()

    def p_NoDocument(self, _: int) -> None:
        self._count("Documents", self.m.documents, 0)

    def p_SSApproved(self, _: int) -> None:
        submission_set = self.the_submission_set()
        if submission_set is not None:
            self.status_is(submission_set, "Approved", "SubmissionSet")

    def p_DocDep(self, _: int) -> None:
        self.all_with_status(self.m.documents, "Deprecated", "DocumentEntry")

    def p_DocApp(self, _: int) -> None:
        self.all_with_status(self.m.documents, "Approved", "DocumentEntry")

    def p_FolApp(self, _: int) -> None:
        self.all_with_status(self.m.folders, "Approved", "Folder")

    def p_FolDep(self, _: int) -> None:
        self.all_with_status(self.m.folders, "Deprecated", "Folder")

    def _one_with_status(self, wanted: str) -> None:
        found = sum(1 for d in self.m.documents if simple_status(d.get("status")) == wanted)
        if found != 1:
            self.err(f"found {found} {wanted} DocumentEntries instead of one")

    def p_OneDocDep(self, _: int) -> None:
        self._one_with_status("Deprecated")

    def p_OneDocApp(self, _: int) -> None:
        self._one_with_status("Approved")

    def _unique_relationship(self, kind: str) -> None:
        targets = [a.get("targetObject") for a in self.m.associations
                   if simple_type(a.get("associationType")) == kind]
        if not targets:
            self.err(f"{kind} association not found")
        elif len(set(targets)) != len(targets):
            self.err(f"several {kind} associations target the same DocumentEntry")

    def p_HasRPLC(self, _: int) -> None:
        self._unique_relationship("RPLC")

    def p_HasXFRM_RPLC(self, _: int) -> None:
        self._unique_relationship("XFRM_RPLC")

    def p_HasAPND(self, _: int) -> None:
        self._unique_relationship("APND")

    def p_DocRplcDoc(self, _: int) -> None:
        self._count("Documents", self.m.documents, 2)
        self._count("Associations", self.m.associations, 1)
        if len(self.m.documents) != 2:
            return
        first, second = self.m.documents
        new, old = (first, second) if simple_status(first.get("status")) == "Approved" else (second, first)
        self.has_association(new, old, "RPLC")
        self.status_is(old, "Deprecated", "DocumentEntry")

    def p_SSwithOneFol(self, _: int) -> None:
        ss = self.submission_set_holding(documents=0, folders=1, associations=1)
        if ss is not None:
            self.has_association(ss, self.m.folders[0], "HasMember")

    def p_SSwithOneDocOneFol(self, _: int) -> None:
        ss = self.submission_set_holding(documents=1, folders=1, associations=4)
        if ss is None:
            return
        doc, folder = self.m.documents[0], self.m.folders[0]
        self.has_association(ss, doc, "HasMember")
        self.has_association(ss, folder, "HasMember")
        folder_doc = self.has_association(folder, doc, "HasMember")
        self.has_association_to_one_of(ss, [folder_doc] if folder_doc is not None else [], "HasMember")

    def p_SSwithTwoDocOneFol(self, _: int) -> None:
        ss = self.submission_set_holding(documents=2, folders=1, associations=7)
        if ss is None:
            return
        folder = self.m.folders[0]
        folder_docs = []
        for doc in self.m.documents:
            self.has_association(ss, doc, "HasMember")
        self.has_association(ss, folder, "HasMember")
        for doc in self.m.documents:
            a = self.has_association(folder, doc, "HasMember")
            if a is not None:
                folder_docs.append(a)
        for a in list(folder_docs):
            self.has_association(ss, a, "HasMember")

    def p_SSwithTwoDocOneFolOneDocInFol(self, _: int) -> None:
        ss = self.submission_set_holding(documents=2, folders=1, associations=5)
        if ss is None:
            return
        folder = self.m.folders[0]
        for doc in self.m.documents:
            self.has_association(ss, doc, "HasMember")
        self.has_association(ss, folder, "HasMember")
        folder_doc = self.has_association_to_one_of(folder, self.m.documents, "HasMember")
        if folder_doc is not None:
            self.has_association(ss, folder_doc, "HasMember")

    def p_None(self, _: int) -> None:
        self.has_no_submission_set()
        self._count("Documents", self.m.documents, 0)
        self._count("Folders", self.m.folders, 0)
        if not self.errors:
            self._count("Associations", self.m.associations, 0)

    def p_ObjectRefs(self, count: int) -> None:
        self._count("ObjectRefs", self.m.object_refs, count)
        self.has_no_submission_set()
        self._count("Documents", self.m.documents, 0)
        self._count("Folders", self.m.folders, 0)
        self._count("Associations", self.m.associations, 0)

    def p_Documents(self, count: int) -> None:
        self._count("Documents", self.m.documents, count)

    def p_Folders(self, count: int) -> None:
        self._count("Folders", self.m.folders, count)

    def p_SubmissionSets(self, count: int) -> None:
        self._count("SubmissionSets", self.m.submission_sets, count)

    def p_Associations(self, count: int) -> None:
        self._count("Associations", self.m.associations, count)

    def p_HasSnapshotPattern(self, _: int) -> None:
        snapshots = [a for a in self.m.associations if simple_type(a.get("associationType")) == "IsSnapshotOf"]
        if len(snapshots) != 1:
            self.err(f"found {len(snapshots)} IsSnapshotOf associations instead of one")
            return
        source = self.m.by_id.get(snapshots[0].get("sourceObject"))
        target = self.m.by_id.get(snapshots[0].get("targetObject"))
        if source is None or target is None:
            self.err("the IsSnapshotOf association's DocumentEntries are not in the result")
            return
        self.status_is(source, "Approved", "snapshot DocumentEntry")
        self.status_is(target, "Approved", "on-demand DocumentEntry")
        if target.get("objectType") != C.OBJECT_TYPE_ON_DEMAND:
            self.err("the IsSnapshotOf target is not an On-Demand DocumentEntry")
        if source.get("objectType") != C.OBJECT_TYPE_STABLE:
            self.err("the IsSnapshotOf source is not a Stable DocumentEntry")

    def document_entries(self, element: etree._Element) -> None:
        """DocumentEntries/(MustOnlyInclude|Include|Exclude)/DocumentEntry and DocumentEntryType.

        The toolkit stops at the first entry found (so it never checks the type nor the
        MustOnlyInclude count); here every entry, its type and the count are checked.
        """
        for selection in children(element):
            mode = local(selection)
            if mode == "DocumentEntryType":
                wanted = (selection.text or "").strip()
                for doc in self.m.documents:
                    if doc.get("objectType") != wanted:
                        self.err(f"DocumentEntry {doc.get('id')} has objectType {doc.get('objectType')}, "
                                 f"expected {wanted}")
                continue
            matched = 0
            for entry in children(selection, "DocumentEntry"):
                found = None
                for part in children(entry):
                    if local(part) == "UseId":
                        use = UseId(symbol=part.get("symbol", ""), id=part.get("id", ""),
                                    step=part.get("step", ""), section=part.get("section", ""),
                                    testdir=part.get("testdir", ""), value=part.get("value", ""))
                        ident = self.resolve(use)
                        found = self.m.by_id.get(ident)
                        if found is not None and local(found) != "ExtrinsicObject":
                            found = None
                        if mode == "Exclude" and found is not None:
                            self.err(f"DocumentEntry {ident} was returned and should not have been")
                        elif mode != "Exclude" and found is None:
                            self.err(f"DocumentEntry {ident} was not returned")
                        matched += found is not None
                    elif local(part) == "DocumentEntryType" and found is not None:
                        wanted = (part.text or "").strip()
                        if found.get("objectType") != wanted:
                            self.err(f"DocumentEntry {found.get('id')} has objectType "
                                     f"{found.get('objectType')}, expected {wanted}")
            if mode == "MustOnlyInclude" and matched != len(self.m.documents):
                self.err(f"{len(self.m.documents)} DocumentEntries returned, only {matched} expected")


def rim_ihe(kind: str) -> str:
    return C.ASSOCIATION_TYPE_IHE + kind


# --------------------------------------------------------------------------- Assertions
def check_assertions(assertions: list[Assertion], data_refs: list[tuple[str, str]],
                     section_results: etree._Element, substitutions: Mapping[str, str]) -> list[str]:
    """Each Assert is an XPath 1.0 expression that must evaluate to "true".

    The data model is <Data><{as}>section log</{as}></Data> for each DataRef THIS, as
    the toolkit's AssertionEngine builds it.
    """
    data = etree.Element("Data")
    for _, name in data_refs:
        etree.SubElement(data, name or "output").append(copy.deepcopy(section_results))
    problems = []
    for assertion in assertions:
        expression = substitute_text(assertion.xpath, substitutions)
        try:
            value = xpath_string(data.xpath(expression))
        except etree.XPathError as exc:
            problems.append(f"assertion {assertion.id}: invalid XPath {expression!r}: {exc}")
            continue
        if value.lower() != "true":
            problems.append(f"assertion {assertion.id} is {value or 'empty'}: {expression}")
    return problems


# --------------------------------------------------------------------------- Retrieve
@dataclass
class RetrievedDocument:
    repository_id: str
    unique_id: str
    mime_type: str
    content: bytes | None


def check_retrieve(request: etree._Element, documents: list[RetrievedDocument], *,
                   expect_all: bool, reference_metadata: etree._Element | None,
                   reference_documents: Mapping[str, bytes]) -> list[str]:
    """Retrieved bytes against the request, the query metadata and the reference files.

    (The toolkit computes these checks but a bug keeps them from failing a step; they
    are enforced here.)
    """
    problems = []
    requested = {}
    for item in request.iter(f"{{{C.XDSB}}}DocumentRequest"):
        requested[(item.findtext(f"{{{C.XDSB}}}DocumentUniqueId") or "").strip()] = \
            (item.findtext(f"{{{C.XDSB}}}RepositoryUniqueId") or "").strip()
    if expect_all and len(documents) != len(requested):
        problems.append(f"requested {len(requested)} documents, got {len(documents)}")
    metadata = {}
    if reference_metadata is not None:
        for entry in Objects(reference_metadata).documents:
            for identifier in entry.iter():
                if local(identifier) == "ExternalIdentifier" and \
                        identifier.get("identificationScheme") == C.DOC_UNIQUE_ID:
                    metadata[identifier.get("value")] = entry
    for doc in documents:
        label = f"document {doc.unique_id}"
        if doc.unique_id not in requested:
            problems.append(f"{label} was returned but not requested")
            continue
        if requested[doc.unique_id] != doc.repository_id:
            problems.append(f"{label}: RepositoryUniqueId {doc.repository_id!r}, requested "
                            f"{requested[doc.unique_id]!r}")
        if doc.content is None:
            problems.append(f"{label}: no document content")
            continue
        eo = metadata.get(doc.unique_id)
        if reference_metadata is not None and eo is None:
            problems.append(f"{label} is not in the query result it should match")
        if eo is not None:
            if eo.get("mimeType") and eo.get("mimeType") != doc.mime_type:
                problems.append(f"{label}: mimeType {doc.mime_type!r}, metadata says {eo.get('mimeType')!r}")
            slots = {s.get("name"): (s.findtext(".//{*}Value") or "").strip() for s in children(eo, "Slot")}
            digest = hashlib.sha1(doc.content).hexdigest()
            if slots.get("hash") and slots["hash"].lower() != digest:
                problems.append(f"{label}: SHA-1 {digest}, metadata hash {slots['hash']}")
            if slots.get("size") and slots["size"] != str(len(doc.content)):
                problems.append(f"{label}: {len(doc.content)} bytes, metadata size {slots['size']}")
        if doc.unique_id in reference_documents and reference_documents[doc.unique_id] != doc.content:
            problems.append(f"{label}: retrieved bytes differ from the document submitted "
                            f"({len(doc.content)} vs {len(reference_documents[doc.unique_id])} bytes)")
    return problems
