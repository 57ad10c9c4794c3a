"""`python -m partage.conformance.testkit nist ...`, the same command as `partage testkit nist`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from . import cli


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m partage.conformance.testkit",
                                     description="run external conformance test kits")
    kits = parser.add_subparsers(dest="kit", required=True)
    nist = kits.add_parser("nist", help="the NIST XDS.b test kit")
    cli.add_nist_arguments(nist)
    nist.set_defaults(func=cli.run_nist)
    args = parser.parse_args(argv)
    run: Callable[[argparse.Namespace], int] = args.func
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
