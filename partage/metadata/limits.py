"""How long a value of the model may be: the one statement of it.

The metadata rules refuse a longer value with an XDS error naming the attribute, and the
registry's columns are made to these sizes (`registry/schema.py`), so that what the rules
accept every engine can keep (PostgreSQL refuses an over-long value where SQLite keeps it).
"""

from __future__ import annotations

UNIQUE_ID = 128          # a uniqueId, OID or OID^extension
CODE = 256               # a code's value, and a referenceIdList CXi, as one string
CODING_SCHEME = 128      # a code's codingScheme (an OID or a URN)
AUTHOR_PERSON = 256      # authorPerson, an XCN as its HL7 text
MIME_TYPE = 128
HOME_COMMUNITY_ID = 64   # urn:oid: and an OID
