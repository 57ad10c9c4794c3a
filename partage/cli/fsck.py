"""`partage fsck [--repair]`: registry vs blob store, and the registry's own consistency."""

from __future__ import annotations

import argparse

from ..fsck import run_fsck
from .common import Subparsers, existing_data_dir, number, settings_from, storage_arguments


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("fsck", help="check registry and blob store consistency",
                       description="Report registered documents without content, unreferenced blobs, "
                                   "orphan entries and dangling associations; exit 1 when inconsistent.")
    storage_arguments(p)
    p.add_argument("--repair", action="store_true", help="remove unreferenced blobs and temp files")
    p.add_argument("--min-age", type=number(0, 10 * 365 * 24 * 3600), default=300.0,
                   help="seconds a blob must be old before it counts as unreferenced "
                        "(younger ones may belong to a submission in flight; default 300)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    existing_data_dir(settings)
    return run_fsck(settings, repair=args.repair, min_age_seconds=args.min_age)
