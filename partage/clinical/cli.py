"""`partage clinical reindex`: read facts and text of documents already registered."""

from __future__ import annotations

import argparse
import json


def add_commands(sub, serve_arguments) -> None:
    clinical = sub.add_parser("clinical", help="clinical reading: facts and full-text index")
    actions = clinical.add_subparsers(dest="clinical_command", required=True)
    reindex = actions.add_parser("reindex", help="do the PDF text jobs still queued, then index the documents "
                                                 "that have no facts or text yet (registered before this "
                                                 "version); --force: all of them")
    serve_arguments(reindex)
    reindex.add_argument("--force", action="store_true", help="re-read every held, Approved document")
    reindex.set_defaults(func=run_reindex)


def run_reindex(args: argparse.Namespace) -> int:
    from ..cli import settings_from
    from ..services import Services
    from .index import reindex
    from .queue import backlog, drain

    services = Services.open(settings_from(args))
    try:
        queue = drain(services)   # first: a queued document has no text row yet, reindex would read it twice
        counts = reindex(services, force=args.force)
        counts["queue"] = {**queue, **backlog(services.registry)}
        print(json.dumps(counts))
    finally:
        services.close()
    return 0
