"""FHIR resources on the wire, below the doors: what every reader of FHIR XML or JSON shares."""
