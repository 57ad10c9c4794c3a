"""`partage dev-idp`: the development OpenID provider of the page's sign-in (DEVELOPMENT ONLY).

The provider itself is `partage.web.devidp`; this module holds the command's flags and runs it.
"""

from __future__ import annotations

import argparse
import sys

from werkzeug.serving import make_server

from ..web.devidp import create_provider
from .common import CliError, Subparsers


def add_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    p = sub.add_parser("dev-idp", help="DEVELOPMENT ONLY: a local OpenID provider shaped like Pro Santé Connect",
                       description="Anyone who reaches it signs in as any sample professional of "
                                   "`partage dev-credentials`; for development, the README tour and the tests.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9000)
    p.add_argument("--issuer", default="", help="the issuer URL (default http://HOST:PORT)")
    p.add_argument("--client-id", default="partage")
    p.add_argument("--client-secret", default="dev-secret")
    p.add_argument("--redirect-uri", action="append", default=[],
                   help="an allowed redirect URI (default: /connexion/retour on any loopback address)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if not 0 < args.port < 65536:
        raise CliError(f"--port must be 1-65535, not {args.port}", 2)
    issuer = args.issuer or f"http://{args.host}:{args.port}"
    app = create_provider(issuer, args.client_id, args.client_secret, args.redirect_uri)
    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as exc:
        raise CliError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 2) from None
    sys.stderr.write(f"partage dev-idp (DEVELOPMENT ONLY) listening on {issuer}; client {args.client_id}\n")
    sys.stderr.flush()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0
