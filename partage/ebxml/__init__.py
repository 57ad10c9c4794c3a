"""XDS.b on the wire, below the doors: ebRIM <-> the typed model, SOAP 1.2, MTOM/XOP.

`ebrim` reads a SubmitObjectsRequest into `metadata.model` and writes the model back;
`soap` builds and parses envelopes and faults; `mtom` reads and writes multipart/related
messages with XOP includes; `constants` names the actions, classification schemes and
error codes. The XDS door (`partage.xds`), the validation page (`partage.web.validate`),
the CLI and the test-kit runners share these readers, so an ITI-41 is parsed one way.
"""
