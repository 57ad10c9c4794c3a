"""`partage validate FILE... [--profile NAME] [--cda-schematrons DIR] [--schema-dir DIR]
[--valuesets DIR] [--schematron FILE.sch] [--format json|svrl|html]`

The `validate` subcommand of the `partage` command (add_arguments + run), also runnable
alone as `python -m partage.cda.cli`. Without a flag, the server's setting applies
(PARTAGE_VALIDATION_PROFILE, PARTAGE_CDA_MODEL_SCHEMATRONS, PARTAGE_CDA_SCHEMA_DIR,
PARTAGE_CDA_VALUESETS_DIR, PARTAGE_CDA_SCHEMATRON, PARTAGE_CACHE_DIR): the profile is built as
`/validate` builds it (`gate.report_profile`), so a document gets the same verdict at both. Exit code: 0 when every document is "conforme", 1 when any
document fails, 3 when none fails but some were not verified entirely (a layer of the
profile not configured or not run: the report says which), 2 when the command itself cannot
run (missing file, bad schema). What the profile lacks is said on stderr at start.
Directories are searched for *.xml and report progress on stderr (so do runs over 1 s).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from ..config import Settings
from .findings import Report, to_json, to_svrl, to_svrl_many
from .gate import report_profile
from .parser import DEFAULT_MAX_BYTES, ParseLimits
from .profile import DEFAULT_PROFILE, PROFILES, Validator
from .report_html import to_html
from .schematron_compile import SchematronError

PROGRESS_AFTER_S = 1.0   # say nothing for short runs
MAX_MAX_BYTES = 2 ** 31 - 1   # libxml2 parses no larger document
READ_CHUNK = 1024 * 1024
EXIT_CONFORME, EXIT_FAILED, EXIT_UNUSABLE, EXIT_INCOMPLETE = 0, 1, 2, 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("files", nargs="+", metavar="FILE",
                        help="CDA documents, or directories searched for *.xml")
    parser.add_argument("--profile", default=None, choices=sorted(PROFILES),
                        help=f"validation profile (default: the server's, PARTAGE_VALIDATION_PROFILE, "
                             f"else {DEFAULT_PROFILE})")
    parser.add_argument("--cda-schematrons", "--schematrons", dest="model_schematrons", metavar="DIR",
                        help="the ANS document-model schematrons (layout of ANS's TestContenuCDA: "
                             "schematrons/CI-SIS_*.sch, jeuxDeValeurs/); one is chosen per document")
    parser.add_argument("--schema-dir", "--cda-schema-dir", dest="schema_dir", metavar="DIR",
                        help="directory holding the CDA schema (CDA_extended.xsd or CDA.xsd)")
    parser.add_argument("--valuesets", "--cda-valuesets", dest="valuesets", metavar="DIR",
                        help="directory of SVS value-set files (CI-SIS JDV)")
    parser.add_argument("--schematron", "--cda-schematron", dest="schematron", metavar="FILE.sch",
                        help="an ISO Schematron (queryBinding xslt2) to run besides the profile's layers")
    parser.add_argument("--require-model", action="store_true", default=None,
                        help="a structured document whose templateIds name no model schematron is an error")
    parser.add_argument("--format", default="json", choices=("json", "svrl", "html"), help="report format")
    parser.add_argument("--output", "-o", metavar="FILE", help="write the report there instead of stdout")
    parser.add_argument("--max-bytes", type=_positive, default=DEFAULT_MAX_BYTES,
                        help=f"refuse larger documents (default {DEFAULT_MAX_BYTES}, at most {MAX_MAX_BYTES})")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress on stderr")


def _positive(value: str) -> int:
    number = int(value) if value.strip().isdigit() else 0
    if not 0 < number <= MAX_MAX_BYTES:
        raise argparse.ArgumentTypeError(f"{value!r} is not a positive number of bytes (at most {MAX_MAX_BYTES})")
    return number


def read_at_most(document: BinaryIO, limit: int) -> bytes:
    """The file's bytes, at most `limit` of them, read piecewise: memory follows the file, not the
    limit (one read of `limit` bytes would allocate them all first)."""
    parts, left = [], limit
    while left > 0:
        part = document.read(min(left, READ_CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def iter_files(paths: Sequence[str]) -> Iterator[Path]:
    for name in paths:
        path = Path(name)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*.xml") if p.is_file())
        else:
            yield path


def run(args: argparse.Namespace, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    out, err = stdout or sys.stdout, stderr or sys.stderr
    files = list(iter_files(args.files))
    missing = [f for f in files if not f.exists()]
    if missing:
        print(f"partage validate: no such file: {', '.join(map(str, missing))}", file=err)
        return EXIT_UNUSABLE
    odd = [f for f in files if not f.is_file()]
    if odd:
        print(f"partage validate: not a regular file: {', '.join(map(str, odd))}", file=err)
        return EXIT_UNUSABLE
    if not files:   # folders without any *.xml: nothing validated is no verdict
        print(f"partage validate: no *.xml document in {', '.join(args.files)}", file=err)
        return EXIT_UNUSABLE
    try:
        # The server's settings, overridden by the flags given; the profile is the one /validate
        # judges by (gate.report_profile: one rule for both doors).
        settings = Settings.from_env(validation_profile=args.profile, cda_schema_dir=args.schema_dir,
                                     cda_valuesets_dir=args.valuesets, cda_schematron=args.schematron,
                                     cda_model_schematrons=args.model_schematrons)
        profile = report_profile(settings).with_options(model_required=getattr(args, "require_model", None),
                                                        limits=ParseLimits(max_bytes=args.max_bytes))
        validator = Validator(profile)
    except (OSError, ValueError, SchematronError) as exc:
        print(f"partage validate: {exc}", file=err)
        return EXIT_UNUSABLE
    except Exception as exc:   # schema compile errors come in many types
        print(f"partage validate: cannot load the profile: {exc}", file=err)
        return EXIT_UNUSABLE
    for part in validator.missing:
        print(f"partage validate: profil {profile.name} incomplet : {part}", file=err)

    reports: list[Report] = []
    folders = any(Path(name).is_dir() for name in args.files)   # folders always show progress
    started = last = time.monotonic()
    for n, path in enumerate(files, 1):
        try:
            with path.open("rb") as document:   # a byte more than the limit: the parser refuses it, memory stays bounded
                data = read_at_most(document, args.max_bytes + 1)
        except OSError as exc:
            print(f"partage validate: {path}: {exc.strerror or exc}", file=err)
            return EXIT_UNUSABLE
        report = validator.validate(data, filename=str(path))
        reports.append(report)
        now = time.monotonic()
        if not args.quiet and (folders or now - started > PROGRESS_AFTER_S) and \
                (now - last > 1.0 or n == len(files) or n == 1):
            failed = sum(not r.valid for r in reports)
            print(f"[{n}/{len(files)}] {failed} failed, {n / max(now - started, 1e-9):.0f} docs/s - {path.name}",
                  file=err, flush=True)
            last = now

    text = render(reports, args.format)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        out.write(text)
        if not text.endswith("\n"):
            out.write("\n")
    if not all(r.valid for r in reports):
        return EXIT_FAILED
    return EXIT_CONFORME if all(r.complete for r in reports) else EXIT_INCOMPLETE


def render(reports: Sequence[Report], fmt: str) -> str:
    if fmt == "svrl":
        data = to_svrl(reports[0]) if len(reports) == 1 else to_svrl_many(reports)
        return data.decode("utf-8")
    if fmt == "html":
        return to_html(reports)
    return to_json(reports)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="partage validate", description=(__doc__ or "").splitlines()[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())
