"""Who is asking: the authenticated actor every door hands to the policy.

Authentication mechanisms (SAML/VIHF assertions, bearer JWTs) produce an Actor; the
only other source is the explicit insecure development mode, whose actor says so in
its id so that it is visible in every audit record.
"""

from __future__ import annotations

from dataclasses import dataclass


class AuthenticationRequired(Exception):
    """No acceptable credentials: the door answers 401 / a SOAP fault."""


@dataclass(frozen=True)
class Actor:
    id: str                      # national professional id, patient INS, or system id
    name: str = ""
    kind: str = "professional"   # professional | patient | representative | system | insecure-dev
    role: str = ""               # profession / specialty code
    purpose: str = "normal"      # normal | bris_de_glace | centre_15
    structure: str = ""          # healthcare organisation id
    address: str = ""            # network origin, for the audit trail


INSECURE_DEV_ACTOR = Actor(id="insecure-dev", name="insecure development mode", kind="insecure-dev")
PATIENT_FEED_ACTOR = Actor(id="patient-identity-feed", name="ITI-8 MLLP listener", kind="system")
