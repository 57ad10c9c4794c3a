"""`partage hl7 send`: send HL7 v2 messages over MLLP and print the acknowledgements.

For operators and the README tour: feeding a patient (ITI-8 ADT) needs no other tool.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .mllp import MllpClient


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="hl7_command", required=True)
    send = sub.add_parser("send", help="send HL7 v2 message files over MLLP")
    send.add_argument("files", nargs="+", type=Path, help="files holding one message each")
    send.add_argument("--to", default="127.0.0.1:2575", help="HOST:PORT of the MLLP listener")
    send.add_argument("--timeout", type=float, default=30.0)
    send.set_defaults(func=run_send)


def run_send(args: argparse.Namespace) -> int:
    host, _, port = args.to.rpartition(":")
    worst = 0
    with MllpClient(host or "127.0.0.1", int(port), timeout=args.timeout) as client:
        for path in args.files:
            text = path.read_text(encoding="utf-8").replace("\r\n", "\r").replace("\n", "\r")
            ack = client.send(text)
            sys.stdout.write(f"{path}: {ack.replace(chr(13), chr(10)).strip()}\n")
            msa = next((s for s in ack.split("\r") if s.startswith("MSA|")), "MSA|??")
            if msa.split("|")[1] != "AA":
                worst = 1
    return worst
