"""FHIR resources on the wire, below the doors: what every reader of FHIR XML or JSON shares.

`formats` parses a resource (XML or JSON, bounded) and `structure` walks it; `mapping`
turns DocumentReference / List / Binary into the typed model and back; `bundle` reads an
ITI-65 transaction; `datatypes` and `codes` map HL7 v2 values and coding systems;
`outcome` is the one OperationOutcome builder. The FHIR door (`partage.fhir`) and the
validation page (`partage.web.validate`) share them.
"""
