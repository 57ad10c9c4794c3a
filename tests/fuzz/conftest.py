"""Fuzz targets: hypothesis drives mutated real messages through every parser and door.

Bounded: PARTAGE_FUZZ_EXAMPLES examples per target (CI's default keeps the whole set
under a minute); raise it for a long local run. A finding becomes a regression test in
the module of its door (hypothesis also replays it from its example database).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

from partage.config import Settings
from partage.services import Services

settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("PARTAGE_FUZZ_EXAMPLES", "150")), deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                           HealthCheck.data_too_large])
FUZZ = settings.get_profile("fuzz")


@pytest.fixture(scope="module")
def app_client(tmp_path_factory):
    """The real Flask app over a temporary data directory (the doors' own code paths)."""
    from partage.server.app import create_app

    data_dir = tmp_path_factory.mktemp("fuzz")
    services = Services.open(Settings(data_dir=data_dir, insecure_dev=True))
    app = create_app(services=services)
    yield app.test_client()
    services.close()
