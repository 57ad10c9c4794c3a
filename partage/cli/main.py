"""The `partage` command: one module per command group, each with its own flags and help.

Every command's expected failures (a missing or unreadable file, a bad setting, a peer that
does not answer, a database that cannot be reached) end as one line on stderr and an exit
status: 2 when the command cannot run as asked, 1 when it ran and found a problem, 130 when
interrupted. An unexpected failure is one line too (PARTAGE_DEBUG=1 shows the traceback).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from sqlalchemy import exc as sa_exc

from .. import __version__
from ..config import SettingsError
from ..ebxml.soap import SoapError
from ..hl7.mllp import MllpError
from ..xmlsafe import XmlInputError
from . import access, clinical, dev_s3, devidp, fsck, hl7, serve, testkit, validate
from .common import CliError, Subparsers

GROUPS: list[Callable[[Subparsers[argparse.ArgumentParser]], None]] = [
    serve.add_parser, validate.add_parser, testkit.add_parser, hl7.add_parser, fsck.add_parser,
    access.add_credentials_parser, access.add_access_parser, access.add_audit_parser, access.add_sign_parser,
    clinical.add_parser, dev_s3.add_parser, devidp.add_parser,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="partage", description="Partage: IHE XDS.b registry/repository "
                                     "with an MHD (FHIR) facade and CI-SIS CDA validation.")
    parser.add_argument("--version", action="version", version=f"partage {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in GROUPS:
        add(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    command = "partage"
    try:
        args = build_parser().parse_args(argv)
        command = " ".join(filter(None, ["partage", args.command, *(
            getattr(args, key, None) for key in ("kit", "hl7_command", "access_command", "clinical_command"))]))
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print(f"{command}: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if os.environ.get("PARTAGE_DEBUG"):
            raise
        message, status = explain(exc)
        print(f"{command}: {message}", file=sys.stderr)
        return status


def explain(exc: Exception) -> tuple[str, int]:
    """(one line, exit status) for a failure of a command."""
    if isinstance(exc, CliError):
        return str(exc), exc.status
    if isinstance(exc, SettingsError):
        return str(exc), 2
    if isinstance(exc, UnicodeDecodeError):
        return "the input is not text (UTF-8); HL7 v2 messages and XML files are text", 2
    if isinstance(exc, OSError) and exc.filename is not None:
        return f"{exc.filename}: {exc.strerror or exc}", 2
    if isinstance(exc, MllpError):
        return str(exc), 1
    if isinstance(exc, XmlInputError | SoapError):
        return f"the input is not usable XML: {exc}", 2
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | sa_exc.DBAPIError):
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        return f"database error: {reason[0] if reason else type(exc).__name__}", 1
    if isinstance(exc, OSError):
        return f"{exc.strerror or exc}", 1
    first = (str(exc).strip().splitlines() or [""])[0][:300]
    return f"internal error ({type(exc).__name__}: {first}); PARTAGE_DEBUG=1 shows the traceback", 1
