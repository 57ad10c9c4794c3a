"""Clinical reading: what a professional needs from a patient's record at a glance.

- `extract`: level-3 CDA entries (lab results, allergies, problems, treatments,
  vaccinations, vital signs) -> `Fact`s, for the document models Partage knows;
- `text`: the searchable text of a document (CDA narrative, PDF bodies);
- `index`: both written in the registration's own transaction (facts appear exactly
  when their document does), except the text of PDFs, queued there;
- `queue`: the durable queue of PDF text jobs and the background indexer that does them;
- `read`: facts and keyword search for one actor, through the access policy: a fact
  or a text from a document the actor may not see is neither shown nor counted.

Facts are keyed by their source document's logical id (`lid`): they are current while
an Approved version of that document is held here, so a metadata update keeps them, a
replacement (RPLC), deprecation or removal retires them, and a new confidentiality code
applies to them at once.
"""
