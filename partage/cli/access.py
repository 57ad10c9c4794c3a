"""`partage dev-credentials`, `partage access ...` (record state), `partage audit`, `partage sign`."""

from __future__ import annotations

import argparse
import base64
import getpass
import hashlib
import io
import json
import sys
from datetime import datetime
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from lxml import etree

from ..access import audit, saml
from ..access.actor import SYSTEM, Actor
from ..access.credentials import (
    DEFAULT_AUDIENCE,
    DEFAULT_PATIENT,
    DevAuthority,
    sample_actors,
    write_dev_credentials,
)
from ..access.signatures import SignatureError, sign_submission
from ..ebxml import constants as C
from ..ebxml import ebrim
from ..ebxml.soap import build_envelope, parse_envelope
from ..metadata.datatypes import CX, DatatypeError
from ..metadata.model import DocumentContent
from ..registry import audit_log, updates
from ..registry.access_state import RecordError, Records, purge_record
from ..services import Services
from ..xmlsafe import parse_xml
from .common import (
    CliError,
    Subparsers,
    existing_data_dir,
    number,
    settings_from,
    storage_arguments,
)


def add_credentials_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    creds = sub.add_parser("dev-credentials", help="make a development CA and signed credentials for "
                                                   "sample actors (tests, the README tour)")
    creds.add_argument("--out", required=True, type=Path, help="directory to write (reuses its CA if present)")
    creds.add_argument("--patient", default=None, help="CX of the patient of the patient/guardian credentials")
    creds.add_argument("--audience", default=None, help="audience the credentials name (default: partage)")
    creds.add_argument("--hours", type=number(0, 10 * 365 * 24, low_open=True), default=24 * 30, help="validity of the credentials (default 30 days)")
    creds.add_argument("--wrap", type=Path, default=None,
                       help="instead: print this SOAP request with a fresh signed assertion in its "
                            "WS-Security header (assertions are single-use), using the CA in --out")
    creds.add_argument("--as", dest="actor", default="gp", help="the sample actor of --wrap (default gp)")
    creds.set_defaults(func=cmd_dev_credentials)


def add_access_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    access = sub.add_parser("access", help="a patient's record state: consent, closing, blocks, "
                                           "médecin traitant, opposition to bris de glace")
    actions = access.add_subparsers(dest="access_command", required=True)

    def action(name: str, help_text: str, *extra: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text)
        storage_arguments(p)
        p.add_argument("patient", help="the patient's CX, e.g. 270017512345615^^^&1.2.250.1.213.1.4.10&ISO")
        for arg in extra:
            p.add_argument(arg)
        p.set_defaults(func=cmd_access, access_command=name)
        return p

    action("open", "record the patient's consent: the record opens (a closed one reopens)")
    actions.choices["open"].add_argument("--medecin-traitant", default="", help="national id of the médecin traitant")
    action("close", "close the record (kept 10 years, then purged by `partage access purge`)")
    action("show", "print the record's state")
    action("medecin-traitant", "set the médecin traitant", "professional")
    action("block", "block a professional (refused everywhere)", "professional")
    action("unblock", "lift a block", "professional")
    action("oppose-bdg", "the patient opposes bris de glace access")
    action("allow-bdg", "lift the opposition to bris de glace access")
    action("notifications", "print the notifications owed to the patient (bris de glace accesses)")
    actions.choices["notifications"].add_argument("--mark-sent", action="store_true",
                                                  help="mark the printed notifications as sent")
    purge = actions.add_parser("purge", help="delete the records closed more than 10 years ago, or with "
                                             "--removed the tombstones of removed objects and their bytes")
    storage_arguments(purge)
    purge.add_argument("--dry-run", action="store_true")
    purge.add_argument("--removed", action="store_true",
                       help="instead: purge for good what ITI-62 / ITI-86 removed (tombstones and bytes)")
    purge.add_argument("--before", default="", metavar="YYYYMMDD",
                       help="with --removed: only what was removed before this date (default: everything)")
    purge.set_defaults(func=cmd_purge)


def add_audit_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    trail = sub.add_parser("audit", help="read the audit trail (newest first)")
    storage_arguments(trail)
    trail.add_argument("--patient", default="", help="only accesses to this patient (CX)")
    trail.add_argument("--actor", default="", help="only accesses by this actor id")
    trail.add_argument("--limit", type=number(1, 1_000_000, integer=True), default=50,
                       help="at most this many events (default 50)")
    trail.add_argument("--json", action="store_true", help="one JSON object per line")
    trail.set_defaults(func=cmd_audit)


def _services(args: argparse.Namespace) -> Services:
    settings = settings_from(args)
    existing_data_dir(settings)
    return Services.open(settings, migrate=True)


def _operator() -> Actor:
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return Actor(id=f"operator:{user}", name="partage command line", kind=SYSTEM, auth_method="internal")


def cmd_dev_credentials(args: argparse.Namespace) -> int:
    if args.wrap is not None:
        return _wrap(args, args.patient or DEFAULT_PATIENT, args.audience or DEFAULT_AUDIENCE)

    actors = write_dev_credentials(args.out, patient_id=args.patient or DEFAULT_PATIENT,
                                   audience=args.audience or DEFAULT_AUDIENCE, hours=args.hours)
    print(f"wrote a development CA and credentials for {len(actors)} actors to {args.out}")
    print(f"  trust it:  partage serve --trust {args.out / 'ca.pem'}")
    for name, actor in actors.items():
        print(f"  {name:13} {actor.kind:15} {actor.id:16} {actor.name}")
    return 0


def _wrap(args: argparse.Namespace, patient_id: str, audience: str) -> int:
    if not (args.out / "ca.key").exists():
        print(f"partage dev-credentials: no CA in {args.out}; run without --wrap first", file=sys.stderr)
        return 2
    actors = sample_actors(patient_id)
    if args.actor not in actors:
        print(f"partage dev-credentials: unknown actor {args.actor!r} ({', '.join(actors)})", file=sys.stderr)
        return 2
    authority = DevAuthority.load(args.out)
    root = parse_xml(args.wrap.read_bytes())
    soap = etree.QName(root).namespace
    header = root.find(f"{{{soap}}}Header")
    if header is None:
        header = etree.Element(f"{{{soap}}}Header")
        root.insert(0, header)
    header.append(saml.security_header(authority.saml_assertion(actors[args.actor], audience=audience,
                                                                 hours=args.hours if args.hours < 24 else 1)))
    sys.stdout.buffer.write(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))
    return 0


def cmd_access(args: argparse.Namespace) -> int:
    try:
        patient = CX.parse(args.patient, strict=False)
    except DatatypeError as exc:
        raise CliError(f"{args.patient!r} is not a patient identifier (CX): {exc}", 2) from None
    services = _services(args)
    try:
        records = Records(services.registry)
        command = args.access_command
        try:
            if command == "open":
                records.open(patient, medecin_traitant=args.medecin_traitant)
            elif command == "close":
                records.close(patient)
            elif command == "medecin-traitant":
                records.set_medecin_traitant(patient, args.professional)
            elif command == "block":
                records.block(patient, args.professional)
            elif command == "unblock":
                records.unblock(patient, args.professional)
            elif command in ("oppose-bdg", "allow-bdg"):
                records.oppose_bris_de_glace(patient, command == "oppose-bdg")
            elif command == "notifications":
                return _notifications(services, args, patient)
        except RecordError as exc:
            print(f"partage access {command}: {exc}", file=sys.stderr)
            return 1
        if command != "show":
            extra = getattr(args, "professional", "") or getattr(args, "medecin_traitant", "")
            audit.record(services, f"access-{command}", _operator(), patient_id=args.patient,
                         detail=f"{command} {extra}".strip())
        state = records.state(patient)
        print(json.dumps({"patient": args.patient, "status": state.status,
                          "medecin_traitant": state.medecin_traitant, "blocked": sorted(state.blocked),
                          "bris_de_glace_opposed": state.bdg_opposed, "closed_at": state.closed_at},
                         ensure_ascii=False))
        return 0
    finally:
        services.close()


def _notifications(services: Services, args: argparse.Namespace, patient: CX) -> int:
    with services.registry.read() as conn:
        pk = services.registry.patient_pk(conn, patient)
    if pk is None:
        print(f"partage access notifications: patient {args.patient} is not known", file=sys.stderr)
        return 1
    pending = [n for n in audit.notifications(services, pk) if not n["sent_at"]]
    for notice in pending:
        print(json.dumps(notice, ensure_ascii=False))
    if args.mark_sent and pending:
        with services.registry.write() as conn:
            audit_log.mark_notices_sent(conn, [n["pk"] for n in pending], audit._now())
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    if args.before and not args.removed:
        raise CliError("--before goes with --removed")
    if args.before and not _is_date(args.before):
        raise CliError(f"--before {args.before!r}: a date as YYYYMMDD")
    services = _services(args)
    try:
        if args.removed:
            return _purge_removed(services, args)
        due = Records(services.registry).purgeable()
        for pk in due:
            if args.dry_run:
                print(f"would purge the record of patient #{pk}")
                continue
            removed, unused = purge_record(services.registry, pk)
            for address in unused:
                services.blobs.delete(address)
            audit.record(services, "access-purge", _operator(), detail=f"patient #{pk}: {removed} objects removed")
            print(f"purged the record of patient #{pk} ({removed} registry objects)")
        if not due:
            print("no record is due for purging")
        return 0
    finally:
        services.close()


def _is_date(text: str) -> bool:
    """YYYYMMDD naming a day of the calendar (20241399 is not one)."""
    try:
        return text.isdigit() and len(text) == 8 and bool(datetime.strptime(text, "%Y%m%d"))
    except ValueError:
        return False


def _purge_removed(services: Services, args: argparse.Namespace) -> int:
    """The administrator's purge of removed objects: the tombstones ITI-62 and ITI-86 left
    (docs/access.md, "Removal leaves a tombstone") go for good, and the bytes nothing else uses."""
    if args.dry_run:
        with services.registry.read() as conn:
            count = updates.removed_count(conn, before=args.before)
        print(f"would purge {count} removed objects")
        return 0
    with services.registry.write() as conn:
        count = updates.removed_count(conn, before=args.before)
        unused = updates.purge_removed(conn, before=args.before)
    for address in unused:
        services.blobs.delete(address)
    audit.record(services, "access-purge", _operator(),
                 detail=f"{count} removed objects purged{' (removed before ' + args.before + ')' if args.before else ''}, "
                        f"{len(unused)} documents' bytes deleted")
    print(f"purged {count} removed objects and the bytes of {len(unused)} documents")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    services = _services(args)
    try:
        rows = audit.events(services, patient_id=args.patient, actor_id=args.actor, limit=args.limit)
        for row in rows:
            if args.json:
                print(json.dumps(row, ensure_ascii=False))
            else:
                who = f"{row['actor_id']} ({row['actor_kind']}{'/' + row['actor_role'] if row['actor_role'] else ''})"
                if row["issuer"]:
                    who += f" by {row['issuer']}"
                mode = f" [{row['purpose']}]" if row["purpose"] not in ("", "normal") else ""
                print(f"{row['recorded_at']} {row['action']:12} {row['decision']:15} {who}{mode} "
                      f"patient={row['patient_id'] or '-'} docs={len(row['objects'])} {row['detail']}")
        return 0
    finally:
        services.close()


def add_sign_parser(sub: Subparsers[argparse.ArgumentParser]) -> None:
    sign = sub.add_parser("sign", help="sign an ITI-41 submission (IHE DSG detached SubmissionSet signature)")
    sign.add_argument("envelope", type=Path, help="a SOAP ITI-41 request with inline (base64) documents")
    sign.add_argument("--credentials", type=Path, default=None,
                      help="a dev-credentials directory (uses its idp.key and idp.pem)")
    sign.add_argument("--key", type=Path, help="PEM private key of the signer")
    sign.add_argument("--cert", type=Path, help="PEM certificate of the signer")
    sign.add_argument("--out", type=Path, help="where to write the signed request (default: stdout)")
    sign.set_defaults(func=cmd_sign)


def cmd_sign(args: argparse.Namespace) -> int:
    key_path = args.key or (args.credentials / "idp.key" if args.credentials else None)
    cert_path = args.cert or (args.credentials / "idp.pem" if args.credentials else None)
    if key_path is None or cert_path is None:
        print("partage sign: give --credentials DIR or --key and --cert", file=sys.stderr)
        return 2
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise CliError(f"{key_path}: not an unencrypted PEM private key ({exc})", 2) from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise CliError(f"{key_path}: an RSA or EC private key is needed to sign", 2)
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    except ValueError as exc:
        raise CliError(f"{cert_path}: not a PEM certificate ({exc})", 2) from None
    envelope = parse_envelope(args.envelope.read_bytes())
    body = envelope.body
    submit = body.find(f"{{{C.LCM}}}SubmitObjectsRequest")
    if body.tag != f"{{{C.XDSB}}}ProvideAndRegisterDocumentSetRequest" or submit is None:
        print("partage sign: not an ITI-41 ProvideAndRegisterDocumentSetRequest", file=sys.stderr)
        return 2
    try:
        request = ebrim.read_submission(submit)
    except Exception as exc:   # XdsErrors and friends: the request's metadata are not usable
        raise CliError(f"{args.envelope}: the submission cannot be read: {exc}", 2) from None
    for document in body.findall(f"{{{C.XDSB}}}Document"):
        try:
            data = base64.b64decode("".join((document.text or "").split()), validate=True)
        except ValueError:
            raise CliError(f"{args.envelope}: Document {document.get('id', '?')} is not inline base64 "
                           "(sign takes requests with inline documents)", 2) from None
        request.contents[document.get("id", "")] = DocumentContent(
            file=io.BytesIO(data), size=len(data), sha1=hashlib.sha1(data).hexdigest())
    try:
        entry = sign_submission(request, key, cert)
    except SignatureError as exc:
        print(f"partage sign: {exc}", file=sys.stderr)
        return 1
    out = etree.Element(f"{{{C.XDSB}}}ProvideAndRegisterDocumentSetRequest", nsmap={"xdsb": C.XDSB})
    new_submit = etree.SubElement(out, f"{{{C.LCM}}}SubmitObjectsRequest", nsmap={"lcm": C.LCM, "rim": C.RIM})
    ebrim.write_object_list(request.objects(), new_submit)
    for entry_id, content in request.contents.items():
        content.file.seek(0)
        element = etree.SubElement(out, f"{{{C.XDSB}}}Document", id=entry_id)
        element.text = base64.b64encode(content.file.read()).decode("ascii")
    data = build_envelope(C.ACTION_PNR, out, to=envelope.to)
    assert request.submission_set is not None   # sign_submission refuses a submission without one
    if args.out:
        args.out.write_bytes(data)
        print(f"signed submission set {request.submission_set.unique_id}: signature document "
              f"{entry.unique_id} written to {args.out}", file=sys.stderr)
    else:
        sys.stdout.buffer.write(data)
    return 0
