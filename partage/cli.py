"""The `partage` command: serve, validate, testkit, fsck, and the operator's tools."""

from __future__ import annotations

import argparse
import sys

from . import __version__
from .config import Settings


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", dest="data_dir", help="data directory (default ./partage-data)")
    p.add_argument("--database", dest="database_url",
                   help="SQLAlchemy URL, e.g. postgresql+psycopg://postgres@127.0.0.1/partage "
                        "(default: SQLite in the data directory)")
    p.add_argument("--host")
    p.add_argument("--port", type=int)
    p.add_argument("--mllp-port", type=int, help="MLLP port for ITI-8 (0 disables; default 2575)")
    p.add_argument("--workers", type=int)
    p.add_argument("--threads", type=int)
    p.add_argument("--codes", help="affinity domain: a directory of SVS files or a NIST codes.xml")
    p.add_argument("--cda-schema-dir", "--schema-dir", dest="cda_schema_dir", help="directory with the CDA XSD (CDA_extended.xsd or CDA.xsd)")
    p.add_argument("--cda-valuesets", "--valuesets", dest="cda_valuesets_dir", help="SVS directory for CDA terminology")
    p.add_argument("--cda-schematron", "--schematron", dest="cda_schematron",
                   help="an ISO Schematron file run on every CDA document")
    p.add_argument("--cda-schematrons", dest="cda_model_schematrons", metavar="DIR",
                   help="the ANS document-model schematrons, in the layout of ANS's TestContenuCDA repository "
                        "(schematrons/CI-SIS_*.sch, jeuxDeValeurs/): one is chosen per document")
    p.add_argument("--validation-profile", help="CDA profile of the ingest flow (default cisis)")
    p.add_argument("--validation-blocking",
                   help="layers whose errors refuse a CDA at ingest: comma list of schema, rules, schematron, "
                        "terminology, metadata (or 1-5), 'all' or 'none' (default: schema when configured, "
                        "rules, terminology, metadata)")
    p.add_argument("--insecure-dev", action="store_true", default=None,
                   help="DEVELOPMENT ONLY: serve without authentication")
    p.add_argument("--trust", help="PEM file of the CA certificates trusted to sign SAML assertions and JWTs")
    p.add_argument("--audience", help="the audience credentials must name (default: partage)")
    p.add_argument("--access-matrix", help="JSON file overriding the access policy's role x class table")
    p.add_argument("--one-time-credentials", choices=["saml", "all", "none"],
                   help="which credentials are single-use (replays refused; default saml)")
    p.add_argument("--require-signed-submissions", action="store_true", default=None,
                   help="refuse submission sets without an IHE DSG detached signature")


def settings_from(args: argparse.Namespace) -> Settings:
    keys = ("data_dir", "database_url", "host", "port", "mllp_port", "workers", "threads", "codes",
            "cda_schema_dir", "cda_valuesets_dir", "cda_schematron", "cda_model_schematrons", "validation_profile",
            "validation_blocking", "insecure_dev", "trust", "audience", "access_matrix",
            "require_signed_submissions", "one_time_credentials")
    return Settings.from_env(**{k: getattr(args, k, None) for k in keys})


def cmd_serve(args: argparse.Namespace) -> int:
    from .web.server import serve

    return serve(settings_from(args))


def cmd_fsck(args: argparse.Namespace) -> int:
    from .fsck import run_fsck

    return run_fsck(settings_from(args), repair=args.repair, min_age_seconds=args.min_age)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partage", description=__doc__)
    parser.add_argument("--version", action="version", version=f"partage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the XDS.b / MHD server")
    _serve_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    fsck = sub.add_parser("fsck", help="check registry and blob store consistency")
    _serve_arguments(fsck)
    fsck.add_argument("--repair", action="store_true", help="remove unreferenced blobs and temp files")
    fsck.add_argument("--min-age", type=float, default=300.0,
                      help="seconds a blob must be old before it counts as unreferenced "
                           "(younger ones may belong to a submission in flight; default 300)")
    fsck.set_defaults(func=cmd_fsck)

    from .hl7 import cli as hl7_cli
    hl7 = sub.add_parser("hl7", help="HL7 v2 tools (send over MLLP)")
    hl7_cli.add_arguments(hl7)

    from .cda import cli as cda_cli
    validate = sub.add_parser("validate", help="validate CDA documents against the profile")
    cda_cli.add_arguments(validate)
    validate.set_defaults(func=cda_cli.run)

    from .access import cli as access_cli
    access_cli.add_commands(sub, _serve_arguments)

    from .clinical import cli as clinical_cli
    clinical_cli.add_commands(sub, _serve_arguments)

    # `partage dev-idp`: the development OpenID provider of the page's login
    from .web import devidp
    devidp.add_command(sub)

    _optional_commands(sub)
    return parser


def _optional_commands(sub) -> None:
    """Subcommands owned by other packages: each adds its own arguments."""
    from .conformance.testkit import cli as testkit_cli
    testkit = sub.add_parser("testkit", help="run external conformance test kits")
    kits = testkit.add_subparsers(dest="kit", required=True)
    nist = kits.add_parser("nist", help="the NIST XDS.b test kit")
    testkit_cli.add_nist_arguments(nist)
    nist.set_defaults(func=testkit_cli.run_nist)
    from .conformance.mhd import cli as mhd_cli
    mhd = kits.add_parser("mhd", help="the NIST MHD v4.2 Document Recipient test collections")
    mhd_cli.add_arguments(mhd)
    mhd.set_defaults(func=mhd_cli.run)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
