"""The patients' notices, e-mailed in French: who opened the record, when and why (bris de
glace, centre 15), and optionally the new documents of their record.

A notice names only documents the patient may see (the query flow, as the patient): a
document hidden from the patient (INVISIBLE_PATIENT, not yet released...) is never named
nor counted, and a new-document notice whose documents are all hidden is not sent at all.
A new-document notice is judged when it is sent, as the subscribers' notifications are
(`deliver.new_documents`): a document deprecated or removed since is no longer new.
The address is the patient's (`PatientRecord.email`: FHIR Patient telecom, else PID-13 of
the ITI-8 feed); a patient without one gets nothing (the notice is marked `skipped`).

SMTP settings: `smtp_host` (no host: notices stay queued), `smtp_port`, `smtp_security`
(none, starttls, ssl), `smtp_user` / `smtp_password`, `mail_from`. Each notice is one message
whose Message-ID is the notice's id, so a resend after a crash is recognisably the same.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from ..access import audit
from ..access.actor import BRIS_DE_GLACE, CENTRE_15, PATIENT, SYSTEM, Actor
from ..config import Settings
from ..metadata.datatypes import CX
from ..metadata.errors import XdsErrors
from ..metadata.kinds import KIND_DOCUMENT
from ..metadata.model import DocumentEntry
from ..query import QueryService
from ..registry import outbox, patients
from ..registry.outbox import NOTICES
from ..services import Services
from .deliver import backoff, new_documents
from .model import Filter

log = logging.getLogger("partage.notify")

NOTIFIER = Actor(id="partage-notifier", name="avis au patient par courriel", kind=SYSTEM, auth_method="internal")
SECURITIES = ("none", "starttls", "ssl")

try:
    PARIS: Any = ZoneInfo("Europe/Paris")
except ZoneInfoNotFoundError:   # no time zone database on this host: say UTC rather than guess
    PARIS = UTC


@dataclass(frozen=True)
class Mail:
    subject: str
    body: str
    documents: list[str]     # uniqueIds named (for the audit record)


def _when(text: str) -> str:
    """An audit timestamp (ISO 8601 UTC) as the patient reads it: Paris time, French format."""
    try:
        moment = datetime.strptime(text[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC).astimezone(PARIS)
    except ValueError:
        return text
    zone = "heure de Paris" if PARIS is not UTC else "UTC"
    return f"le {moment:%d/%m/%Y} à {moment:%H:%M} ({zone})"


def _document_line(doc: DocumentEntry) -> str:
    parts = [doc.title or "document sans titre"]
    if doc.creation_time is not None:
        digits = doc.creation_time.lower_bound()
        parts.append(f"du {digits[6:8]}/{digits[4:6]}/{digits[0:4]}")
    institutions = sorted({x.organization_name for a in doc.authors for x in a.institutions if x.organization_name})
    if institutions:
        parts.append(f"({', '.join(institutions)})")
    return "- " + " ".join(parts)


FOOTER = ("\nCe message vous est envoyé automatiquement par le service de partage de documents de santé ; "
          "merci de ne pas y répondre.\n")


def access_mail(kind: str, event: Any, documents: list[DocumentEntry]) -> Mail:
    """The notice of a bris de glace or centre 15 access, from its audit record."""
    who = event.actor_name or "un professionnel de santé"
    ids = [f"identifiant national {event.actor_id}"] if event.actor_id else []
    if event.structure:
        ids.append(f"structure {event.structure}")
    who_line = f"{who} ({', '.join(ids)})" if ids else who
    if kind == CENTRE_15:
        subject = "Votre dossier a été consulté par la régulation médicale (centre 15)"
        intro = ("Votre dossier médical partagé a été consulté par un médecin régulateur du SAMU "
                 "(centre 15), dans le cadre d'une régulation médicale d'urgence.")
        why = event.reason or "régulation médicale d'urgence (centre 15)"
    else:
        subject = "Votre dossier a été consulté en mode bris de glace"
        intro = ("Votre dossier médical partagé a été consulté en mode « bris de glace » : un accès "
                 "d'urgence, sans autorisation préalable, réservé aux situations où votre état de "
                 "santé l'exige.")
        why = event.reason or "non précisé"
    lines = ["Bonjour,", "", intro, "", f"Qui : {who_line}", f"Quand : {_when(event.recorded_at)}",
             f"Pourquoi : {why}", ""]
    if documents:
        lines += ["Documents consultés :", *[_document_line(d) for d in documents], ""]
    lines += ["Cet accès est inscrit dans l'historique des accès à votre dossier. Si vous estimez qu'il "
              "n'était pas justifié, vous pouvez vous opposer au mode bris de glace ou bloquer ce "
              "professionnel depuis votre espace patient.", FOOTER]
    return Mail(subject, "\n".join(lines), [d.unique_id for d in documents])


def documents_mail(documents: list[DocumentEntry]) -> Mail:
    """The notice of new documents in the record (only those the patient may see)."""
    plural = len(documents) > 1
    subject = "De nouveaux documents ont été ajoutés à votre dossier" if plural else \
        "Un nouveau document a été ajouté à votre dossier"
    lines = ["Bonjour,", "",
             ("De nouveaux documents ont été ajoutés" if plural else "Un nouveau document a été ajouté")
             + " à votre dossier médical partagé :", *[_document_line(d) for d in documents], "",
             "Vous pouvez les consulter depuis votre espace patient.", FOOTER]
    return Mail(subject, "\n".join(lines), [d.unique_id for d in documents])


def message(settings: Settings, to: str, mail: Mail, notice_id: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = settings.mail_from
    msg["To"] = to
    msg["Subject"] = mail.subject
    msg["Date"] = format_datetime(datetime.now(UTC))
    msg["Message-ID"] = f"<{notice_id}@partage>" if notice_id else make_msgid(domain="partage")
    msg["Auto-Submitted"] = "auto-generated"   # RFC 3834: no auto-replies
    msg.set_content(mail.body, charset="utf-8")
    return msg


class SmtpFailure(Exception):
    def __init__(self, detail: str, permanent: bool) -> None:
        super().__init__(detail)
        self.permanent = permanent


def send(settings: Settings, msg: EmailMessage) -> None:
    """One message through the configured SMTP server; SmtpFailure says whether to retry.

    `notify_timeout` bounds the whole exchange, as it bounds a rest-hook POST: smtplib's timeout
    is per read, and a server answering a byte at a time (or an endless multi-line reply) would
    hold the sender for as long as it liked; at the deadline the connection is shut down."""
    security = (settings.smtp_security or "none").lower()
    client: smtplib.SMTP = (smtplib.SMTP_SSL(timeout=settings.notify_timeout, context=ssl.create_default_context())
                            if security == "ssl" else smtplib.SMTP(timeout=settings.notify_timeout))
    expired = threading.Event()

    def cut() -> None:
        expired.set()
        sock = getattr(client, "sock", None)
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    deadline = threading.Timer(settings.notify_timeout, cut)
    deadline.daemon = True
    deadline.start()
    try:
        with client:
            client.connect(settings.smtp_host, settings.smtp_port)
            if security == "starttls":
                client.starttls(context=ssl.create_default_context())
            if settings.smtp_user:
                client.login(settings.smtp_user, settings.smtp_password)
            client.send_message(msg)
    except smtplib.SMTPRecipientsRefused as exc:
        codes = [code for code, _ in exc.recipients.values()]
        raise SmtpFailure(f"recipient refused: {codes}", all(c >= 500 for c in codes)) from exc
    except (smtplib.SMTPException, OSError) as exc:
        if expired.is_set():
            raise SmtpFailure(f"no answer within {settings.notify_timeout:g} s", False) from exc
        if isinstance(exc, smtplib.SMTPResponseException):
            raise SmtpFailure(f"SMTP {exc.smtp_code}: {exc.smtp_error!r}", exc.smtp_code >= 500) from exc
        raise SmtpFailure(f"{type(exc).__name__}: {exc}", False) from exc
    finally:
        deadline.cancel()


class Notices:
    """Delivers claimed patient notices by e-mail."""

    def __init__(self, services: Services) -> None:
        self.services = services
        self.settings = services.settings

    def run(self, row: Any, token: str) -> str:
        registry = self.services.registry

        def settle(state: str, reason: str = "") -> str:
            outbox.settle(registry, NOTICES, row.pk, token, state, reason)
            if state != "sent":
                log.info("patient notice #%s (%s): %s: %s", row.pk, row.kind, state, reason)
            return state

        with registry.read() as conn:
            record = patients.record(conn, patients.surviving(conn, row.patient_pk))
            event = outbox.audit_row(conn, row.audit_pk)
        if record is None or record.xds_patient_id is None:
            return settle("skipped", "the patient's record no longer exists")
        if not record.email:
            return settle("skipped", "the patient has no e-mail address")
        context = audit.begin("patient-notice", request=f"SMTP {self.settings.smtp_host}")
        try:
            audit.note_actor(NOTIFIER)
            mail = self._compose(row, record.xds_patient_id, event)
            if mail is None:
                return settle("skipped", "nothing the patient may see to tell")
            audit.note_patient(record.xds_patient_id.format(), record.pk)
            ctx = audit.current()
            assert ctx is not None
            try:   # fail closed: no e-mail unless its audit record can be written
                audit.open_record(self.services, ctx)
            except audit.AuditUnavailable as exc:
                outbox.retry(registry, NOTICES, row.pk, token, time.time() + backoff(int(row.attempts) + 1),
                             str(exc), count=False)
                return "postponed"
            try:
                send(self.settings, message(self.settings, record.email, mail, row.notice_id or ""))
            except SmtpFailure as exc:
                ctx.failure = f"e-mail to the patient not sent: {exc}"
                audit.finish(self.services, ctx, 502)
                attempts = int(row.attempts) + 1
                if exc.permanent or attempts >= self.settings.notify_max_attempts:
                    return settle("failed", f"{exc} (attempt {attempts})")
                outbox.retry(registry, NOTICES, row.pk, token, time.time() + backoff(attempts),
                             f"{exc} (attempt {attempts})")
                return "retry"
            ctx.remarks.append(f"{row.kind} notice e-mailed to the patient")
            audit.finish(self.services, ctx, 200)
        finally:
            audit.end(context)
        return settle("sent")

    def _compose(self, row: Any, patient_id: CX, event: Any) -> Mail | None:
        as_patient = QueryService(self.services, Actor(id=patient_id.id, name="the patient", kind=PATIENT,
                                                       patient_id=patient_id, auth_method="internal"))
        if row.kind in (BRIS_DE_GLACE, CENTRE_15):
            if event is None:
                return None
            named = json.loads(event.objects or "[]")
            shown = as_patient.visible_unique_ids(named)
            docs: list[DocumentEntry] = []
            if shown:
                try:
                    found = as_patient.get_objects(KIND_DOCUMENT, unique_ids=sorted(shown)).objects
                except XdsErrors:
                    found = []
                docs = _newest([d for d in found if isinstance(d, DocumentEntry)])
            return access_mail(row.kind, event, docs)
        docs = new_documents(as_patient, patient_id, json.loads(row.documents or "[]"), Filter())
        return documents_mail(_newest(docs)) if docs else None


def _newest(docs: list[DocumentEntry]) -> list[DocumentEntry]:
    """One line per document (uniqueId), in a stable order."""
    by_uid: dict[str, DocumentEntry] = {}
    for doc in docs:
        by_uid.setdefault(doc.unique_id, doc)
    return [by_uid[uid] for uid in sorted(by_uid)]
