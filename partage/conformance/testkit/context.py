"""What one test run remembers: step logs, published reports, patient and object ids.

The toolkit chains steps through its log files: a step's output records the ids it
assigned (AssignedUids, AssignedUuids, AssignedPatientId, AssignedSourceId), its request
(InputMetadata) and response (Result), and the Reports it published. UseId, UseReport
and ReferenceMetadata read them back, within a section, across sections, and across
tests. Here the logs live in memory for the duration of one selected test and its
prerequisites (a Session); their XML form is the toolkit's, so the plans' XPaths work.
"""

from __future__ import annotations

import copy
import itertools
import posixpath
import random
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from .codes import CodeMap
from .plan import Report, TestDefinition, TestKit, UseId, UseReport
from .rim import attributes

PATIENT_PARAM = "$patientid$"
DEFAULT_AUTHORITY = "1.3.6.1.4.1.21367.2005.13.20.1000"   # first AssigningAuthority of the kit's codes.xml
DEFAULT_SOURCE_ID = "1.3.6.1.4.1.21367.4"                 # the toolkit's default sourceid.txt
# Which patient a test uses as "$patientid$", as the toolkit's registry orchestration
# assigns them: 15817 the register patient, 15817b the alternate one, 15818 the
# stored-query patient (also given to 12346), and the alternate one to 12374.
ROLE_BY_TEST = {"15817": "register", "15817b": "alternate", "15818": "query",
                "12346": "query", "12374": "alternate"}
ASSIGNED_SECTIONS = ("AssignedPatientId", "AssignedUids", "AssignedSourceId", "AssignedUuids")
_SKIPPED_BY_SUBSTITUTION = {"Report", "UseReport", "UseId"}
_XDSB_DOCUMENT = "{urn:ihe:iti:xds-b:2007}Document"


class NotRun(Exception):
    """The test cannot be run as asked: unsupported feature, missing option, broken plan."""


class LinkageError(NotRun):
    """A UseId / UseReport / ReferenceMetadata points at a log or value that does not exist."""


class EmptyValue(Exception):
    """A referenced report exists but is empty: the earlier response lacked the data."""


# --------------------------------------------------------------------------- logs
@dataclass
class StepLog:
    """One executed step, in the shape of the toolkit's log.xml TestStep element."""

    step_id: str
    transaction: str
    assigned: dict[str, dict[str, str]] = field(default_factory=dict)
    request: etree._Element | None = None
    result: etree._Element | None = None
    reports: dict[str, str] = field(default_factory=dict)
    passed: bool = True

    def output_xml(self) -> etree._Element:
        """<XxxTransaction step=..> with Assigned* sections, InputMetadata and Result."""
        output = etree.Element(self.transaction, step=self.step_id)
        for name in ASSIGNED_SECTIONS:
            if name in self.assigned:
                holder = etree.SubElement(output, name)
                for symbol, value in self.assigned[name].items():
                    etree.SubElement(holder, "Assign", symbol=symbol, id=value)
        if self.request is not None:
            etree.SubElement(output, "InputMetadata").append(copy.deepcopy(self.request))
        if self.result is not None:
            etree.SubElement(output, "Result").append(copy.deepcopy(self.result))
        return output

    def to_xml(self) -> etree._Element:
        step = etree.Element("TestStep", id=self.step_id, status="Pass" if self.passed else "Fail")
        step.append(self.output_xml())
        return step


@dataclass
class SectionLog:
    test_id: str
    section: str
    location: str
    steps: list[StepLog] = field(default_factory=list)

    def step(self, step_id: str) -> StepLog | None:
        for log in reversed(self.steps):
            if log.step_id == step_id:
                return log
        return None

    def to_xml(self) -> etree._Element:
        results = etree.Element("TestResults", test=self.test_id, section=self.section)
        for step in self.steps:
            results.append(step.to_xml())
        return results


# --------------------------------------------------------------------------- ids
class Patients:
    """Patient ids of one session: one per role, fed to the registry before first use.

    Ids look like the toolkit's (P<MMDDhhmmss>.<n>, assigning authority from codes.xml)
    with a random part so that two runs never share a patient.
    """

    def __init__(self, authority: str = DEFAULT_AUTHORITY,
                 feeder: Callable[[str], object] | None = None) -> None:
        self.authority = authority
        self.feeder = feeder
        self._roles: dict[str, str] = {}
        self._fed: set[str] = set()
        self._count = itertools.count(1)
        self._prefix = f"P{datetime.now(UTC):%m%d%H%M%S}{random.randrange(1000, 10000)}"

    def new_id(self) -> str:
        return f"{self._prefix}.{next(self._count)}^^^&{self.authority}&ISO"

    def for_role(self, role: str, *, feed: bool = True) -> str:
        if role not in self._roles:
            self._roles[role] = self.new_id()
        patient = self._roles[role]
        if feed:
            self.feed(patient)
        return patient

    def peek(self, role: str) -> str | None:
        return self._roles.get(role)

    def feed(self, patient: str) -> None:
        """Send the patient to the registry once (NotRun when no feed is configured)."""
        if patient in self._fed:
            return
        if self.feeder is None:
            raise NotRun("a patient id must be fed to the registry (ITI-8) first: give --mllp HOST:PORT")
        self.feeder(patient)
        self._fed.add(patient)

    def mark_fed(self, patient: str) -> None:
        self._fed.add(patient)


class Ids:
    """uniqueIds and the sourceId given to submissions.

    The toolkit allocates 1.2.42.<timestamp>.<n>; OIDs under 2.25 (ITU-T X.667, from a
    random UUID) are as valid and never collide between runs.
    """

    def __init__(self, source_id: str = DEFAULT_SOURCE_ID) -> None:
        self.source_id = source_id

    @staticmethod
    def unique_id() -> str:
        return f"2.25.{uuid.uuid4().int}"


# --------------------------------------------------------------------------- session
class Session:
    """Everything shared by one selected test and the prerequisite tests run for it."""

    def __init__(self, kit: TestKit, patients: Patients, ids: Ids,
                 params: Mapping[str, str] | None = None, code_map: CodeMap | None = None) -> None:
        self.kit = kit
        self.patients = patients
        self.ids = ids
        self.fixed_params = dict(params or {})
        self.code_map = code_map
        self.logs: dict[str, SectionLog] = {}
        self.results: dict[str, object] = {}   # test id -> its TestResult, once run
        self.submitted: dict[str, Path] = {}    # document uniqueId -> file provided for it

    def start_section(self, test: TestDefinition, section: str) -> SectionLog:
        log = SectionLog(test.id, section, test.section_location(section))
        self.logs[log.location] = log
        return log

    def find_log(self, current: SectionLog, testdir: str) -> SectionLog:
        """The log of `testdir` seen from the current section (then from its test folder)."""
        for base in (current.location, posixpath.dirname(current.location)):
            location = posixpath.normpath(posixpath.join(base, testdir))
            if location in self.logs:
                return self.logs[location]
        known = self.kit.locate(posixpath.normpath(posixpath.join(current.location, testdir))) or \
            self.kit.locate(posixpath.normpath(posixpath.join(posixpath.dirname(current.location), testdir)))
        if known is None:
            raise LinkageError(f"testdir {testdir!r} (from {current.location}) names no section of the test kit")
        raise LinkageError(f"section {known[0].id}/{known[1]} has not run in this session")


@dataclass
class TestRun:
    """One execution of a test definition within a session (a prerequisite, or the test)."""

    session: Session
    test: TestDefinition
    patient_override: str | None = None    # NewPatientId / CreateNewPatientId
    alt_patient: str | None = None         # AltPatientId

    @property
    def role(self) -> str:
        return ROLE_BY_TEST.get(self.test.id, "register")

    def patient_id(self) -> str:
        """The patient this test submits for (the toolkit's forced PatientId), fed on first use."""
        if self.patient_override:
            return self.patient_override
        return self.session.patients.for_role(self.role)

    def params(self, needed: Iterable[str] = ()) -> dict[str, str]:
        """The test's parameters ("extra linkage"): $patientid$ and the session's fixed ones.

        $patientid$ is only allocated (and fed) when `needed` names it or it exists already.
        """
        values = dict(self.session.fixed_params)
        current = self.patient_override or self.session.patients.peek(self.role)
        if current is None and PATIENT_PARAM in needed:
            current = self.patient_id()
        if current is not None:
            values[PATIENT_PARAM] = current
        return values


# --------------------------------------------------------------------------- linkage
def substitute(root: etree._Element, mapping: Mapping[str, str]) -> None:
    """Replace each key by its value in every text and attribute under `root`.

    As the toolkit's Linkage: Report, UseReport and UseId elements and the content of
    xdsb:Document are left alone.
    """
    pairs = [(k, v) for k, v in mapping.items() if k]
    if not pairs:
        return
    stack = [root]
    while stack:
        element = stack.pop()
        if not isinstance(element.tag, str):
            continue
        if etree.QName(element).localname in _SKIPPED_BY_SUBSTITUTION or element.tag == _XDSB_DOCUMENT:
            continue
        element.text = _replace(element.text, pairs)
        for name, value in attributes(element):
            new = _replace(value, pairs)
            if new is not None and new != value:
                element.set(name, new)
        for child in element:
            child.tail = _replace(child.tail, pairs)
            stack.append(child)


def substitute_text(text: str, mapping: Mapping[str, str]) -> str:
    return _replace(text, [(k, v) for k, v in mapping.items() if k]) or ""


def _replace(text: str | None, pairs: list[tuple[str, str]]) -> str | None:
    if not text:
        return text
    for old, new in pairs:
        if old in text:
            text = text.replace(old, new)
    return text


def resolve_use_id(session: Session, current: SectionLog, use: UseId) -> str:
    """The value a UseId stands for: a literal, or an id an earlier step assigned."""
    if use.value:
        return use.value
    log = session.find_log(current, use.testdir) if use.testdir else current
    step = log.step(use.step)
    where = f"{log.test_id}/{log.section} step {use.step}"
    if step is None:
        raise LinkageError(f"UseId {use.symbol}: no step {use.step!r} in {log.test_id}/{log.section}")
    section = step.assigned.get(use.section)
    if section is None:
        raise LinkageError(f"UseId {use.symbol}: {where} has no {use.section}")
    if use.id not in section:
        raise LinkageError(f"UseId {use.symbol}: {where} assigned nothing to {use.id!r} in {use.section}")
    return section[use.id]


def resolve_use_report(session: Session, run: TestRun, current: SectionLog, use: UseReport) -> str:
    """The value of a report an earlier step (of this or another test) published."""
    if use.section in ("THIS", "") and not use.test:
        log = current
    else:
        test = session.kit.get(use.test) if use.test else run.test
        location = test.section_location(use.section or ".")
        found = session.logs.get(location)
        if found is None:
            raise LinkageError(f"UseReport {use.use_as}: section {test.id}/{use.section} has not run")
        log = found
    step = log.step(use.step)
    if step is None:
        raise LinkageError(f"UseReport {use.use_as}: no step {use.step!r} in {log.test_id}/{log.section}")
    if use.report_name not in step.reports:
        raise LinkageError(f"UseReport {use.use_as}: {log.test_id}/{log.section} step {use.step} "
                           f"published no report {use.report_name!r}")
    value = step.reports[use.report_name]
    if not value:
        raise EmptyValue(f"report {use.report_name!r} of {log.test_id}/{log.section} step {use.step} is empty "
                         "(the earlier response did not contain what it names)")
    return value


def publish_reports(step: StepLog, reports: list[Report], params: Mapping[str, str]) -> None:
    """Fill step.reports: automatic <id>_uid / <id>_uuid, the test parameters, then plan Reports."""
    for symbol, value in step.assigned.get("AssignedUids", {}).items():
        step.reports[f"{symbol}_uid"] = value
    for symbol, value in step.assigned.get("AssignedUuids", {}).items():
        step.reports[f"{symbol}_uuid"] = value
    step.reports.update(params)
    if not reports:
        return
    output = step.output_xml()
    for report in reports:
        found = output.xpath("(//*[local-name()=$n])[1]", n=report.section)
        section = found[0] if isinstance(found, list) and found else None
        if not isinstance(section, etree._Element):
            step.reports[report.name] = ""
            continue
        try:
            step.reports[report.name] = xpath_string(section.xpath(report.xpath))
        except etree.XPathError:
            step.reports[report.name] = ""


def xpath_string(result: object) -> str:
    """An XPath 1.0 result as its string value (what Jaxen's stringValueOf returns)."""
    if isinstance(result, bool):
        return "true" if result else "false"
    if isinstance(result, float):
        return str(int(result)) if result.is_integer() else repr(result)
    if isinstance(result, list):
        if not result:
            return ""
        first = result[0]
        if isinstance(first, etree._Element):
            return "".join(t for t in first.itertext() if isinstance(t, str))
        return str(first)
    return "" if result is None else str(result)
