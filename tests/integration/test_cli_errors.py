"""Bad settings and bad command-line input: one line naming the problem, a non-zero status,
never a traceback, and `serve` never starts (in the master, before any worker) when a setting
is bad."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import free_port

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"


def partage(*args: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "partage.cli", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT, env={**os.environ, "PARTAGE_PORT": str(free_port()),
                                                          "PARTAGE_MLLP_PORT": "0", **(env or {})})


def assert_one_line(result: subprocess.CompletedProcess, status: int, *words: str) -> None:
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == status, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr + result.stdout
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0], (word, lines[0])


@pytest.fixture
def busy_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(1)
        yield sock.getsockname()[1]


def test_serve_refuses_bad_settings_with_one_line(tmp_path, busy_port):
    data = str(tmp_path / "data")
    matrix = tmp_path / "matrix.json"
    matrix.write_text(json.dumps({"classes": 5}))
    schematron = tmp_path / "rules.sch"
    schematron.write_text("<not-a-schematron/>")
    cases = [
        (["--codes", "/nonexistent"], {}, "--codes"),
        (["--codes", str(EXAMPLES / "adt-a01.hl7")], {}, "--codes"),
        (["--access-matrix", str(EXAMPLES / "adt-a01.hl7")], {}, "--access-matrix"),
        (["--access-matrix", str(matrix)], {}, "--access-matrix"),
        (["--cda-schema-dir", str(tmp_path)], {}, "--cda-schema-dir"),
        (["--cda-schema-dir", "/nonexistent"], {}, "--cda-schema-dir"),
        (["--cda-schematron", str(schematron)], {}, "--cda-schematron"),
        (["--validation-profile", "nope"], {}, "--validation-profile"),
        (["--validation-blocking", "sometimes"], {}, "--validation-blocking"),
        (["--trust", str(EXAMPLES / "adt-a01.hl7")], {}, "--trust"),
        (["--database", "postgresql+psycopg://postgres@127.0.0.1:1/nothing"], {}, "--database"),
        (["--port", str(busy_port)], {"PARTAGE_PORT": ""}, "--port"),
        (["--mllp-port", str(busy_port)], {"PARTAGE_MLLP_PORT": ""}, "--mllp-port"),
        (["--workers", "0"], {}, "--workers"),
        ([], {"PARTAGE_MAX_REQUEST_BYTES": "lots"}, "PARTAGE_MAX_REQUEST_BYTES"),
        ([], {"PARTAGE_MLLP_IDLE_TIMEOUT": "-1"}, "PARTAGE_MLLP_IDLE_TIMEOUT"),
        ([], {"PARTAGE_HEADER_TIMEOUT": "0"}, "PARTAGE_HEADER_TIMEOUT"),
        ([], {"PARTAGE_NOTIFY_DESTINATIONS": "public,the intranet"}, "PARTAGE_NOTIFY_DESTINATIONS"),
        ([], {"PARTAGE_SMTP_SECURITY": "tls-please"}, "PARTAGE_SMTP_SECURITY"),
        ([], {"PARTAGE_NOTIFY_POLL": "0"}, "PARTAGE_NOTIFY_POLL"),
    ]
    for args, env, named in cases:
        result = partage("serve", "--data", data, "--insecure-dev", *args, env=env, timeout=60)
        assert_one_line(result, 2, named, "partage serve:")


def test_commands_report_bad_input_in_one_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    binary = tmp_path / "binary.hl7"
    binary.write_bytes(bytes(range(256)) * 4)
    latin1 = tmp_path / "latin1.hl7"
    latin1.write_bytes("MSH|^~\\&|É".encode("latin-1"))
    port = free_port()   # nothing listens there
    cases = [
        (["hl7", "send", str(tmp_path / "missing.hl7")], 2, "missing.hl7"),
        (["hl7", "send", str(EXAMPLES / "adt-a01.hl7"), "--to", "nowhere"], 2, "--to"),
        (["hl7", "send", str(EXAMPLES / "adt-a01.hl7"), "--to", "127.0.0.1:99999"], 2, "--to"),
        (["hl7", "send", str(EXAMPLES / "adt-a01.hl7"), "--to", f"127.0.0.1:{port}"], 1, "cannot connect"),
        (["hl7", "send", str(binary)], 2, "binary"),
        (["hl7", "send", str(latin1)], 2, "UTF-8"),
        (["hl7", "send", str(tmp_path)], 2, "directory"),
        (["hl7", "replay", "--data", str(tmp_path / "nope")], 2, "data directory"),
        (["sign", str(EXAMPLES / "iti41-provide.xml")], 2, "--credentials"),
        (["sign", str(EXAMPLES / "iti41-provide.xml"), "--credentials", str(empty)], 2, "idp.key"),
        (["sign", str(tmp_path / "missing.xml"), "--key", str(binary), "--cert", str(binary)], 2, ""),
        (["dev-credentials", "--out", str(empty), "--wrap", "missing.xml"], 2, "no CA"),
        (["fsck", "--data", str(empty)], 2, "no Partage data"),
        (["audit", "--data", str(empty)], 2, "no Partage data"),
        (["access", "show", "X^^^&1.2.3&ISO", "--data", str(empty)], 2, "no Partage data"),
        (["clinical", "reindex", "--data", str(empty)], 2, "no Partage data"),
        (["fsck", "--database", "postgresql+psycopg://postgres@127.0.0.1:1/nothing"], 1, "database"),
        (["validate", str(tmp_path / "missing.xml")], 2, "missing.xml"),
        (["dev-s3", "--port", "70000", "--dir", str(tmp_path / "s3")], 2, "--port"),
        (["dev-idp", "--port", "70000"], 2, "--port"),
    ]
    for args, status, word in cases:
        assert_one_line(partage(*args), status, word)
    # dev-credentials --wrap with a CA but a missing request file
    assert partage("dev-credentials", "--out", str(tmp_path / "creds")).returncode == 0
    assert_one_line(partage("dev-credentials", "--out", str(tmp_path / "creds"), "--wrap",
                            str(tmp_path / "missing.xml")), 2, "missing.xml")
    assert_one_line(partage("dev-credentials", "--out", str(tmp_path / "creds"), "--wrap",
                            str(binary)), 2, "XML")
    assert_one_line(partage("sign", str(binary), "--credentials", str(tmp_path / "creds")), 2, "XML")


def test_each_command_has_its_own_flags():
    for command in (["fsck"], ["audit"], ["access", "show"], ["clinical", "reindex"], ["hl7", "send"]):
        help_text = partage(*command, "--help").stdout
        assert "--cda-schematron" not in help_text and "--insecure-dev" not in help_text, command
    assert "--cda-schematron" in partage("serve", "--help").stdout


def test_testkit_exits_non_zero_when_nothing_ran(tmp_path):
    kit = tmp_path / "kit"
    (kit / "tests").mkdir(parents=True)
    nist = partage("testkit", "nist", "--testkit", str(kit), "--registry", "http://127.0.0.1:1/xds/registry")
    assert nist.returncode != 0 and "Traceback" not in nist.stderr + nist.stdout, nist.stderr
    mhd = partage("testkit", "mhd", "--collections", str(tmp_path), "--fhir", "http://127.0.0.1:1/fhir")
    assert mhd.returncode != 0 and "Traceback" not in mhd.stderr + mhd.stdout, mhd.stderr


def test_a_database_url_no_engine_reads_is_a_usage_error(tmp_path):
    """A URL that is not one, an engine the registry does not run on, or a SQLite file that
    is not there: a usage error naming --database (was "internal error (ArgumentError ...)",
    "internal error (ModuleNotFoundError ...)", and an empty SQLite file made by fsck), never
    repeating a password."""
    missing = tmp_path / "nowhere" / "registry.sqlite3"
    for command in (["fsck"], ["audit"], ["access", "show", "X^^^&1.2.3&ISO"], ["clinical", "reindex"]):
        assert_one_line(partage(*command, "--database", "not a url"), 2, "--database", "not a database URL")
        result = partage(*command, "--database", "mysql://user:s3cret@127.0.0.1/db")
        assert_one_line(result, 2, "--database", "mysql is not supported")
        assert "s3cret" not in result.stderr
        assert_one_line(partage(*command, "--database", f"sqlite:///{missing}"), 2, "no SQLite database")
    assert not missing.parent.exists()


def test_validate_says_what_it_could_not_read(tmp_path):
    """An empty folder validates nothing: no verdict, not a "conforme" exit with `[]`; a device
    is not a file (it was "no such file"); --max-bytes is a positive number; a file larger than
    --max-bytes is refused by the parser without being read whole."""
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line(partage("validate", str(empty)), 2, "no *.xml document")
    assert_one_line(partage("validate", "/dev/null"), 2, "not a regular file")
    for value in ("-5", "0", "1e3"):
        result = partage("validate", str(EXAMPLES / "cda-lettre-de-liaison.xml"), "--max-bytes", value)
        assert result.returncode == 2 and "--max-bytes" in result.stderr, result.stderr
    big = tmp_path / "big.xml"
    big.write_bytes(b"<a>" + b"x" * 300_000 + b"</a>")
    result = partage("validate", "--quiet", str(big), "--max-bytes", "1000")
    assert result.returncode == 1, result.stderr
    finding = json.loads(result.stdout)[0]["findings"][0]
    assert finding["rule"] == "xml-too-large" and "1000" in finding["message"], finding
