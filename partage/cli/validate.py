"""`partage validate FILE...`: the CDA engine's command (its flags live with it, `partage.cda.cli`)."""

from __future__ import annotations

import argparse

from ..cda import cli as cda_cli
from .common import Subparsers


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("validate", help="validate CDA documents against the profile",
                       description=(cda_cli.__doc__ or "").split("\n\n")[0])
    cda_cli.add_arguments(p)
    p.set_defaults(func=cda_cli.run)
