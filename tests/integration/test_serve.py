"""The real server: `partage serve` on SQLite and PostgreSQL, health, security by default."""

from __future__ import annotations

import requests

from partage.cli.common import settings_from
from partage.cli.main import build_parser
from tests.support import LiveServer


def test_serves_health_on_the_embedded_default(tmp_path):
    with LiveServer(tmp_path / "data", mllp=False, insecure_dev=False) as server:
        body = requests.get(f"{server.base_url}/healthz", timeout=5).json()
    assert body["status"] == "ok"
    assert body["storage"]["registry"] == {"backend": "sqlite", "status": "ok"}
    assert body["storage"]["repository"]["status"] == "ok"
    assert body["authentication"] == "required"
    assert (tmp_path / "data" / "registry.sqlite3").exists()


def test_serves_health_on_the_given_database(tmp_path, database_url):
    with LiveServer(tmp_path / "data", database_url=database_url, mllp=False) as server:
        body = requests.get(f"{server.base_url}/healthz", timeout=5).json()
    assert body["storage"]["registry"]["status"] == "ok"
    assert body["storage"]["registry"]["backend"] == database_url.split("+")[0].split(":")[0]


def test_patient_data_needs_authentication_by_default(tmp_path):
    from tests.xdsclient import XdsClient

    with LiveServer(tmp_path / "data", mllp=False, insecure_dev=False) as server:
        reply = XdsClient(server.base_url).stored_query(
            "FindDocuments", {"$XDSDocumentEntryPatientId": ["'1^^^&1.2.3&ISO'"],
                              "$XDSDocumentEntryStatus": ["('urn:oasis:names:tc:ebxml-regrep:StatusType:Approved')"]})
    assert reply.http_status == 400
    assert reply.body.tag.endswith("Fault")
    assert b"FailedAuthentication" in __import__("lxml.etree").etree.tostring(reply.body)


def test_serve_takes_every_validation_resource_the_readme_lists(tmp_path):
    """README's table of `partage serve` flags: the model schematrons are one of them."""
    args = build_parser().parse_args(["serve", "--data", str(tmp_path), "--cda-schematrons", "/srv/ans/sch",
                                      "--cda-valuesets", "/srv/ans/jdv", "--cda-schema-dir", "/srv/ans/xsd"])
    settings = settings_from(args)
    assert (settings.cda_model_schematrons, settings.cda_valuesets_dir, settings.cda_schema_dir) == \
        ("/srv/ans/sch", "/srv/ans/jdv", "/srv/ans/xsd")
