"""Delivery of the document feed's business acknowledgement (the IG's ZAM^Z01).

When a message asks for it (OBX ACK_RECEPTION = Y) and `hl7_business_ack_to` names the
creator's MLLP listener (HOST:PORT), the ZAM^Z01 written by `acks.business_ack` is sent from a
background thread once the message is processed, so the HL7 acknowledgement is not delayed.
One that cannot be delivered is kept in `<data dir>/hl7/business-acks-not-delivered/`.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from pathlib import Path

from ..metadata.er7 import MessageHeader
from ..services import Services
from .acks import business_ack
from .journal import write_atomically
from .mllp import MllpClient, MllpError
from .outcome import FeedOutcome

log = logging.getLogger("partage.hl7.documents")


def send_business_ack(services: Services, outcome: FeedOutcome, received: MessageHeader) -> None:
    """Deliver the ZAM^Z01 of `outcome` in the background (nothing when no listener is set)."""
    target = services.settings.hl7_business_ack_to
    if not target:
        return
    text = business_ack(outcome, received)
    outbox = Path(services.settings.data_dir) / "hl7" / "business-acks-not-delivered"
    threading.Thread(target=_deliver, args=(text, target, outbox, outcome.control_id), name="zam",
                     daemon=True).start()


def _deliver(text: str, target: str, outbox: Path, control_id: str) -> None:
    host, _, port = target.rpartition(":")
    try:
        with MllpClient(host or "127.0.0.1", int(port), timeout=30) as client:
            client.send(text)
    except (MllpError, OSError, ValueError) as exc:
        log.warning("ZAM^Z01 for %s not delivered to %s: %s", control_id, target, exc)
        try:
            outbox.mkdir(parents=True, exist_ok=True)
            write_atomically(outbox / f"{hashlib.sha256(text.encode()).hexdigest()}.hl7", text.encode("utf-8"))
        except OSError:
            log.exception("ZAM^Z01 for %s lost", control_id)
