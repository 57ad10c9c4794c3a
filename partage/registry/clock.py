"""The registry's clock: UTC DTM digits, the form every time column holds."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> str:
    return datetime.now(UTC).strftime("%Y%m%d%H%M%S")
