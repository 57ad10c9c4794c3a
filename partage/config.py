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


@dataclass
class Settings:
    data_dir: Path = Path("partage-data")
    database_url: str = ""            # default: sqlite:///<data_dir>/registry.sqlite3
    host: str = "127.0.0.1"
    port: int = 8080
    mllp_host: str = ""               # default: same as host
    mllp_port: int = 2575             # 0 disables the MLLP listener
    hl7_business_ack_to: str = ""     # HOST:PORT (MLLP) receiving the document feed's ZAM^Z01 business acks
    workers: int = 2
    threads: int = 4
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
    http_timeout: int = 120           # seconds a worker may spend on one request
    insecure_dev: bool = False        # serve without authentication: development only
    trust: str = ""                   # PEM file of CA certificates trusted to sign SAML assertions / JWTs
    audience: str = "partage"         # the audience credentials must name (SAML Audience, JWT aud)
    clock_skew: int = 120             # seconds of clock difference tolerated on validity windows
    access_matrix: str = ""           # JSON file overriding the role x document class table
    require_signed_submissions: bool = False   # refuse unsigned submission sets (IHE DSG)
    one_time_credentials: str = "saml"   # credentials usable once: saml (VIHF per request) | all | none
    blob_url: str = ""                # s3://bucket/prefix or a directory; "" = <data_dir>/blobs
    s3_endpoint_url: str = ""         # non-AWS S3 endpoint (MinIO...); credentials: boto3's chain
    db_pool_size: int = 5             # PostgreSQL: connections kept per worker process
    db_max_overflow: int = 10         # PostgreSQL: extra connections under load, closed after use
    db_pool_timeout: int = 30         # PostgreSQL: seconds to wait for a free connection
    db_pool_recycle: int = 1800       # PostgreSQL: reconnect connections older than this (s; -1 never)
    text_indexer: bool = True         # run the background PDF text indexer in each worker (clinical/queue.py)
    oidc_issuer: str = ""             # the professional's page signs in with this OpenID provider (Pro Santé Connect)
    oidc_client_id: str = "partage"   # this server's client id at the provider
    oidc_client_secret: str = ""      # ... and its secret
    session_secret: str = ""          # signs the page's session cookies ("" = a key kept in <data_dir>/session.key)
    session_lifetime: int = 8 * 3600  # seconds a page session lasts after signing in
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
            if raw is not None:
                setattr(settings, f.name, _coerce(getattr(settings, f.name), raw))
        for key, value in overrides.items():
            if value is not None:
                setattr(settings, key, _coerce(getattr(settings, key), value))
        return settings


def _coerce(current: Any, value: Any) -> Any:
    if isinstance(value, str):
        if isinstance(current, bool):
            return value.strip().lower() in ("1", "true", "yes", "on")
        if isinstance(current, int):
            return int(value)
        if isinstance(current, Path):
            return Path(value)
    return value
