"""`partage serve`: the server (gunicorn master + Hypercorn workers + the MLLP listener).

Every flag has a PARTAGE_* variable (flags win); limits and timeouts are variables only
(docs/robustness.md). Every setting is checked before anything starts (`preflight`).
"""

from __future__ import annotations

import argparse
import sys

from ..server.serve import serve
from .common import Subparsers, settings_from, storage_arguments
from .preflight import first_problem


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("serve", help="run the XDS.b / MHD server",
                       description="Run the XDS.b registry/repository, the MHD (FHIR) facade, the validation "
                                   "service and the MLLP listener. Every flag has a PARTAGE_* variable.")
    storage_arguments(p)
    p.add_argument("--host", help="HTTP address (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="HTTP port (default 8080)")
    p.add_argument("--mllp-port", type=int, help="MLLP port for ITI-8 and the document feed (0 disables; default 2575)")
    p.add_argument("--workers", type=int, help="worker processes (default 2)")
    p.add_argument("--threads", type=int, help="application threads per worker (default 8)")
    p.add_argument("--codes", help="affinity domain: a directory of SVS files or a NIST codes.xml")
    p.add_argument("--cda-schema-dir", "--schema-dir", dest="cda_schema_dir",
                   help="directory with the CDA XSD (CDA_extended.xsd or CDA.xsd)")
    p.add_argument("--cda-valuesets", "--valuesets", dest="cda_valuesets_dir", help="SVS directory for CDA terminology")
    p.add_argument("--cda-schematron", "--schematron", dest="cda_schematron",
                   help="an ISO Schematron file run on every CDA document")
    p.add_argument("--cda-schematrons", "--schematrons", dest="cda_model_schematrons", metavar="DIR",
                   help="the ANS document-model schematrons (TestContenuCDA layout): each CDA is checked "
                        "against its model's")
    p.add_argument("--validation-profile", help="CDA profile of the ingest flow (default cisis)")
    p.add_argument("--validation-blocking",
                   help="layers whose errors refuse a CDA at ingest: comma list of schema, rules, schematron, "
                        "terminology, metadata (or 1-5), 'all' or 'none' (default: schema when configured, "
                        "rules, terminology, metadata)")
    p.add_argument("--insecure-dev", action="store_true", default=None,
                   help="DEVELOPMENT ONLY: serve without authentication")
    p.add_argument("--trust", help="PEM file of the CA certificates trusted to sign SAML assertions and JWTs")
    p.add_argument("--issuers", help="JSON file naming each trusted issuer (JWT iss, SAML Issuer) and the "
                                     "certificates that may sign for it (default: each certificate is "
                                     "its own issuer, named by its URI subjectAltName or subject)")
    p.add_argument("--audience", help="the audience credentials must name (default: partage)")
    p.add_argument("--access-matrix", help="JSON file overriding the access policy's role x class table")
    p.add_argument("--one-time-credentials", choices=["saml", "all", "none"],
                   help="which credentials are single-use (replays refused; default saml)")
    p.add_argument("--require-signed-submissions", action="store_true", default=None,
                   help="refuse submission sets without an IHE DSG detached signature")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    problem = first_problem(settings)
    if problem:
        print(f"partage serve: {problem}", file=sys.stderr)
        return 2
    return serve(settings)
