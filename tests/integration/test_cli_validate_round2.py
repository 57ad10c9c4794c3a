"""Second review of the command line and of the validation service, from the outside.

The command line: every bad input is one clear line and a non-zero status, never a Python
traceback nor an "internal error" (a number flag that is NaN, infinite, negative or too large
is a usage error naming the flag; a Ctrl-C while the command is still loading is "interrupted",
status 130, like one later). The validation service (docs/cda-rules.md, "The validation
service"): an MHD ITI-65 Bundle has its XDS metadata checked as the repository checks them
("likewise" an ITI-41 request), a submission always gets a report, and no report is dropped
without saying so.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests
from lxml import etree

from tests.integration.test_validate_endpoint import (
    _bundle,  # an ITI-65 Bundle the repository refuses: no classCode, facility, setting, confidentiality, date
)
from tests.support import LiveServer, free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
EXAMPLE_CDA = (EXAMPLES / "cda-lettre-de-liaison.xml").read_bytes()


def partage(*args: str, cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "partage.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=cwd, env={**os.environ, "PARTAGE_PORT": str(free_port()),
                                                         "PARTAGE_MLLP_PORT": "0"})


def assert_usage_error(result: subprocess.CompletedProcess, flag: str) -> None:
    """Status 2, the flag named, no traceback and no "internal error" (a failure the command
    did not expect)."""
    text = result.stderr + result.stdout
    assert result.returncode == 2, (result.returncode, result.stderr)
    assert "Traceback" not in text and "internal error" not in text, text
    assert flag in result.stderr, result.stderr


# --- the command line -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def data_dir(tmp_path_factory) -> Path:
    """A Partage data directory with its registry (made by `access show`'s store opening would
    refuse an empty one: make it with the server's own migration)."""
    data = tmp_path_factory.mktemp("cli-data") / "data"
    with LiveServer(data, mllp=False):
        pass
    return data


@pytest.mark.parametrize("value", ["nan", "inf", "-1", "0"])
def test_hl7_send_timeout_must_be_a_positive_finite_number(tmp_path, value):
    """Was "internal error (ValueError: Timeout value out of range)" / "(OverflowError: timestamp
    out of range for platform time_t)", status 1."""
    result = partage("hl7", "send", str(EXAMPLES / "adt-a01.hl7"), "--to", f"127.0.0.1:{free_port()}",
                     "--timeout", value, cwd=tmp_path)
    assert_usage_error(result, "--timeout")


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e400"])
def test_fsck_min_age_must_be_a_finite_non_negative_number(tmp_path, data_dir, value):
    """A negative --min-age made every blob, a submission's in flight included, "unreferenced"
    for --repair; NaN and infinity were internal errors."""
    result = partage("fsck", "--data", str(data_dir), "--min-age", value, cwd=tmp_path)
    assert_usage_error(result, "--min-age")


@pytest.mark.parametrize("value", ["nan", "-5", "0", "inf"])
def test_dev_credentials_hours_must_be_a_positive_validity(tmp_path, value):
    """--hours -5 wrote credentials that had expired before they were written (status 0);
    NaN was an internal error. Nothing is written either way."""
    out = tmp_path / "creds"
    result = partage("dev-credentials", "--out", str(out), "--hours", value, cwd=tmp_path)
    assert_usage_error(result, "--hours")
    assert not out.exists()


@pytest.mark.parametrize("value", ["-1", "0", "99999999999999999999999"])
def test_audit_limit_must_be_a_positive_count(tmp_path, data_dir, value):
    """Was "internal error (OverflowError: Python int too large to convert to SQLite INTEGER)",
    and a negative limit meant "no limit" on SQLite and a database error on PostgreSQL."""
    result = partage("audit", "--data", str(data_dir), "--limit", value, cwd=tmp_path)
    assert_usage_error(result, "--limit")


def test_validate_max_bytes_too_large_is_a_usage_error(tmp_path):
    """Was "internal error (OverflowError ...)" for a number past 2**63 and "internal error
    (MemoryError)" for 100 GB: the file was read with one read() of --max-bytes + 1 bytes."""
    for value in ("99999999999999999999999", "100000000000"):
        result = partage("validate", "--profile", "structure", str(EXAMPLES / "cda-lettre-de-liaison.xml"),
                         "--max-bytes", value, cwd=tmp_path)
        assert_usage_error(result, "--max-bytes")
    # the largest accepted limit reads the small file as it is
    result = partage("validate", "-q", "--profile", "structure", str(EXAMPLES / "cda-lettre-de-liaison.xml"),
                     "--max-bytes", "2147483647", cwd=tmp_path)
    assert result.returncode == 0 and json.loads(result.stdout)[0]["verdict"] == "conforme", result.stderr


def test_access_purge_before_must_be_a_date(tmp_path, data_dir):
    """--before 20241399 (no 13th month) or 20240230 was taken as a date for a purge (status 0,
    "purged ..."): a purge for good runs only on a date of the calendar. (Status 1, as
    tests/unit/test_access_records.py has it for a --before that is not 8 digits.)"""
    for value in ("20241399", "20240230", "2024-1-1"):
        result = partage("access", "purge", "--removed", "--before", value, "--data", str(data_dir), cwd=tmp_path)
        assert result.returncode != 0 and "Traceback" not in result.stderr, (value, result.stderr)
        assert "--before" in result.stderr and "YYYYMMDD" in result.stderr and "purged" not in result.stdout


def test_a_patient_that_is_no_identifier_is_a_usage_error_said_once(tmp_path, data_dir):
    """Was "partage access show: partage access: '' is not ...", status 1."""
    result = partage("access", "show", "", "--data", str(data_dir), cwd=tmp_path)
    assert_usage_error(result, "not a patient identifier")
    assert result.stderr.count("partage access") == 1, result.stderr


def test_a_host_that_does_not_resolve_names_the_host_setting(tmp_path):
    """Was "--host (PARTAGE_PORT): ...": the message named the port's variable."""
    result = partage("serve", "--data", str(tmp_path / "data"), "--insecure-dev", "--host", "no-such-host.invalid",
                     cwd=tmp_path)
    assert_usage_error(result, "--host (PARTAGE_HOST)")
    assert "PARTAGE_PORT" not in result.stderr


@pytest.mark.parametrize("delay", [0.3, 1.0])
def test_ctrl_c_while_the_command_loads_is_one_line(tmp_path, delay):
    """Loading the command takes seconds on a busy machine (lxml, SQLAlchemy, Flask, the CDA
    engine): a Ctrl-C then printed the traceback of the interrupted import (KeyboardInterrupt),
    where a Ctrl-C a moment later says "interrupted" and exits 130."""
    process = subprocess.Popen([sys.executable, "-m", "partage.cli", "validate", "--profile", "structure",
                                str(EXAMPLES / "cda-lettre-de-liaison.xml")], cwd=tmp_path,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    time.sleep(delay)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=60)
    if process.returncode == 0:
        pytest.skip("the command finished before the signal")   # a very fast machine
    assert "Traceback" not in err + out, err
    assert process.returncode == 130, (process.returncode, err)
    assert "interrupted" in err and len([line for line in err.splitlines() if line.strip()]) == 1, err


# --- the validation service ---------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Authentication on (validation needs none); two reports at most per answer, so that an
    answer with more is cheap to make."""
    data = tmp_path_factory.mktemp("validate-r2") / "data"
    with LiveServer(data, mllp=False, insecure_dev=False, env={"PARTAGE_MAX_REPORT_FINDINGS": "2"}) as live:
        yield live


def _post(server, data: bytes, **kwargs) -> requests.Response:
    return requests.post(f"{server.base_url}/validate", data=data, timeout=60, **kwargs)


def test_an_mhd_bundle_has_its_xds_metadata_checked_as_ingest_checks_them(server):
    """docs/cda-rules.md: an ITI-65 Bundle is validated "likewise" an ITI-41 request, whose XDS
    metadata errors come as a report `<file>#metadata`. The Bundle's metadata were never checked
    against the repository's rules: a Bundle the server's ITI-65 refuses (no classCode, ...) got
    only its document's report, so nothing in the answer said it would be refused."""
    r = _post(server, json.dumps(_bundle(EXAMPLE_CDA)).encode(), headers={"Content-Type": "application/fhir+json"})
    assert r.status_code == 200
    reports = r.json()
    meta = [x for x in reports if x["file"].endswith("#metadata")]
    assert len(meta) == 1, [x["file"] for x in reports]
    assert meta[0]["valid"] is False and meta[0]["verdict"] == "non conforme"
    errors = [f for f in meta[0]["findings"] if f["rule"] != "report-truncated"]   # 2 shown (the server's limit)
    assert len(errors) == 2 and all(f["rule"] == "XDSRepositoryMetadataError" and f["layer"] == "metadata"
                                    and f["severity"] == "error" for f in errors), errors
    # located as the submitter knows it: an entry's fullUrl, not an internal symbolic id (List0)
    assert {f["location"] for f in errors} <= {e["fullUrl"] for e in _bundle(EXAMPLE_CDA)["entry"]}, errors
    assert "autre(s) remarque(s)" in meta[0]["findings"][-1]["message"]   # 9 errors: classCode, practiceSettingCode...


def test_a_submission_without_documents_still_gets_its_report(server):
    """An ITI-41 request with a submission set and no document (allowed: its metadata are all it
    carries) answered `[]`: no report, no verdict on what was posted."""
    root = etree.fromstring((EXAMPLES / "iti41-provide.xml").read_bytes())
    rim, xdsb = "urn:oasis:names:tc:ebxml-regrep:xsd:rim:3.0", "urn:ihe:iti:xds-b:2007"
    for tag in (f"{{{rim}}}ExtrinsicObject", f"{{{rim}}}Association", f"{{{xdsb}}}Document"):
        for element in list(root.iter(tag)):
            element.getparent().remove(element)
    r = _post(server, etree.tostring(root), headers={"Content-Type": "application/soap+xml"})
    assert r.status_code == 200
    reports = r.json()
    assert len(reports) == 1 and reports[0]["file"].endswith("#metadata"), reports
    assert reports[0]["layers"], reports[0]    # what ran is said


def test_no_report_is_dropped_without_saying_so(server):
    """Past PARTAGE_MAX_REPORT_FINDINGS reports the rest were cut off silently: a failing file
    past the limit left an answer whose every report was valid."""
    files = [("a", ("a.xml", EXAMPLE_CDA, "text/xml")), ("b", ("b.xml", EXAMPLE_CDA, "text/xml")),
             ("c", ("c.hl7", (EXAMPLES / "adt-a01.hl7").read_bytes(), "text/plain"))]
    r = requests.post(f"{server.base_url}/validate", files=files, timeout=60)
    assert r.status_code == 200
    reports = r.json()
    assert len(reports) == 3, [x["file"] for x in reports]
    last = reports[-1]
    assert last["valid"] is False and last["verdict"] == "non conforme", last
    assert "c.hl7" in json.dumps(last, ensure_ascii=False)
    assert "reports-truncated" in {f["rule"] for f in last["findings"]}
    # the same answer as SVRL says it too (a failed assert)
    svrl = requests.post(f"{server.base_url}/validate", files=files, params={"format": "svrl"}, timeout=60)
    assert svrl.status_code == 200 and b"reports-truncated" in svrl.content
