"""`partage testkit nist|mhd`: external conformance test kits, run as any client would."""

from __future__ import annotations

import argparse

from ..conformance.mhd import cli as mhd_cli
from ..conformance.testkit import cli as testkit_cli
from .common import Subparsers


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    testkit = sub.add_parser("testkit", help="run external conformance test kits")
    kits = testkit.add_subparsers(dest="kit", required=True)
    nist = kits.add_parser("nist", help="the NIST XDS.b test kit")
    testkit_cli.add_nist_arguments(nist)
    nist.set_defaults(func=testkit_cli.run_nist)
    mhd = kits.add_parser("mhd", help="the NIST MHD v4.2 Document Recipient test collections")
    mhd_cli.add_arguments(mhd)
    mhd.set_defaults(func=mhd_cli.run)
