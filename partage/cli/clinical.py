"""`partage clinical reindex`: read facts and text of documents already registered."""

from __future__ import annotations

import argparse
import json

from ..clinical.index import reindex
from ..clinical.queue import backlog, drain
from ..services import Services
from .common import Subparsers, existing_data_dir, settings_from, storage_arguments


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    clinical = sub.add_parser("clinical", help="clinical reading: facts and full-text index")
    actions = clinical.add_subparsers(dest="clinical_command", required=True)
    p = actions.add_parser("reindex", help="do the PDF text jobs still queued, then index the documents "
                                                 "that have no facts or text yet (registered before this "
                                                 "version); --force: all of them")
    storage_arguments(p)
    p.add_argument("--force", action="store_true", help="re-read every held, Approved document")
    p.set_defaults(func=run_reindex)



def run_reindex(args: argparse.Namespace) -> int:
    settings = settings_from(args)
    existing_data_dir(settings)
    services = Services.open(settings)
    try:
        queue = drain(services)   # first: a queued document has no text row yet, reindex would read it twice
        counts = reindex(services, force=args.force)
        print(json.dumps({**counts, "queue": {**queue, **backlog(services.registry)}}))
    finally:
        services.close()
    return 0
