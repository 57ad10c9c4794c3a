"""The benchmarks' synthetic data stay realistic: CDAs built from the corpus models with fresh
ids pass the full ingest flow (schema, CI-SIS rules, terminology, metadata cross-check)."""

from __future__ import annotations

import hashlib

from partage.access.actor import INSECURE_DEV_ACTOR
from partage.config import Settings
from partage.ingest import IngestService
from partage.metadata.query import DocumentFilter
from partage.query import QueryService
from partage.services import Services
from tests.conftest import corpus_path


def test_nir_has_a_valid_key_and_is_unique():
    from benchmarks.synth import nir

    values = [nir(i) for i in range(2000)] + [nir(1_000_000 + i) for i in range(10)]
    assert len(set(values)) == len(values)
    for v in values:
        assert len(v) == 15 and 97 - int(v[:13]) % 97 == int(v[13:])


def test_synthetic_documents_pass_full_validation(tmp_path):
    from benchmarks.synth import Corpus, Generator, patient_cx

    corpus = Corpus.load(corpus_path("cda"))
    settings = Settings(data_dir=tmp_path, insecure_dev=True,
                        cda_schema_dir=str(corpus_path("xsd", "cda")),
                        cda_valuesets_dir=str(corpus_path("valuesets")))
    services = Services.open(settings)
    with services.registry.write() as conn:
        for i in range(3):
            services.registry.upsert_patient(conn, [patient_cx(i)])
    generator = Generator(corpus, seed=11)
    ingest = IngestService(services, INSECURE_DEV_ACTOR)
    models = set()
    for n in range(12):                       # several models, one padded to 200 KB
        request, payloads = generator.submission(n % 3, 1, with_bytes=True, size=200_000 if n == 0 else None)
        [data] = payloads.values()
        assert hashlib.sha1(data).hexdigest() == request.documents[0].hash
        if n == 0:
            assert len(data) >= 200_000          # padded to the size asked (or the model's own)
        ingest.provide_and_register(request)   # raises XdsErrors on any refusal
        models.add(request.documents[0].title)
    assert len(models) > 3
    found = QueryService(services, INSECURE_DEV_ACTOR).find_documents(patient_cx(0), DocumentFilter(["Approved"]))
    assert len(found.objects) == 4
    services.close()
