"""`partage validate`: arguments, exit codes, JSON / SVRL / HTML output, progress."""

from __future__ import annotations

import argparse
import io
import json

from lxml import etree

from partage.cda import cli
from partage.cda.findings import SVRL
from tests.unit.test_cda_samples import sample_cda


def run(argv: list[str]) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    cli.add_arguments(parser)
    out, err = io.StringIO(), io.StringIO()
    code = cli.run(parser.parse_args(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def files(tmp_path) -> tuple[str, str]:
    good = tmp_path / "good.xml"
    good.write_bytes(sample_cda())
    bad = tmp_path / "bad.xml"
    bad.write_bytes(sample_cda().replace(b'<realmCode code="FR"/>', b'<realmCode code="US"/>'))
    return str(good), str(bad)


def test_json_report_and_exit_codes(tmp_path):
    good, bad = files(tmp_path)
    code, out, err = run([good])
    assert code == 3   # valid, but the default profile lacks its XSD, model schematrons and value sets
    assert "incomplet" in err and "--cda-schematrons" in err
    [report] = json.loads(out)
    assert report["verdict"] == "incomplet" and report["profile_missing"]
    assert run([good, "--profile", "structure"])[0] == 0
    code, out, _ = run([good])
    assert {"file", "valid", "document_model", "findings"} <= set(report)
    assert report["valid"] is True and report["file"] == good
    code, out, _ = run([good, bad])
    assert code == 1
    reports = json.loads(out)
    assert [r["valid"] for r in reports] == [True, False]
    finding = next(f for f in reports[1]["findings"] if f["rule"] == "realm-not-fr")
    assert set(finding) == {"rule", "severity", "layer", "message", "location", "line"}
    assert finding["layer"] == "rules" and finding["line"] == 3


def test_directory_arguments_are_searched(tmp_path):
    files(tmp_path)
    code, out, _ = run([str(tmp_path), "--profile", "structure"])
    assert code == 1 and len(json.loads(out)) == 2


def test_svrl_output(tmp_path):
    _, bad = files(tmp_path)
    code, out, _ = run([bad, "--format", "svrl"])
    assert code == 1
    root = etree.fromstring(out.encode())
    asserts = root.findall(f"{{{SVRL}}}failed-assert")
    realm = [a for a in asserts if a.get("id") == "realm-not-fr"]
    assert realm and realm[0].get("location") == "/hl7:ClinicalDocument/hl7:realmCode/@code"
    assert realm[0].get("role") == "error"


def test_html_output_escapes_content(tmp_path):
    evil = tmp_path / "evil.xml"
    evil.write_bytes(sample_cda().replace(b'<realmCode code="FR"/>', b'<realmCode code="&lt;script&gt;"/>'))
    code, out, _ = run([str(evil), "--format", "html"])
    assert code == 1
    assert "<script>" not in out and "&lt;script&gt;" in out


def test_missing_file_and_bad_configuration(tmp_path):
    assert run([str(tmp_path / "nope.xml")])[0] == 2
    good, _ = files(tmp_path)
    code, _, err = run([good, "--schema-dir", str(tmp_path / "no-schema")])
    assert code == 2 and "schema" in err


def test_unparseable_file_fails(tmp_path):
    broken = tmp_path / "broken.xml"
    broken.write_bytes(sample_cda()[:200])
    code, out, _ = run([str(broken)])
    assert code == 1
    assert json.loads(out)[0]["findings"][0]["rule"] == "not-well-formed"


def test_output_file_and_progress(tmp_path, monkeypatch):
    good, _ = files(tmp_path)
    monkeypatch.setattr(cli, "PROGRESS_AFTER_S", -1.0)   # every run counts as long
    target = tmp_path / "report.json"
    code, out, err = run([good, good, "-o", str(target), "--profile", "structure"])
    assert code == 0 and out == ""
    assert len(json.loads(target.read_text())) == 2
    assert "[2/2]" in err
    code, _, err = run([good, "--quiet", "--profile", "structure"])
    assert err == ""
