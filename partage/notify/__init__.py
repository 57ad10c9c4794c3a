"""Notifications: DSUB and FHIR subscriptions, the outbox sender, the patients' e-mails.

- `model`: a subscription in the model's terms, whichever door made it;
- `subscriptions`: who may subscribe, cancel, re-activate (the doors call it);
- `deliver`: one outbox row judged as the subscriber's read at delivery time, rendered by
  its door (`channels.Renderer`), POSTed, audited, marked;
- `mail`: the patients' notices (bris de glace, centre 15, new documents) in French by SMTP;
- `sender`: the background thread `partage serve` runs (start / stop).

The outbox rows are written by the registration (partage.registry.outbox); docs/notifications.md.
"""
