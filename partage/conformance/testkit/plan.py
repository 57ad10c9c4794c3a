"""The NIST test kit on disk, read into plain dataclasses.

A test is a folder (tests/<id>, testdata-registry/<name>, ...) holding readme.txt,
collections.txt, index.idx and one sub-folder per section with its testplan.xml. This
module only reads: it records every instruction a plan uses, and the ones the runner
cannot honour, so that such a test is reported "not run" instead of passing by
accident. Nothing here talks to a server.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from lxml import etree

from ...xmlsafe import parse_xml

TEST_AREAS = ("tests", "testdata-registry", "testdata-repository", "testdata", "examples", "selftest")
# The toolkit builds collections from the direct children of these folders only
# (BuildCollections.SECTIONS); tests elsewhere run only when named explicitly.
COLLECTION_AREAS = ("testdata", "tests", "examples", "selftest")

TRANSACTIONS = {
    "RegisterTransaction", "ProvideAndRegisterTransaction", "StoredQueryTransaction",
    "RetrieveTransaction", "MuTransaction", "RmuTransaction", "RemoveMetadataTransaction",
    "PatientIdentityFeedTransaction", "NullTransaction",
}
# ExpectedContents children the runner evaluates (the toolkit's Validator vocabulary).
CONTENT_PREDICATES = {
    "SSwithOneDoc", "SSwithOneDocOnly", "SSwithTwoDocOnly", "SSwithTwoDoc", "SSwithOneDocOneFol",
    "SSwithTwoDocOneFol", "SSwithTwoDocOneFolOneDocInFol", "SSwithOneFol", "NoSubmissionSet",
    "NoDocument", "SSApproved", "DocDep", "DocApp", "HasRPLC", "HasXFRM_RPLC", "HasAPND",
    "DocRplcDoc", "OneDocDep", "OneDocApp", "FolApp", "FolDep", "None", "ObjectRefs", "Documents",
    "Folders", "SubmissionSets", "Associations", "HasSnapshotPattern", "DocumentEntries",
}
_STEP_IGNORED = {"Rule", "Goal", "Standard"}
_TX_FLAGS = {"XDSb", "InteractionSequence", "NoMetadata"}


class PlanError(ValueError):
    """A test plan that cannot be read or refers to something that does not exist."""


@dataclass(frozen=True)
class UseId:
    """<UseId>: replace `symbol` with the id an earlier step assigned to object `id`."""

    symbol: str
    id: str = ""
    step: str = ""
    section: str = ""       # AssignedUids | AssignedUuids | AssignedPatientId | AssignedSourceId
    testdir: str = ""       # relative to the section folder; "" = this section
    value: str = ""         # a literal value instead of a look-up


@dataclass(frozen=True)
class UseReport:
    """<UseReport>: replace `use_as` with the value an earlier step published as `report_name`."""

    report_name: str
    use_as: str
    step: str
    section: str = ""       # "THIS" = the current section
    test: str = ""          # another test's id; "" = this test


@dataclass(frozen=True)
class Report:
    """<Report>: publish the string value of `xpath`, evaluated in the step's `section` output."""

    name: str
    section: str
    xpath: str


@dataclass(frozen=True)
class Assertion:
    id: str
    xpath: str


@dataclass
class Transaction:
    """One transaction element of a step and every instruction inside it."""

    kind: str
    element: etree._Element
    metadata_file: str | None = None
    documents: list[tuple[str, str]] = field(default_factory=list)        # (ExtrinsicObject id, file)
    use_ids: list[UseId] = field(default_factory=list)
    use_reports: list[UseReport] = field(default_factory=list)
    reports: list[Report] = field(default_factory=list)
    assign_uuids: bool = False
    uuid_exclusions: set[str] = field(default_factory=set)
    assign_uids: bool = True
    no_assign_uid_to: str | None = None
    assign_patient_id: bool = True
    parse_metadata: bool = True
    no_convert: bool = False
    no_metadata: bool = False
    create_new_patient_id: bool = False
    forced_patient_id: str | None = None
    wait_before_ms: int = 0
    expected_contents: etree._Element | None = None
    data_refs: list[tuple[str, str]] = field(default_factory=list)         # (file, as)
    assertions: list[Assertion] = field(default_factory=list)
    reference_documents: list[tuple[str, str]] = field(default_factory=list)  # (uid symbol, file)
    reference_metadata: tuple[str, str] | None = None                    # (testdir, step)
    xds_b: bool = False
    unsupported: list[str] = field(default_factory=list)


@dataclass
class Step:
    id: str
    expected_status: list[str] = field(default_factory=list)
    expected_error_codes: list[str] = field(default_factory=list)
    expected_error_messages: list[str] = field(default_factory=list)
    new_patient_id: bool = False
    alt_patient_id: bool = False
    goal: str = ""
    transaction: Transaction | None = None
    unsupported: list[str] = field(default_factory=list)


@dataclass
class Section:
    """One testplan.xml: a section of a test, or the whole test when it has no sections."""

    name: str
    directory: Path
    steps: list[Step]
    unsupported: list[str] = field(default_factory=list)

    def unsupported_features(self) -> list[str]:
        found = list(self.unsupported)
        for step in self.steps:
            found += step.unsupported
            if step.transaction is not None:
                found += step.transaction.unsupported
        return list(dict.fromkeys(found))


@dataclass
class TestDefinition:
    """A test folder: its identity, collections and sections in execution order."""

    id: str
    location: str            # folder relative to the test-kit root, POSIX style
    directory: Path
    title: str
    collections: list[str]
    section_names: list[str]
    all_section_names: list[str]
    _sections: dict[str, Section] = field(default_factory=dict, repr=False)

    def section(self, name: str) -> Section:
        if name not in self._sections:
            directory = self.directory if name == "." else self.directory / name
            plan = directory / "testplan.xml"
            if not plan.is_file():
                raise PlanError(f"test {self.id}: section {name!r} has no testplan.xml")
            self._sections[name] = parse_testplan(plan, name)
        return self._sections[name]

    def sections(self) -> list[Section]:
        return [self.section(name) for name in self.section_names]

    def section_location(self, name: str) -> str:
        return self.location if name == "." else posixpath.join(self.location, name)


class TestKit:
    """All tests of a test-kit folder, by id: the folder name under tests/, else its path."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise PlanError(f"test kit folder {self.root} does not exist")
        self.tests: dict[str, TestDefinition] = {}
        self._by_location: dict[str, str] = {}
        for area in TEST_AREAS:
            base = self.root / area
            if base.is_dir():
                self._scan(area, base)
        if not self.tests:
            raise PlanError(f"no tests found under {self.root} (expected tests/<id>/... folders)")

    def _scan(self, area: str, base: Path) -> None:
        for directory in sorted(p for p in base.rglob("*") if p.is_dir()):
            if not ((directory / "index.idx").is_file() or (directory / "testplan.xml").is_file()):
                continue
            relative = directory.relative_to(self.root).as_posix()
            if any(relative.startswith(known + "/") for known in self._by_location):
                continue   # a section folder of a test already found
            test_id = directory.name if area == "tests" and directory.parent == base else relative
            collections = []
            if area in COLLECTION_AREAS and directory.parent == base:
                collections = _words(directory / "collections.txt")
            names = _section_order(directory)
            self.tests[test_id] = TestDefinition(
                id=test_id, location=relative, directory=directory,
                title=_first_line(directory / "readme.txt"), collections=collections,
                section_names=names, all_section_names=_all_sections(directory))
            self._by_location[relative] = test_id

    def get(self, test_id: str) -> TestDefinition:
        try:
            return self.tests[test_id]
        except KeyError:
            raise PlanError(f"no test {test_id!r} in {self.root}") from None

    def collection(self, name: str) -> list[str]:
        return sorted((t.id for t in self.tests.values() if name in t.collections), key=_natural)

    def collections(self) -> list[str]:
        return sorted({c for t in self.tests.values() for c in t.collections})

    def locate(self, location: str) -> tuple[TestDefinition, str] | None:
        """(test, section name) of a section folder given relative to the kit root."""
        location = posixpath.normpath(location)
        if location in self._by_location:
            test = self.tests[self._by_location[location]]
            return (test, ".") if "." in test.all_section_names else None
        parent, name = posixpath.split(location)
        if parent in self._by_location:
            test = self.tests[self._by_location[parent]]
            if name in test.all_section_names:
                return test, name
        return None


def resolve_file(section_dir: Path, relative: str) -> Path | None:
    """A file named by a plan: relative to the section, else to the test folder above it.

    Six references in the kit only resolve the second way (tests/12021/retrieve, ...).
    """
    for base in (section_dir, section_dir.parent):
        candidate = (base / relative.strip()).resolve()
        if candidate.is_file():
            return candidate
    return None


# --------------------------------------------------------------------------- parsing
def parse_testplan(path: Path, section_name: str = ".") -> Section:
    """Read one testplan.xml into a Section (PlanError if it is not a readable plan)."""
    try:
        root = parse_xml(path.read_bytes())
    except ValueError as exc:
        raise PlanError(f"{path}: {exc}") from exc
    if root.tag != "TestPlan":
        raise PlanError(f"{path}: root element is {root.tag}, expected TestPlan")
    section = Section(name=section_name, directory=path.parent, steps=[])
    for child in _elements(root):
        if child.tag == "TestStep":
            section.steps.append(_parse_step(child, path))
        elif child.tag == "RegistryEndpoint":
            section.unsupported.append("RegistryEndpoint (the plan hard-codes its own endpoint)")
        elif child.tag not in ("Test", "Rule"):
            section.unsupported.append(f"TestPlan/{child.tag}")
    return section


def _parse_step(element: etree._Element, path: Path) -> Step:
    step_id = element.get("id")
    if not step_id:
        raise PlanError(f"{path}: TestStep without an id")
    step = Step(id=step_id)
    for child in _elements(element):
        name = child.tag
        if name == "ExpectedStatus":
            step.expected_status = [s.strip() for s in _text(child).split(",") if s.strip()]
        elif name == "ExpectedErrorCode":
            step.expected_error_codes.append(_text(child))
        elif name == "ExpectedErrorMessage":
            step.expected_error_messages.append(_text(child))
        elif name == "NewPatientId":
            step.new_patient_id = True
        elif name == "AltPatientId":
            step.alt_patient_id = True
        elif name == "Goal":
            step.goal = " ".join(_text(child).split())
        elif name in _STEP_IGNORED:
            continue
        elif name in TRANSACTIONS:
            if step.transaction is not None:
                step.unsupported.append("two transactions in one TestStep")
            step.transaction = _parse_transaction(child, path)
        elif name.endswith("Transaction"):
            step.unsupported.append(name)
        else:
            step.unsupported.append(f"TestStep/{name}")
    for status in step.expected_status:
        if status.rpartition(":")[2].lower() not in ("success", "failure", "partialsuccess", "fault"):
            step.unsupported.append(f"ExpectedStatus {status}")
    return step


def _parse_transaction(element: etree._Element, path: Path) -> Transaction:
    tx = Transaction(kind=element.tag, element=element)
    for child in _elements(element):
        name = child.tag
        if name in _TX_FLAGS:
            if name == "XDSb":
                tx.xds_b = True
            elif name == "NoMetadata":
                tx.no_metadata = True
        elif name == "MetadataFile":
            tx.metadata_file = _text(child)
        elif name == "Document" and tx.kind == "ProvideAndRegisterTransaction":
            if not child.get("id") or not _text(child):
                raise PlanError(f"{path}: Document needs an id and a file name")
            tx.documents.append((child.get("id", ""), _text(child)))
        elif name == "UseId":
            tx.use_ids.append(_use_id(child, path))
        elif name == "UseReport":
            tx.use_reports.append(_use_report(child, path))
        elif name == "Report":
            if not child.get("name"):
                raise PlanError(f"{path}: Report without a name")
            tx.reports.append(Report(child.get("name", ""), child.get("section", ""),
                                     " ".join(_text(child).split())))
        elif name == "AssignUuids":
            tx.assign_uuids = True
            tx.uuid_exclusions = {e.get("value", "") for e in child if e.tag == "Exclude" and e.get("value")}
        elif name == "NoAssignUids":
            if child.get("id"):
                tx.no_assign_uid_to = child.get("id")
            else:
                tx.assign_uids = False
        elif name == "NoPatientId":
            tx.assign_patient_id = False
        elif name == "ParseMetadata":
            tx.parse_metadata = _text(child) != "False"
        elif name == "NoConvert":
            tx.no_convert = True
        elif name == "CreateNewPatientId" and tx.kind == "PatientIdentityFeedTransaction":
            tx.create_new_patient_id = True
        elif name == "PatientID" and tx.kind == "PatientIdentityFeedTransaction":
            tx.forced_patient_id = _text(child)
        elif name == "WaitBefore":
            try:
                tx.wait_before_ms = int(_text(child))
            except ValueError:
                raise PlanError(f"{path}: WaitBefore {_text(child)!r} is not a number of milliseconds") from None
        elif name == "ExpectedContents" and tx.kind == "StoredQueryTransaction":
            tx.expected_contents = child
            for predicate in _elements(child):
                if predicate.tag not in CONTENT_PREDICATES:
                    tx.unsupported.append(f"ExpectedContents/{predicate.tag}")
                elif predicate.tag == "DocumentEntries":
                    tx.unsupported += _document_entries_unsupported(predicate)
        elif name == "ExpectedContents" and tx.kind == "RetrieveTransaction":
            if len(child):   # the toolkit never reads it; refuse anything it would ignore silently
                tx.unsupported.append("RetrieveTransaction/ExpectedContents with content")
        elif name == "Assertions":
            for part in _elements(child):
                if part.tag == "DataRef":
                    if part.get("file") != "THIS":
                        tx.unsupported.append(f"DataRef file={part.get('file')!r} (only THIS)")
                    tx.data_refs.append((part.get("file", ""), part.get("as", "")))
                elif part.tag == "Assert":
                    if part.get("process") or len(part):
                        tx.unsupported.append("Assert with a process or Validations")
                    tx.assertions.append(Assertion(part.get("id", ""), " ".join(_text(part).split())))
                else:
                    tx.unsupported.append(f"Assertions/{part.tag}")
        elif name == "ReferenceDocument" and tx.kind == "RetrieveTransaction":
            tx.reference_documents.append((child.get("uid", ""), _text(child)))
        elif name == "ReferenceMetadata" and tx.kind == "RetrieveTransaction":
            if not child.get("testdir") or not child.get("step"):
                raise PlanError(f"{path}: ReferenceMetadata needs testdir and step")
            tx.reference_metadata = (child.get("testdir", ""), child.get("step", ""))
        else:
            tx.unsupported.append(f"{tx.kind}/{name}")
    if not tx.xds_b and tx.kind not in ("NullTransaction", "PatientIdentityFeedTransaction"):
        tx.unsupported.append(f"{tx.kind} without XDSb (XDS.a is not supported)")
    return tx


def _document_entries_unsupported(element: etree._Element) -> list[str]:
    found = []
    for selection in _elements(element):
        if selection.tag == "DocumentEntryType":
            continue
        if selection.tag not in ("MustOnlyInclude", "Include", "Exclude"):
            found.append(f"DocumentEntries/{selection.tag}")
            continue
        for entry in _elements(selection):
            if entry.tag != "DocumentEntry":
                found.append(f"DocumentEntries/{selection.tag}/{entry.tag}")
                continue
            found += [f"DocumentEntry/{p.tag}" for p in _elements(entry)
                      if p.tag not in ("UseId", "DocumentEntryType")]
    return found


def _use_id(element: etree._Element, path: Path) -> UseId:
    use = UseId(symbol=element.get("symbol", ""), id=element.get("id", ""), step=element.get("step", ""),
                section=element.get("section", ""), testdir=element.get("testdir", ""),
                value=element.get("value", ""))
    if not use.symbol or not (use.value or (use.id and use.step and use.section)):
        raise PlanError(f"{path}: UseId needs symbol and either value or id, step and section")
    return use


def _use_report(element: etree._Element, path: Path) -> UseReport:
    use = UseReport(report_name=element.get("reportName", ""), use_as=element.get("useAs", ""),
                    step=element.get("step", ""), section=element.get("section", ""),
                    test=element.get("test", ""))
    if not (use.report_name and use.use_as and use.step):
        raise PlanError(f"{path}: UseReport needs reportName, useAs and step")
    return use


# --------------------------------------------------------------------------- files
def _elements(parent: etree._Element) -> Iterator[etree._Element]:
    return (c for c in parent if isinstance(c.tag, str))


def _text(element: etree._Element) -> str:
    return (element.text or "").strip()


def _words(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8", errors="replace").split() if path.is_file() else []


def _first_line(path: Path) -> str:
    if not path.is_file():
        return ""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.strip():
            return line.strip()
    return ""


def _all_sections(directory: Path) -> list[str]:
    names = sorted(p.name for p in directory.iterdir() if p.is_dir() and (p / "testplan.xml").is_file())
    if (directory / "testplan.xml").is_file():
        names.append(".")
    return names


def _section_order(directory: Path) -> list[str]:
    """index.idx order; without one, the plan at the test root or every section folder."""
    index = directory / "index.idx"
    if index.is_file():
        names = [line.strip() for line in index.read_text(encoding="utf-8", errors="replace").splitlines()]
        return [n for n in names if n and not n.startswith("#")]
    if (directory / "testplan.xml").is_file():
        return ["."]
    return _all_sections(directory)


def _natural(test_id: str) -> tuple[bool, int, str]:
    """Sort 11966 before 12021 before 12021a, and paths after plain ids."""
    head = test_id.split("/")[0]
    digits = "".join(c for c in head if c.isdigit())
    return ("/" in test_id, int(digits) if digits and head[0].isdigit() else 1 << 62, test_id)
