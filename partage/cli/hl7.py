"""`partage hl7 send`: send HL7 v2 messages over MLLP and print the acknowledgements;
`partage hl7 replay`: send again the document-feed messages the server kept as not processed.

For operators and the README tour: feeding a patient (ITI-8 ADT) needs no other tool.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from ..hl7.acks import ack_status
from ..hl7.journal import Journal
from ..hl7.mllp import MllpClient
from ..hl7.outcome import ACCEPTING
from .common import CliError, Subparsers, host_port, number

MAX_TIMEOUT = 24 * 3600.0   # a day: an acknowledgement later than that is not coming


def add_parser(commands: Subparsers[argparse.ArgumentParser]) -> None:
    parser = commands.add_parser("hl7", help="HL7 v2 tools: send messages over MLLP, replay the kept ones")
    sub = parser.add_subparsers(dest="hl7_command", required=True)
    send = sub.add_parser("send", help="send HL7 v2 message files over MLLP")
    send.add_argument("files", nargs="+", type=Path, help="files holding one message each")
    send.add_argument("--to", default="127.0.0.1:2575", help="HOST:PORT of the MLLP listener")
    send.add_argument("--timeout", type=number(0, MAX_TIMEOUT, low_open=True), default=30.0,
                      help="seconds to wait for each acknowledgement (default 30)")
    send.set_defaults(func=run_send)
    replay = sub.add_parser("replay", help="send again the document-feed messages kept as not processed")
    replay.add_argument("--data", type=Path, default=None,
                        help="the server's data directory (default: PARTAGE_DATA_DIR or ./partage-data)")
    replay.add_argument("--to", default="127.0.0.1:2575", help="HOST:PORT of the MLLP listener")
    replay.add_argument("--list", action="store_true", help="only list the kept messages and their reasons")
    replay.add_argument("--timeout", type=number(0, MAX_TIMEOUT, low_open=True), default=120.0,
                        help="seconds to wait for each acknowledgement (default 120)")
    replay.set_defaults(func=run_replay)


def read_message(path: Path) -> str:
    """One HL7 v2 message file as text with CR segment separators; CliError when it is not one."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory, not a message file", 2) from None
    if b"\x00" in data:
        raise CliError(f"{path}: a binary file, not an HL7 v2 message (text)", 2)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise CliError(f"{path}: not UTF-8 text; HL7 v2 message files are sent as UTF-8", 2) from None
    text = text.replace("\r\n", "\r").replace("\n", "\r")
    if not text.lstrip().startswith("MSH"):
        raise CliError(f"{path}: not an HL7 v2 message (it does not start with MSH)", 2)
    return text


def run_send(args: argparse.Namespace) -> int:
    host, port = host_port(args.to, "--to")
    messages = [(path, read_message(path)) for path in args.files]   # every file checked before sending
    worst = 0
    with MllpClient(host, port, timeout=args.timeout) as client:
        for path, text in messages:
            ack = client.send(text)
            sys.stdout.write(f"{path}: {ack.replace(chr(13), chr(10)).strip()}\n")
            if ack_status(ack)[0] not in ACCEPTING:
                worst = 1
    return worst


def run_replay(args: argparse.Namespace) -> int:
    """Each kept message goes to the listener again; the server forgets those it accepts."""
    data_dir = args.data or Path(os.environ.get("PARTAGE_DATA_DIR", "partage-data"))
    if not data_dir.is_dir():
        raise CliError(f"no Partage data directory at {data_dir}; give --data DIR", 2)
    entries = Journal.in_data_dir(data_dir).entries()
    if args.list or not entries:
        for path, meta in entries:
            sys.stdout.write(f"{path.name}: {meta.get('ack', '?')} x{meta.get('attempts', '?')} "
                             f"{meta.get('reason', '')} {' '.join(meta.get('rules', []))}\n")
        sys.stdout.write(f"{len(entries)} message(s) kept in {Journal.in_data_dir(data_dir).directory}\n")
        return 0
    host, port = host_port(args.to, "--to")
    still = 0
    with MllpClient(host, port, timeout=args.timeout) as client:
        for path, _meta in entries:
            ack = client.send(path.read_bytes())
            code, text = ack_status(ack)
            still += code not in ACCEPTING
            sys.stdout.write(f"{path.name}: {code or '??'} {text}\n")
    sys.stdout.write(f"{len(entries) - still} accepted, {still} still refused\n")
    return 1 if still else 0

