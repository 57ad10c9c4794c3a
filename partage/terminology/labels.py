"""French labels for codes, from the value sets (the configured SVS directory over the
shipped defaults): what the professional's page says for a sex, an interpretation flag,
a criticality, a document class or type when the document itself gave no displayName.

Configured files come first, so the official CI-SIS JDV files (`--cda-valuesets`, the
directory ANS publishes) win over Partage's minimal defaults (`terminology/defaults`).
"""

from __future__ import annotations

from functools import lru_cache

from .svs import ValueSets, load_value_sets, norm_system

GENDER_SYSTEM = "2.16.840.1.113883.5.1"
INTERPRETATION_SYSTEM = "2.16.840.1.113883.5.83"
CRITICALITY_SYSTEM = "2.16.840.1.113883.4.642.4.130"
ALLERGY_CLINICAL_SYSTEM = "2.16.840.1.113883.4.642.4.1373"
CLASS_SYSTEM = "1.2.250.1.213.1.1.4.1"
LOINC = "2.16.840.1.113883.6.1"


class Labels:
    """(code system, code) -> French display, the first value set that names it winning
    (value sets key their displays by (code, system))."""

    def __init__(self, value_sets: ValueSets) -> None:
        self._display: dict[tuple[str, str], str] = {}
        for value_set in value_sets.values():
            for key, text in value_set.display.items():
                self._display.setdefault(key, text)

    def __call__(self, system: str, code: str, default: str = "") -> str:
        return self._display.get((code, norm_system(system)), default)

    def __len__(self) -> int:
        return len(self._display)


@lru_cache(maxsize=8)
def _labels(directory: str) -> Labels:
    return Labels(load_value_sets(directory or None))


def labels(directory: str = "") -> Labels:
    """The labels of a value-set directory ("" = the shipped defaults only), loaded once."""
    return _labels(directory)
