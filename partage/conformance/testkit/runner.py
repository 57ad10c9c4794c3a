"""Run test-kit tests against an XDS.b registry/repository and say how each went.

Each selected test runs in a fresh Session: its prerequisite tests first (the patient
feeds 15817/15817b/15818, the shared submissions 12346/12374, any test a UseReport or
UseId points into), then its own sections in index.idx order. A test stops at its first
failing step. A test using anything the runner does not support, or whose plan cannot
be followed, is "not run" with the reason; it never counts as passed.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from lxml import etree

from ...ebxml import constants as C
from ...xmlsafe import XmlInputError
from .assertions import ContentsCheck, check_assertions, check_response, check_retrieve
from .client import SoapClient, TransportError
from .codes import CodeMap
from .context import (
    PATIENT_PARAM,
    EmptyValue,
    Ids,
    NotRun,
    Patients,
    SectionLog,
    Session,
    StepLog,
    TestRun,
    publish_reports,
    resolve_use_id,
)
from .feed import FeedError
from .plan import Assertion, PlanError, Step, TestDefinition, TestKit, Transaction, resolve_file
from .rim import MetadataError
from .transactions import (
    ROUTES,
    Endpoints,
    Prepared,
    prepare,
    retrieved_documents,
    send,
    standard_linkage,
    use_report_values,
)

PASSED, FAILED, NOT_RUN = "passed", "failed", "not run"


@dataclass
class StepResult:
    id: str
    status: str
    detail: str = ""


@dataclass
class SectionResult:
    name: str
    status: str
    steps: list[StepResult] = field(default_factory=list)
    detail: str = ""


@dataclass
class TestResult:
    id: str
    status: str
    detail: str = ""
    sections: list[SectionResult] = field(default_factory=list)
    prerequisites: list[str] = field(default_factory=list)
    title: str = ""
    seconds: float = 0.0


@dataclass
class RunnerConfig:
    endpoints: Endpoints
    feeder: Callable[[str], object] | None = None
    authority: str = "1.3.6.1.4.1.21367.2005.13.20.1000"
    source_id: str = "1.3.6.1.4.1.21367.4"
    params: dict[str, str] = field(default_factory=dict)   # e.g. {"$repuid$": "1.2.3"}
    code_map: CodeMap | None = None                          # fit codes to the affinity domain
    log_dir: Path | None = None                              # write each section's log.xml there


class Runner:
    def __init__(self, kit: TestKit, config: RunnerConfig, client: SoapClient | None = None,
                 on_start: Callable[[str], None] | None = None,
                 on_result: Callable[[TestResult], None] | None = None) -> None:
        self.kit = kit
        self.config = config
        self.client = client or SoapClient()
        self.on_start = on_start
        self.on_result = on_result

    # ----------------------------------------------------------------------- tests
    def run(self, test_ids: list[str]) -> list[TestResult]:
        results = []
        for test_id in test_ids:
            if self.on_start:
                self.on_start(test_id)
            result = self.run_test(test_id)
            results.append(result)
            if self.on_result:
                self.on_result(result)
        return results

    def run_test(self, test_id: str) -> TestResult:
        started = time.monotonic()
        result = self._run_test(test_id)
        result.seconds = round(time.monotonic() - started, 3)
        return result

    def _run_test(self, test_id: str) -> TestResult:
        try:
            test = self.kit.get(test_id)
            order = prerequisites(self.kit, test)
            missing = unsupported(self.kit, [*order, test.id])
        except PlanError as exc:
            return TestResult(test_id, NOT_RUN, f"broken plan: {exc}")
        if missing:
            return TestResult(test_id, NOT_RUN, f"unsupported: {'; '.join(missing)}", title=test.title,
                              prerequisites=order)
        session = Session(self.kit, Patients(self.config.authority, self.config.feeder),
                          Ids(self.config.source_id), self.config.params, self.config.code_map)
        try:
            for dependency in order:
                done = self.run_definition(session, self.kit.get(dependency))
                if done.status != PASSED:
                    return TestResult(test_id, done.status, f"prerequisite {dependency}: {done.detail}",
                                      done.sections, order, test.title)
            result = self.run_definition(session, test)
            result.prerequisites = order
            return result
        finally:
            if self.config.log_dir is not None:
                write_logs(session, Path(self.config.log_dir) / _safe(test_id))

    def run_definition(self, session: Session, test: TestDefinition) -> TestResult:
        """Run every section of `test` in the session; stop at the first step that does not pass."""
        run = TestRun(session, test)
        result = TestResult(test.id, PASSED, title=test.title)
        for name in test.section_names:
            if result.status != PASSED:
                result.sections.append(SectionResult(name, NOT_RUN, detail="after an earlier failure"))
                continue
            try:
                section = test.section(name)
            except PlanError as exc:
                result.status, result.detail = NOT_RUN, f"broken plan: {exc}"
                result.sections.append(SectionResult(name, NOT_RUN, detail=str(exc)))
                continue
            log = session.start_section(test, name)
            outcome = SectionResult(name, PASSED)
            for step in section.steps:
                if outcome.status != PASSED:
                    outcome.steps.append(StepResult(step.id, NOT_RUN, "after an earlier failure"))
                    continue
                step_result = self.run_step(run, log, step)
                outcome.steps.append(step_result)
                if step_result.status != PASSED:
                    outcome.status, outcome.detail = step_result.status, step_result.detail
                    result.status = step_result.status
                    result.detail = f"{name}/{step.id}: {step_result.detail}"
            result.sections.append(outcome)
        session.results[test.id] = result
        return result

    # ----------------------------------------------------------------------- steps
    def run_step(self, run: TestRun, log: SectionLog, step: Step) -> StepResult:
        tx = step.transaction
        step_log = StepLog(step.id, tx.kind if tx is not None else "NoTransaction")
        patients = run.session.patients
        try:
            if step.new_patient_id:
                run.patient_override = patients.new_id()   # new and deliberately not fed
            if step.alt_patient_id:
                run.alt_patient = patients.new_id()
            if tx is None:
                problems = []
            elif tx.kind == "PatientIdentityFeedTransaction":
                problems = self._feed(run, step, tx, step_log)
            elif tx.kind == "NullTransaction":
                problems = self._null(run, log, tx, step_log)
            else:
                problems = self._exchange(run, log, step, tx, step_log)
        except EmptyValue as exc:
            return self._done(log, step_log, StepResult(step.id, FAILED, str(exc)))
        except NotRun as exc:
            return self._done(log, step_log, StepResult(step.id, NOT_RUN, str(exc)))
        except (PlanError, MetadataError, XmlInputError) as exc:
            return self._done(log, step_log, StepResult(step.id, NOT_RUN, f"cannot follow the plan: {exc}"))
        except (TransportError, FeedError) as exc:
            return self._done(log, step_log, StepResult(step.id, FAILED, str(exc)))
        if problems:
            step_log.passed = False
            more = f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""
            return self._done(log, step_log, StepResult(step.id, FAILED, problems[0] + more))
        return self._done(log, step_log, StepResult(step.id, PASSED))

    @staticmethod
    def _done(log: SectionLog, step_log: StepLog, result: StepResult) -> StepResult:
        step_log.passed = result.status == PASSED
        if step_log not in log.steps:
            log.steps.append(step_log)
        return result

    def _feed(self, run: TestRun, step: Step, tx: Transaction, step_log: StepLog) -> list[str]:
        patients = run.session.patients
        if tx.create_new_patient_id:
            patient = patients.new_id()
            run.patient_override = patient
        elif tx.forced_patient_id:
            patient = tx.forced_patient_id
        else:
            patient = run.patient_override or patients.for_role(run.role, feed=False)
        if self.config.feeder is None:
            raise NotRun("PatientIdentityFeedTransaction needs an MLLP listener: give --mllp HOST:PORT")
        expected = [s.rpartition(":")[2].lower() for s in step.expected_status] or ["success"]
        try:
            self.config.feeder(patient)
        except FeedError as exc:
            if "failure" in expected:
                return []
            return [str(exc)]
        patients.mark_fed(patient)
        step_log.reports[PATIENT_PARAM] = patient
        publish_reports(step_log, [], run.params())
        if "success" not in expected:
            return [f"the feed of {patient} was accepted, expected {', '.join(step.expected_status)}"]
        return []

    def _null(self, run: TestRun, log: SectionLog, tx: Transaction, step_log: StepLog) -> list[str]:
        substitutions = {**use_report_values(run, log, tx), "$DATE$": datetime.now(UTC).strftime("%Y%m%d")}
        log.steps.append(step_log)   # "THIS" includes the step being evaluated
        problems = check_assertions(self._assertions(run, tx), tx.data_refs, log.to_xml(), substitutions)
        if not problems:
            publish_reports(step_log, tx.reports, run.params())
        return problems

    def _exchange(self, run: TestRun, log: SectionLog, step: Step, tx: Transaction,
                  step_log: StepLog) -> list[str]:
        prepared = prepare(run, log, step, tx)
        step_log.assigned = prepared.assigned
        step_log.request = prepared.request
        reference_documents = self._reference_documents(run, log, tx, prepared.substitutions)
        response = send(self.client, self.config.endpoints, tx, prepared)
        step_log.result = response.body
        problems = check_response(step, response.body, response.fault, ROUTES[tx.kind][2])
        if tx.expected_contents is not None and response.fault is None and response.body is not None:
            problems += ContentsCheck(response.body,
                                      lambda use: resolve_use_id(run.session, log, use)).run(tx.expected_contents)
        if tx.kind == "RetrieveTransaction" and response.fault is None and response.body is not None:
            reference = None
            if tx.reference_metadata:
                testdir, step_id = tx.reference_metadata
                earlier = run.session.find_log(log, testdir).step(step_id)
                if earlier is None or earlier.result is None:
                    raise NotRun(f"ReferenceMetadata: no result for step {step_id} in {testdir}")
                reference = earlier.result
            expect_all = [s.rpartition(":")[2] for s in step.expected_status] in ([], ["Success"])
            problems += check_retrieve(prepared.request, retrieved_documents(response), expect_all=expect_all,
                                       reference_metadata=reference, reference_documents=reference_documents)
        if problems:
            return problems
        if tx.kind == "ProvideAndRegisterTransaction":
            self._remember_documents(run, log, tx, prepared)
        publish_reports(step_log, tx.reports, run.params())
        if tx.assertions:
            log.steps.append(step_log)
            substitutions = {**use_report_values(run, log, tx), **standard_linkage(),
                             "$DATE$": datetime.now(UTC).strftime("%Y%m%d")}
            problems = check_assertions(self._assertions(run, tx), tx.data_refs, log.to_xml(), substitutions)
        return problems

    @staticmethod
    def _assertions(run: TestRun, tx: Transaction) -> list[Assertion]:
        """The step's Asserts, with codes the CodeMap replaced in submissions replaced here too."""
        code_map = run.session.code_map
        if code_map is None:
            return tx.assertions
        return [Assertion(a.id, code_map.translate_expression(a.xpath)) for a in tx.assertions]

    @staticmethod
    def _remember_documents(run: TestRun, log: SectionLog, tx: Transaction, prepared: Prepared) -> None:
        """uniqueId -> file of each document provided, so a retrieve can be checked against it."""
        section = run.test.section(log.section)
        uuids = prepared.assigned.get("AssignedUuids", {})
        entries = {eo.get("id"): eo for eo in prepared.request.iter(f"{{{C.RIM}}}ExtrinsicObject")}
        for doc_id, file_name in tx.documents:
            entry = entries.get(uuids.get(doc_id, doc_id))
            path = resolve_file(section.directory, file_name)
            if entry is None or path is None:
                continue
            for identifier in entry.iter(f"{{{C.RIM}}}ExternalIdentifier"):
                if identifier.get("identificationScheme") == C.DOC_UNIQUE_ID:
                    run.session.submitted[identifier.get("value", "")] = path

    @staticmethod
    def _reference_documents(run: TestRun, log: SectionLog, tx: Transaction,
                             substitutions: dict[str, str]) -> dict[str, bytes]:
        """Expected bytes per uniqueId: the ReferenceDocument files, and every document provided.

        What this session actually provided wins: 12029 names submit/my_document.pdf as
        reference but provides submit/readme.txt (the toolkit never compares them).
        """
        documents = {}
        section = run.test.section(log.section)
        for symbol, file_name in tx.reference_documents:
            path = resolve_file(section.directory, file_name)
            if path is None:
                raise NotRun(f"ReferenceDocument {file_name} not found")
            documents[substitutions.get(symbol, symbol)] = path.read_bytes()
        for uid, path in run.session.submitted.items():
            documents[uid] = path.read_bytes()
        return documents


def write_logs(session: Session, directory: Path) -> None:
    """Each section's log as the toolkit's log.xml shape: requests, responses, assigned ids, reports."""
    directory.mkdir(parents=True, exist_ok=True)
    for location, log in session.logs.items():
        tree = log.to_xml()
        for step_xml, step in zip(tree, log.steps, strict=True):
            reports = etree.SubElement(step_xml, "Reports")
            for name, value in step.reports.items():
                etree.SubElement(reports, "Report", name=name).text = value
        (directory / f"{_safe(location)}.xml").write_bytes(
            etree.tostring(tree, pretty_print=True, xml_declaration=True, encoding="UTF-8"))


def _safe(name: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in name)


# --------------------------------------------------------------------------- planning
def direct_dependencies(kit: TestKit, test: TestDefinition) -> list[str]:
    """Other tests whose logs `test` reads: UseReport@test, and testdirs leading out of it."""
    found: list[str] = []
    for name in test.section_names:
        section = test.section(name)
        location = test.section_location(name)
        for step in section.steps:
            tx = step.transaction
            if tx is None:
                continue
            found += [u.test for u in tx.use_reports if u.test]
            testdirs = [u.testdir for u in tx.use_ids if u.testdir]
            if tx.reference_metadata:
                testdirs.append(tx.reference_metadata[0])
            if tx.expected_contents is not None:
                testdirs += [e.get("testdir", "") for e in tx.expected_contents.iter("UseId") if e.get("testdir")]
            for testdir in testdirs:
                for base in (location, posixpath.dirname(location)):
                    located = kit.locate(posixpath.normpath(posixpath.join(base, testdir)))
                    if located is not None:
                        found.append(located[0].id)
                        break
    return [t for t in dict.fromkeys(found) if t != test.id]


def prerequisites(kit: TestKit, test: TestDefinition) -> list[str]:
    """Tests to run before `test`, dependencies first (PlanError on a cycle or unknown test)."""
    order: list[str] = []
    visiting: set[str] = {test.id}

    def visit(current: TestDefinition) -> None:
        for dependency in direct_dependencies(kit, current):
            if dependency in order or dependency == test.id:
                continue
            if dependency in visiting:
                raise PlanError(f"tests {current.id} and {dependency} depend on each other")
            visiting.add(dependency)
            visit(kit.get(dependency))
            visiting.discard(dependency)
            order.append(dependency)

    visit(test)
    return order


def unsupported(kit: TestKit, test_ids: list[str]) -> list[str]:
    found = []
    for test_id in test_ids:
        test = kit.get(test_id)
        for name in test.section_names:
            for feature in test.section(name).unsupported_features():
                found.append(feature if test_id == test_ids[-1] else f"{feature} (in {test_id})")
    return list(dict.fromkeys(found))
