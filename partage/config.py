"""Settings: defaults, then PARTAGE_* environment variables, then command-line flags.

The defaults make `partage serve` work on a fresh machine: SQLite and blobs under one
data directory, created on first start.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

# Partage's own OIDs, in the UUID-derived arc 2.25 (ITU-T X.667): unique without registration.
DEFAULT_REPOSITORY_UNIQUE_ID = "2.25.211310386435413264734375473219935735845"
DEFAULT_HOME_COMMUNITY_ID = "urn:oid:2.25.211310386435413264734375473219935735846"


class SettingsError(ValueError):
    """A setting (flag or PARTAGE_* variable) has a value that cannot be used; the message names it."""


@dataclass
class Settings:
    data_dir: Path = Path("partage-data")
    database_url: str = ""            # default: sqlite:///<data_dir>/registry.sqlite3
    host: str = "127.0.0.1"
    port: int = 8080
    mllp_host: str = ""               # default: same as host
    mllp_port: int = 2575             # 0 disables the MLLP listener
    hl7_business_ack_to: str = ""     # HOST:PORT (MLLP) receiving the document feed's ZAM^Z01 business acks
    hl7_journal_max_messages: int = 10000        # the document feed's messages kept as not processed
    hl7_journal_max_bytes: int = 1024 * 1024 * 1024   # and their bytes (hl7/not-processed/)
    hl7_answers_max_messages: int = 100000      # answers of accepted HL7 messages remembered (retransmissions)
    hl7_answers_max_age: int = 30 * 24 * 3600    # and for how long, in seconds (registry table hl7_answers)
    workers: int = 2
    threads: int = 8                  # application threads per worker (requests inside the app)
    codes: str = ""                   # affinity domain: SVS directory or NIST codes.xml
    cda_schema_dir: str = ""          # directory holding CDA_extended.xsd / CDA.xsd
    cda_valuesets_dir: str = ""       # SVS directory for the CDA terminology layer
    cda_schematron: str = ""          # an ISO Schematron (.sch) run as profile layer 3
    cda_model_schematrons: str = ""   # ANS TestContenuCDA layout: schematrons/CI-SIS_*.sch, jeuxDeValeurs/
    cache_dir: str = ""               # compiled-schematron cache ("" = $XDG_CACHE_HOME/partage)
    validation_profile: str = "cisis"  # CDA profile of the ingest flow (partage.cda.profile.PROFILES)
    validation_blocking: str = ""     # layers whose errors refuse a document, e.g. "schema,rules,4,5";
    #                                   "" = the profile's default, "none" = advisory (parse errors only)
    validate_max_bytes: int = 20 * 1024 * 1024   # POST /validate: largest upload accepted
    repository_unique_id: str = DEFAULT_REPOSITORY_UNIQUE_ID
    home_community_id: str = DEFAULT_HOME_COMMUNITY_ID
    max_request_bytes: int = 300 * 1024 * 1024
    max_documents_per_submission: int = 1000
    query_result_limit: int = 5000    # beyond this a stored query answers XDSTooManyResults
    http_timeout: int = 120           # seconds a worker may go without answering the master (heartbeat)
    # --- limits and deadlines of the HTTP doors (docs/robustness.md) ---
    header_timeout: float = 10.0      # s to send a request's headers (new or kept-alive connection)
    body_timeout: float = 30.0        # s of grace for a request body, then it must keep body_min_rate
    body_min_rate: int = 16 * 1024    # bytes/s a body must average after the grace period
    send_timeout: float = 60.0        # s a client may take to accept a chunk of the answer
    queue_timeout: float = 30.0       # s a request may wait for a free thread before a 503
    max_queued: int = 256             # requests waiting for a thread (per worker) before a 503
    registry_max_bytes: int = 32 * 1024 * 1024   # POST /xds/registry (metadata only)
    soap_max_bytes: int = 64 * 1024 * 1024       # a SOAP envelope (plain body or MTOM root part), held in memory
    fhir_max_bytes: int = 160 * 1024 * 1024      # /fhir bodies (an ITI-65 Bundle carries base64 documents)
    other_max_bytes: int = 64 * 1024  # any other route
    max_json_depth: int = 64          # nesting of a JSON body
    max_json_containers: int = 2000   # objects + arrays of a JSON body, beyond one per 16 bytes
    max_bundle_entries: int = 5000    # entries of one FHIR Bundle
    max_report_findings: int = 1000   # findings kept per validation report (the rest counted)
    # --- MLLP (ITI-8 and the document feed) ---
    mllp_idle_timeout: float = 300.0  # s for one whole message, from its first byte (bytes do not reset it)
    mllp_max_message: int = 64 * 1024 * 1024     # one MLLP frame
    mllp_max_connections: int = 64   # concurrent MLLP connections
    mllp_max_buffered: int = 128 * 1024 * 1024   # bytes of frames held or being processed, all connections
    insecure_dev: bool = False        # serve without authentication: development only
    trust: str = ""                   # PEM file of CA certificates trusted to sign SAML assertions / JWTs
    issuers: str = ""                 # JSON file: each trusted issuer and the certificates that may sign for it
    #                                   ("" = a credential's issuer must be its signing certificate's own identity)
    audience: str = "partage"         # the audience credentials must name (SAML Audience, JWT aud)
    clock_skew: int = 120             # seconds of clock difference tolerated on validity windows
    access_matrix: str = ""           # JSON file overriding the role x document class table
    require_signed_submissions: bool = False   # refuse unsigned submission sets (IHE DSG)
    one_time_credentials: str = "saml"   # credentials usable once: saml (VIHF per request) | all | none
    blob_url: str = ""                # s3://bucket/prefix or a directory; "" = <data_dir>/blobs
    s3_endpoint_url: str = ""         # non-AWS S3 endpoint (MinIO...); credentials: boto3's chain
    s3_timeout: float = 30.0          # seconds an S3 call may wait for the store's answer (repository/s3.py)
    db_pool_size: int = 5             # PostgreSQL: connections kept per worker process
    db_max_overflow: int = 10         # PostgreSQL: extra connections under load, closed after use
    db_pool_timeout: int = 30         # PostgreSQL: seconds to wait for a free connection
    db_pool_recycle: int = 1800       # PostgreSQL: reconnect connections older than this (s; -1 never)
    # PostgreSQL, the server's requests only (not migrations, bulk loads, fsck): seconds one SQL
    # statement may run, a lock wait or a shard's answer included, and may wait for a lock; past
    # them the request is a 503 + Retry-After and its transaction rolls back (docs/robustness.md)
    statement_timeout: float = 30.0
    lock_timeout: float = 30.0
    text_indexer: bool = True         # read PDFs' text in the server's background process (server/background.py)
    # Notifications (docs/notifications.md): DSUB / FHIR subscriptions and the patients' e-mails.
    notifier: bool = True             # `partage serve` runs the outbox sender (partage/notify/sender.py)
    notify_poll: float = 0.5          # seconds between two looks at the outbox when idle
    notify_timeout: float = 10.0      # seconds one delivery (HTTP POST, SMTP exchange) may take
    notify_max_attempts: int = 12     # a delivery failing this often is given up (backoff 1 s .. 5 min)
    subscription_max_days: int = 365  # a subscription ends after this long at most (and by default)
    notify_patient_documents: bool = False   # also e-mail patients about each new document they may see
    smtp_host: str = ""               # SMTP server for the patients' e-mails ("" = e-mails stay queued)
    smtp_port: int = 25
    smtp_security: str = "none"       # none | starttls | ssl
    smtp_user: str = ""
    smtp_password: str = ""
    mail_from: str = "partage@localhost"   # sender address of the patients' e-mails
    # where subscribers' endpoints may be (partage/notify/destinations.py): public, private,
    # loopback, networks (CIDR), host names, *.domains
    notify_destinations: str = "public,private,loopback"
    oidc_issuer: str = ""             # the professional's page signs in with this OpenID provider (Pro Santé Connect)
    oidc_client_id: str = "partage"   # this server's client id at the provider
    oidc_client_secret: str = ""      # ... and its secret
    session_secret: str = ""          # signs the page's session cookies ("" = a key kept in <data_dir>/session.key)
    session_lifetime: int = 8 * 3600  # seconds a page session lasts after signing in
    session_idle: int = 30 * 60       # seconds a page session lasts unused (NIST SP 800-63B AAL2)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def database(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.sqlite3').resolve()}"

    @property
    def blob_dir(self) -> Path:
        return self.data_dir / "blobs"

    @property
    def mllp_bind_host(self) -> str:
        return self.mllp_host or self.host

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Defaults, overridden by PARTAGE_<FIELD> variables, overridden by non-None kwargs."""
        env = os.environ if environ is None else environ
        settings = cls()
        for f in fields(cls):
            if f.name == "extra":
                continue
            raw = env.get(f"PARTAGE_{f.name.upper()}")
            if raw is not None and (raw.strip() or isinstance(getattr(settings, f.name), str)):
                setattr(settings, f.name, _coerce_named(f"PARTAGE_{f.name.upper()}", getattr(settings, f.name), raw))
        for key, value in overrides.items():
            if value is not None:
                flag = "--" + key.replace("_", "-")
                setattr(settings, key, _coerce_named(flag, getattr(settings, key), value))
        return settings

    def problems(self) -> list[str]:
        """Values no server can run with, each naming its setting (files are checked by the CLI)."""
        out = []
        for name, low, high in (("port", 1, 65535), ("mllp_port", 0, 65535), ("workers", 1, 64),
                                ("threads", 1, 256)):
            value = getattr(self, name)
            if not low <= value <= high:
                out.append(f"{_name(name)}: {value} is not between {low} and {high}")
        for name in ("header_timeout", "body_timeout", "body_min_rate", "send_timeout", "queue_timeout",
                     "max_queued", "http_timeout", "max_request_bytes", "registry_max_bytes", "soap_max_bytes",
                     "fhir_max_bytes", "other_max_bytes", "validate_max_bytes", "max_json_depth",
                     "max_json_containers", "max_bundle_entries", "max_report_findings", "mllp_idle_timeout",
                     "mllp_max_message", "mllp_max_connections", "mllp_max_buffered", "hl7_journal_max_messages",
                     "hl7_journal_max_bytes", "hl7_answers_max_messages", "hl7_answers_max_age",
                     "max_documents_per_submission", "query_result_limit", "session_lifetime", "session_idle"):
            if getattr(self, name) <= 0:
                out.append(f"{_name(name)}: {getattr(self, name)} must be positive")
        for name in ("notify_poll", "notify_timeout", "notify_max_attempts", "subscription_max_days", "s3_timeout",
                     "statement_timeout", "lock_timeout"):
            if getattr(self, name) <= 0:
                out.append(f"{_name(name)}: {getattr(self, name)} must be positive")
        if not 1 <= self.smtp_port <= 65535:
            out.append(f"{_name('smtp_port')}: {self.smtp_port} is not between 1 and 65535")
        if self.smtp_security.lower() not in ("none", "starttls", "ssl"):
            out.append(f"{_name('smtp_security')}: {self.smtp_security!r} is not none, starttls or ssl")
        if self.one_time_credentials not in ("saml", "all", "none"):
            out.append(f"{_name('one_time_credentials')}: {self.one_time_credentials!r} is not saml, all or none")
        if self.oidc_issuer and not self.oidc_issuer.startswith(("https://", "http://")):
            out.append(f"{_name('oidc_issuer')}: {self.oidc_issuer!r} is not an http(s) URL")
        if self.oidc_issuer and not self.oidc_client_secret:
            out.append(f"{_name('oidc_client_secret')}: needed with {_name('oidc_issuer')} (the provider "
                       "authenticates this server with it)")
        if self.hl7_business_ack_to:
            host, sep, port = self.hl7_business_ack_to.rpartition(":")
            if not sep or not port.isdigit():
                out.append(f"{_name('hl7_business_ack_to')}: {self.hl7_business_ack_to!r} is not HOST:PORT")
        return out


def _name(field_name: str) -> str:
    """How a user names a setting: its flag and its variable."""
    return f"--{field_name.replace('_', '-')} (PARTAGE_{field_name.upper()})"


def _coerce_named(name: str, current: object, value: object) -> object:
    try:
        return _coerce(current, value)
    except ValueError:
        kind = "a number" if isinstance(current, int | float) and not isinstance(current, bool) else "valid"
        raise SettingsError(f"{name}: {value!r} is not {kind}") from None


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(value, str):
        if isinstance(current, bool):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, float):
            return float(value)
        if isinstance(current, Path):
            return Path(value)
    return value
