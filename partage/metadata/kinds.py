"""The four kinds of registry objects, as the registry stores them (one letter each).

A model fact, not a storage one: doors and flows name the kind of what they ask for
(documents, submission sets, folders, associations) without reaching for the tables.
"""

from __future__ import annotations

KIND_DOCUMENT = "D"
KIND_SUBMISSION_SET = "S"
KIND_FOLDER = "F"
KIND_ASSOCIATION = "A"
