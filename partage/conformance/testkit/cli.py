"""`partage testkit nist`: run the NIST XDS.b test kit against a registry/repository."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .client import SoapClient
from .codes import prepare_code_map
from .feed import Feeder
from .plan import PlanError, TestKit
from .report import Console, summary_line, write_json, write_junit
from .runner import FAILED, PASSED, Runner, RunnerConfig
from .transactions import Endpoints

DEFAULT_COLLECTIONS = ("reg", "R.b", "SQ.b", "rep", "PR.b", "reg_mu", "reg_rm")


def _csv(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def add_nist_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--testkit", required=True, metavar="DIR",
                        help="the test kit folder (holding tests/, testdata-registry/, ...)")
    parser.add_argument("--registry", required=True, metavar="URL",
                        help="registry endpoint, e.g. http://127.0.0.1:8080/xds/registry")
    parser.add_argument("--repository", metavar="URL",
                        help="repository endpoint, e.g. http://127.0.0.1:8080/xds/repository")
    parser.add_argument("--mllp", metavar="HOST:PORT",
                        help="MLLP listener receiving the ITI-8 patient identity feed")
    parser.add_argument("--collections", type=_csv, action="extend", metavar="NAMES",
                        help=f"comma-separated collections (default: {','.join(DEFAULT_COLLECTIONS)} "
                             "unless --tests is given)")
    parser.add_argument("--tests", type=_csv, action="extend", metavar="IDS",
                        help="comma-separated test ids (folder names under tests/, or kit-relative paths)")
    parser.add_argument("--codes", metavar="CODES_XML",
                        help="the affinity domain's NIST codes.xml (the server's --codes): template codes "
                             "outside it are replaced consistently, as the toolkit does for an environment")
    parser.add_argument("--repository-uid", metavar="OID",
                        help="the repository's uniqueId, for plans that use $repuid$ (test 15816)")
    parser.add_argument("--assigning-authority", default="1.3.6.1.4.1.21367.2005.13.20.1000", metavar="OID",
                        help="assigning authority of the patient ids the runner makes up")
    parser.add_argument("--source-id", default="1.3.6.1.4.1.21367.4", metavar="OID",
                        help="XDSSubmissionSet.sourceId put in every submission")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request (default 60)")
    parser.add_argument("--json", metavar="OUT", help="write the results as JSON to OUT")
    parser.add_argument("--junit", metavar="OUT", help="write the results as JUnit XML to OUT")
    parser.add_argument("--log-dir", metavar="DIR",
                        help="write every section's log (requests, responses, ids, reports) under DIR")
    parser.add_argument("--list", action="store_true", help="list the selected tests and stop")
    parser.add_argument("-v", "--verbose", action="store_true", help="also print each test as it starts")


def select_tests(kit: TestKit, collections: list[str] | None, tests: list[str] | None) -> list[str]:
    """Test ids in run order: the named tests, then the collections' members (no duplicates)."""
    chosen: list[str] = []
    for test_id in tests or []:
        kit.get(test_id)
        chosen.append(test_id)
    names = collections if collections is not None else ([] if tests else list(DEFAULT_COLLECTIONS))
    for name in names:
        members = kit.collection(name)
        if not members:
            raise PlanError(f"collection {name!r} has no test in {kit.root} "
                            f"(known: {', '.join(kit.collections())})")
        chosen += members
    return list(dict.fromkeys(chosen))


def _feeder(address: str | None, timeout: float) -> Feeder | None:
    if not address:
        return None
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"--mllp expects HOST:PORT, got {address!r}")
    return Feeder(host, int(port), timeout=timeout)


def run_nist(args: argparse.Namespace) -> int:
    out = sys.stdout
    try:
        kit = TestKit(args.testkit)
        selected = select_tests(kit, args.collections, args.tests)
        feeder = _feeder(args.mllp, min(args.timeout, 30.0))
        code_map = prepare_code_map(kit, args.codes) if args.codes else None
    except (PlanError, ValueError) as exc:
        print(f"partage testkit nist: {exc}", file=sys.stderr)
        return 2
    if args.list:
        for test_id in selected:
            print(f"{test_id:<26} {kit.get(test_id).title}", file=out)
        return 0
    if feeder is None:
        print("note: no --mllp given; tests that need a patient fed to the registry will not run", file=out)
    if code_map is None:
        print("note: no --codes given; template codes are sent as they are", file=out)
    params = {"$repuid$": args.repository_uid} if args.repository_uid else {}
    config = RunnerConfig(Endpoints(args.registry, args.repository or ""),
                          feeder=feeder.feed if feeder else None, authority=args.assigning_authority,
                          source_id=args.source_id, params=params, code_map=code_map,
                          log_dir=Path(args.log_dir) if args.log_dir else None)
    console = Console(out, len(selected), verbose=args.verbose)
    print(f"NIST test kit {kit.root}: {len(selected)} tests against {args.registry}", file=out, flush=True)
    client = SoapClient(timeout=args.timeout)
    try:
        results = Runner(kit, config, client, on_start=console.started, on_result=console.finished).run(selected)
    finally:
        client.close()
        if feeder is not None:
            feeder.close()
    if args.json:
        write_json(results, args.json)
    if args.junit:
        write_junit(results, args.junit)
    print(summary_line(results), file=out, flush=True)
    if not any(r.status in (PASSED, FAILED) for r in results):
        print("partage testkit nist: no test ran (nothing selected, or every test was skipped)", file=sys.stderr)
        return 1
    return 1 if any(r.status == FAILED for r in results) else 0
