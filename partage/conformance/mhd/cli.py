"""`partage testkit mhd`: arguments here, the runner imported only when the command runs."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .runner import DEFAULT_COLLECTIONS
from .runner import FAILED as FAIL
from .runner import PASSED as PASS
from .runner import run as run_collections

DEFAULT_FHIR = "http://127.0.0.1:8080/fhir"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--collections", required=True, type=Path,
                        help="the asbestos TestCollections folder (or its parent), e.g. ../shared/corpus/mhd")
    parser.add_argument("--fhir", default=DEFAULT_FHIR,
                        help=f"FHIR base URL of the server (default {DEFAULT_FHIR}, what `partage serve` answers)")
    parser.add_argument("--token", type=Path, metavar="FILE",
                        help="a file holding a bearer JWT (as `partage dev-credentials` writes NAME.jwt), "
                             "sent as `Authorization: Bearer ...` with every request")
    parser.add_argument("--format", choices=("json", "xml"), default="json",
                        help="the format the fixtures are sent in, as asbestos' JSON/XML switch (default json)")
    parser.add_argument("--collection", action="append", dest="names",
                        help=f"collection to run (repeatable; default: {', '.join(DEFAULT_COLLECTIONS)})")
    parser.add_argument("--test", action="append", dest="tests",
                        help="run only this test of the collections (folder name; repeatable)")
    parser.add_argument("--json", type=Path, help="write every test's report to this file")


def run(args: argparse.Namespace) -> int:
    """Exit status 0 only when no test failed (tests not run do not count as failures)."""

    collections = args.collections
    if (collections / "TestCollections").is_dir():
        collections = collections / "TestCollections"
    token = None
    if args.token is not None:
        try:
            token = args.token.read_text(encoding="utf-8").strip()
        except OSError as exc:
            print(f"partage testkit mhd: cannot read the token file: {exc}", file=sys.stderr)
            return 2
        if not token:
            print(f"partage testkit mhd: the token file {args.token} is empty", file=sys.stderr)
            return 2
    try:
        results = run_collections(collections, args.fhir, args.names or list(DEFAULT_COLLECTIONS),
                                  tests=args.tests, token=token, fmt=args.format)
    except FileNotFoundError as exc:
        print(f"partage testkit mhd: {exc}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps([r.as_dict() for r in results], indent=2))
    if not any(r.outcome in (PASS, FAIL) for r in results):
        print("partage testkit mhd: no test ran (no collection or test matched)", file=sys.stderr)
        return 1
    return 1 if any(r.outcome == FAIL for r in results) else 0
