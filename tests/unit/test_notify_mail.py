"""The patients' e-mails: French, who / when / why, only the documents given (the caller
passes those the patient may see), one Message-ID per notice; SMTP failures classified."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from partage.config import Settings
from partage.metadata.datatypes import DTM, XON
from partage.metadata.model import Author
from partage.notify import mail
from partage.notify.mail import SmtpFailure, access_mail, documents_mail, message, send
from tests import factories as F
from tests.notify_support import SmtpServer
from tests.support import free_port

PID = F.patient_id()


def _event(**changes):
    values = {"actor_name": "Dr Louise URGENTISTE", "actor_id": "810000000005", "structure": "10B0000001",
              "reason": "patient inconscient aux urgences", "recorded_at": "2026-07-14T08:05:00.000000Z"}
    return SimpleNamespace(**{**values, **changes})


def test_bris_de_glace_notice_says_who_when_why_and_what():
    doc = F.document(PID, "d", title="Compte rendu des urgences", creation_time=DTM("20260713"))
    doc.authors = [Author(institutions=[XON.parse("CHU de Test", strict=False)])]
    notice = access_mail("bris_de_glace", _event(), [doc])
    assert notice.subject == "Votre dossier a été consulté en mode bris de glace"
    body = notice.body
    assert "Qui : Dr Louise URGENTISTE (identifiant national 810000000005, structure 10B0000001)" in body
    if mail.PARIS is not mail.UTC:
        assert "Quand : le 14/07/2026 à 10:05 (heure de Paris)" in body    # summer time: UTC+2
    assert "Pourquoi : patient inconscient aux urgences" in body
    assert "- Compte rendu des urgences du 13/07/2026 (CHU de Test)" in body
    assert notice.documents == [doc.unique_id]


def test_winter_time_and_no_documents_line_when_none_may_be_named():
    notice = access_mail("bris_de_glace", _event(recorded_at="2026-01-05T23:30:00.000000Z", reason=""), [])
    if mail.PARIS is not mail.UTC:
        assert "le 06/01/2026 à 00:30 (heure de Paris)" in notice.body
    assert "Documents consultés" not in notice.body and "Pourquoi : non précisé" in notice.body
    assert notice.documents == []


def test_centre_15_notice():
    notice = access_mail("centre_15", _event(actor_name="Dr Henri REGULATEUR (SAMU)", reason=""), [])
    assert "centre 15" in notice.subject
    assert "médecin régulateur du SAMU" in notice.body and "Dr Henri REGULATEUR (SAMU)" in notice.body
    assert "Pourquoi : régulation médicale d'urgence (centre 15)" in notice.body


def test_new_documents_notice():
    docs = [F.document(PID, "a", title="Bilan sanguin"), F.document(PID, "b", title="Ordonnance")]
    assert documents_mail(docs[:1]).subject == "Un nouveau document a été ajouté à votre dossier"
    both = documents_mail(docs)
    assert "De nouveaux documents" in both.subject and "Bilan sanguin" in both.body and "Ordonnance" in both.body


def test_message_headers():
    settings = Settings(mail_from="dmp@example.org")
    msg = message(settings, "jean@example.fr", documents_mail([F.document(PID, "a", title="Résumé")]), "n-1")
    assert (msg["From"], msg["To"], msg["Message-ID"], msg["Auto-Submitted"]) == (
        "dmp@example.org", "jean@example.fr", "<n-1@partage>", "auto-generated")
    assert "Résumé" in msg.get_content() and msg.get_content_charset() == "utf-8"


def test_send_through_a_real_smtp_server_and_classify_failures():
    with SmtpServer() as smtp:
        settings = Settings(smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="dmp@example.org")
        send(settings, message(settings, "jean@example.fr", documents_mail([F.document(PID, "a")]), "n-2"))
        received = smtp.wait(1, 5)
        assert len(received) == 1 and received[0]["Message-ID"] == "<n-2@partage>"
        assert smtp.inbox.envelopes == [("dmp@example.org", ["jean@example.fr"])]
    closed = Settings(smtp_host="127.0.0.1", smtp_port=free_port(), notify_timeout=2)
    with pytest.raises(SmtpFailure) as caught:
        send(closed, message(closed, "jean@example.fr", documents_mail([F.document(PID, "a")]), "n-3"))
    assert caught.value.permanent is False                 # the server is away: try again later


def test_a_refused_recipient_is_a_permanent_failure():
    with SmtpServer(refuse=frozenset({"gone@example.fr"})) as smtp:
        settings = Settings(smtp_host="127.0.0.1", smtp_port=smtp.port, mail_from="dmp@example.org")
        with pytest.raises(SmtpFailure) as caught:
            send(settings, message(settings, "gone@example.fr", documents_mail([F.document(PID, "a")]), "n-4"))
        assert caught.value.permanent is True and smtp.messages == []
