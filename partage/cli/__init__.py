"""The `partage` command line (composition root): `partage.cli.main.main` is the entry point.

Loading the commands' modules takes seconds (lxml, SQLAlchemy, Flask, the CDA engine): a
Ctrl-C in that time ends the command as one line and status 130, like a Ctrl-C later
(`partage.cli.main`), not as the traceback of an interrupted import. The handler is only
put while the modules load, and only over Python's default one (an ignored SIGINT, as in a
background job, stays ignored; an importer's own handler is left alone).
"""

from __future__ import annotations

import signal
import sys
import threading
from types import FrameType


def _interrupted_while_loading(_signum: int, _frame: FrameType | None) -> None:
    print("partage: interrupted", file=sys.stderr)
    raise SystemExit(130)


_loading = threading.current_thread() is threading.main_thread() and \
    signal.getsignal(signal.SIGINT) is signal.default_int_handler
if _loading:
    signal.signal(signal.SIGINT, _interrupted_while_loading)
try:
    from .main import build_parser, main
finally:
    if _loading:
        signal.signal(signal.SIGINT, signal.default_int_handler)

__all__ = ["build_parser", "main"]
