"""The NIST test-kit runner (`partage testkit nist`) notices wrong answers.

A small kit written here, in the NIST layout, runs against a fake registry that makes
one mistake at a time (tests/integration/fake_xds_server.py): each mistake must turn
a test from passed to failed, with the mismatch in its detail, and the exit status to 1.
Then a few real NIST tests run against the real server (`partage serve` with the
kit's codes.xml) and must pass.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from lxml import etree

from partage.cli import main as partage_main
from partage.conformance.testkit import __main__ as testkit_entry
from tests.conftest import PROJECT_ROOT, corpus_path
from tests.integration.fake_xds_server import REFUSED_TITLE, FakeXdsServer
from tests.support import LiveServer, run_nist_testkit

SUBMISSION = """<lcm:SubmitObjectsRequest xmlns:lcm="urn:oasis:names:tc:ebxml-regrep:xsd:lcm:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <rim:RegistryObjectList>
    <rim:ExtrinsicObject id="Document01" mimeType="text/plain"
        objectType="urn:uuid:7edca82f-054d-47f2-a032-9b2a5b5186c1">
      <rim:Name><rim:LocalizedString value="{title}"/></rim:Name>
      <rim:ExternalIdentifier identificationScheme="urn:uuid:58a6f841-87b3-4a3e-92fd-a8ffeff98427" value=""/>
      <rim:ExternalIdentifier identificationScheme="urn:uuid:2e82c1f6-a085-4c72-9da3-8640a32e42ab" value=""/>
    </rim:ExtrinsicObject>
    <rim:RegistryPackage id="SubmissionSet01">
      <rim:ExternalIdentifier identificationScheme="urn:uuid:6b5aea1a-874d-4603-a4bc-96a0a7b38446" value=""/>
      <rim:ExternalIdentifier identificationScheme="urn:uuid:96fdda7c-d067-4183-912e-bf5ee74998a8" value=""/>
      <rim:ExternalIdentifier identificationScheme="urn:uuid:554ac39e-e3fe-47fe-b233-965d2a147832" value=""/>
    </rim:RegistryPackage>
    <rim:Classification classifiedObject="SubmissionSet01"
        classificationNode="urn:uuid:a54d6aa5-d40d-43f9-88c5-b4633d873bdd"/>
    <rim:Association sourceObject="SubmissionSet01" targetObject="Document01"
        associationType="urn:oasis:names:tc:ebxml-regrep:AssociationType:HasMember">
      <rim:Slot name="SubmissionSetStatus"><rim:ValueList><rim:Value>Original</rim:Value></rim:ValueList></rim:Slot>
    </rim:Association>
  </rim:RegistryObjectList>
</lcm:SubmitObjectsRequest>
"""

QUERY = """<query:AdhocQueryRequest xmlns:query="urn:oasis:names:tc:ebxml-regrep:xsd:query:3.0"
    xmlns:rim="urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0">
  <query:ResponseOption returnComposedObjects="true" returnType="LeafClass"/>
  <rim:AdhocQuery id="urn:uuid:e8e3cb2c-e39c-46b9-99e4-c12f57260b83">
    <rim:Slot name="$XDSSubmissionSetUniqueId"><rim:ValueList><rim:Value>'$ssuid$'</rim:Value></rim:ValueList></rim:Slot>
  </rim:AdhocQuery>
</query:AdhocQueryRequest>
"""

SUBMIT_PLAN = """<TestPlan><Test>{test}/submit</Test>
  <TestStep id="submit">
    <ExpectedStatus>{status}</ExpectedStatus>{error_code}
    <RegisterTransaction><XDSb/><MetadataFile>submission.xml</MetadataFile></RegisterTransaction>
  </TestStep>
</TestPlan>
"""

QUERY_PLAN = """<TestPlan><Test>accepted/eval</Test>
  <TestStep id="by_uid">
    <ExpectedStatus>Success</ExpectedStatus>
    <StoredQueryTransaction>
      <XDSb/>
      <UseId testdir="../submit" id="SubmissionSet01" symbol="$ssuid$" step="submit" section="AssignedUids"/>
      <MetadataFile>query.xml</MetadataFile>
      <ExpectedContents><SSwithOneDoc/></ExpectedContents>
    </StoredQueryTransaction>
  </TestStep>
  <TestStep id="approved">
    <NullTransaction>
      <Assertions>
        <DataRef file="THIS" as="output"/>
        <Assert id="approved">//*[local-name()='ExtrinsicObject']/@status =
          'urn:oasis:names:tc:ebxml-regrep:StatusType:Approved'</Assert>
      </Assertions>
    </NullTransaction>
  </TestStep>
</TestPlan>
"""

UNSUPPORTED_PLAN = """<TestPlan><Test>exotic</Test>
  <TestStep id="step">
    <ExpectedStatus>Success</ExpectedStatus>
    <XcaQueryTransaction><MetadataFile>query.xml</MetadataFile></XcaQueryTransaction>
  </TestStep>
</TestPlan>
"""


def _test_folder(root: Path, test_id: str, sections: dict[str, dict[str, str]]) -> None:
    folder = root / "tests" / test_id
    folder.mkdir(parents=True)
    (folder / "collections.txt").write_text("fake\n")
    (folder / "readme.txt").write_text(f"{test_id} (written by test_testkit_runner)\n")
    (folder / "index.idx").write_text("\n".join(sections) + "\n")
    for section, files in sections.items():
        (folder / section).mkdir()
        for name, text in files.items():
            (folder / section / name).write_text(text)


@pytest.fixture(scope="module")
def kit(tmp_path_factory) -> Path:
    """Three tests: `accepted` (register, query, assert), `refused` (an expected error code),
    `exotic` (a transaction the runner does not know)."""
    root = tmp_path_factory.mktemp("kit")
    _test_folder(root, "accepted", {
        "submit": {"testplan.xml": SUBMIT_PLAN.format(test="accepted", status="Success", error_code=""),
                   "submission.xml": SUBMISSION.format(title="a document")},
        "eval": {"testplan.xml": QUERY_PLAN, "query.xml": QUERY},
    })
    _test_folder(root, "refused", {
        "submit": {"testplan.xml": SUBMIT_PLAN.format(
            test="refused", status="Failure",
            error_code="\n    <ExpectedErrorCode>XDSRegistryMetadataError</ExpectedErrorCode>"),
            "submission.xml": SUBMISSION.format(title=REFUSED_TITLE)},
    })
    (root / "tests" / "exotic").mkdir()
    (root / "tests" / "exotic" / "collections.txt").write_text("fake\n")
    (root / "tests" / "exotic" / "testplan.xml").write_text(UNSUPPORTED_PLAN)
    return root


@pytest.fixture(scope="module")
def fake():
    with FakeXdsServer() as server:
        yield server


def _run(kit: Path, fake: FakeXdsServer, mode: str, tmp_path: Path, capsys) -> tuple[int, dict, str]:
    fake.mode = mode
    out = tmp_path / f"{mode}.json"
    junit = tmp_path / f"{mode}.xml"
    code = testkit_entry.main(["nist", "--testkit", str(kit), "--registry", fake.url, "--mllp", fake.mllp_address,
                         "--collections", "fake", "--json", str(out), "--junit", str(junit)])
    report = json.loads(out.read_text())
    assert etree.parse(str(junit)).getroot().tag == "testsuites"
    return code, report, capsys.readouterr().out


def test_correct_answers_pass(kit, fake, tmp_path, capsys):
    code, report, printed = _run(kit, fake, "correct", tmp_path, capsys)
    assert {t: r["status"] for t, r in report["tests"].items()} == {
        "accepted": "passed", "refused": "passed", "exotic": "not run"}
    assert (report["passed"], report["failed"], report["not_run"]) == (2, 0, 1)
    assert code == 0, printed                      # "not run" is not a failure
    assert printed.rstrip().splitlines()[-1] == "2 passed, 0 failed, 1 not run"
    assert [s["name"] for s in report["tests"]["accepted"]["sections"]] == ["submit", "eval"]
    assert any(line.split()[1:3] == ["accepted", "passed"] for line in printed.splitlines())
    assert fake.mllp.fed, "the patient id was not fed over MLLP before the submission"


def test_unsupported_feature_is_not_run_never_passed(kit, fake, tmp_path, capsys):
    _, report, printed = _run(kit, fake, "correct", tmp_path, capsys)
    exotic = report["tests"]["exotic"]
    assert exotic["status"] == "not run"
    assert exotic["detail"].startswith("unsupported:") and "XcaQueryTransaction" in exotic["detail"]
    assert "XcaQueryTransaction" in printed


def test_wrong_status_fails(kit, fake, tmp_path, capsys):
    code, report, printed = _run(kit, fake, "wrong_status", tmp_path, capsys)
    accepted = report["tests"]["accepted"]
    assert accepted["status"] == "failed"
    assert "status Failure, expected Success" in accepted["detail"]
    assert accepted["sections"][1]["status"] == "not run"     # nothing after the failing step
    assert code == 1
    assert "0 passed" not in printed.splitlines()[-1] and " 1 failed" in printed.splitlines()[-1]


def test_wrong_error_code_fails(kit, fake, tmp_path, capsys):
    code, report, _ = _run(kit, fake, "wrong_error_code", tmp_path, capsys)
    refused = report["tests"]["refused"]
    assert refused["status"] == "failed"
    assert "expected error code XDSRegistryMetadataError, got XDSRegistryError" in refused["detail"]
    assert report["tests"]["accepted"]["status"] == "passed"
    assert code == 1


def test_wrong_returned_object_fails(kit, fake, tmp_path, capsys):
    code, report, _ = _run(kit, fake, "wrong_object", tmp_path, capsys)
    accepted = report["tests"]["accepted"]
    assert accepted["status"] == "failed"
    assert accepted["detail"].startswith("eval/by_uid:")
    assert "HasMember association missing" in accepted["detail"]
    assert code == 1


def test_cli_is_a_partage_subcommand(kit, fake, capsys):
    fake.mode = "correct"
    code = partage_main(["testkit", "nist", "--testkit", str(kit), "--registry", fake.url,
                         "--mllp", fake.mllp_address, "--tests", "refused"])
    assert code == 0
    assert capsys.readouterr().out.rstrip().endswith("1 passed, 0 failed, 0 not run")


def test_unknown_collection_is_a_usage_error(kit, fake):
    result = subprocess.run([sys.executable, "-m", "partage.conformance.testkit", "nist", "--testkit", str(kit),
                             "--registry", fake.url, "--collections", "nope"],
                            capture_output=True, text=True, cwd=PROJECT_ROOT, timeout=60)
    assert result.returncode == 2
    assert "collection 'nope'" in result.stderr


# --------------------------------------------------------------------------- real kit, real server
@pytest.mark.corpus
def test_real_nist_tests_pass_against_the_server(tmp_path, capsys):
    """R.b 11990, SQ.b 12368 (two patients: 12346 and 12374 run first), rep/PR.b 11981,
    reg_mu 20000d (folder update, association propagation), reg_rm 30001 (removal rules)."""
    testkit = corpus_path("nist", "testkit")
    codes = corpus_path("nist", "environment", "codes.xml")
    with LiveServer(tmp_path / "data", extra_args=["--codes", str(codes)]) as server:
        out = tmp_path / "real.json"
        code = run_nist_testkit(server, testkit, codes, out, ["--tests", "11990,12368,11981,20000d,30001"])
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    assert {t: r["status"] for t, r in report["tests"].items()} == {
        "11990": "passed", "12368": "passed", "11981": "passed", "20000d": "passed", "30001": "passed"}, printed
    assert {"12346", "12374"} <= set(report["tests"]["12368"]["prerequisites"])
    assert code == 0
