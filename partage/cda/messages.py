"""The words of the CDA reports, in French (the language of the CI-SIS and of its users).

One language per page: the ANS schematrons speak French, so Partage's own findings, layer
names, statuses and reasons do too. Rule ids stay as they are (they are identifiers, not
prose); JSON keys stay English (they are an API). The words shared by several layers are
here; each layer's own messages stay beside the check that writes them (`rules.py`,
`crosscheck.py`, `terminology.py`, `profile.py`, `models.py`, `gate.py`, `to_xds.py`).
A third-party reader's own text (libxml2's, a decoder's) is quoted, never translated.
"""

from __future__ import annotations

from ..xmlsafe import DOCTYPE_FORBIDDEN, NOT_WELL_FORMED, TOO_DEEP, TOO_LARGE, XML_BOMB, XXE

LAYER_NAMES = {
    "parse": "lecture XML",
    "schema": "schéma XML (XSD)",
    "rules": "structuration minimale",
    "schematron": "schematron configuré",
    "model": "schematron du modèle (volet)",
    "terminology": "terminologie",
    "metadata": "cohérence avec les métadonnées XDS",
}

STATUS_NAMES = {
    "passed": "exécutée, conforme",
    "failed": "exécutée, erreurs",
    "partial": "exécutée en partie",
    "not run": "non exécutée",
    "not applicable": "sans objet",
}

VERDICT_NAMES = {
    "conforme": "conforme",
    "non conforme": "non conforme",
    "incomplet": "non vérifié entièrement",
}

SEVERITY_NAMES = {"error": "erreur", "warning": "avertissement", "info": "information"}


def parse_message(rule: str, *, size: int, limits: tuple[int, int], detail: str) -> str:
    """The French message of a parse refusal (xmlsafe's rule id -> words for the report)."""
    max_bytes, max_depth = limits
    if rule == TOO_LARGE and size > max_bytes:
        if size > max_bytes + 1:
            return f"le document fait {size} octets ; la limite est de {max_bytes} octets"
        # a reader stopped a byte past the limit (the CLI): the whole size is not known
        return f"le document dépasse la limite de {max_bytes} octets"
    if rule == TOO_LARGE:
        return "un nœud texte dépasse la taille que le lecteur XML accepte (10 Mo)"
    if rule == TOO_DEEP:
        return f"les éléments sont imbriqués sur plus de {max_depth} niveaux"
    if rule == XXE:
        return ("le DOCTYPE déclare une entité externe (tentative XXE) ; les DOCTYPE sont refusés "
                "et rien n'est résolu")
    if rule == XML_BOMB:
        return ("le DOCTYPE déclare des entités (expansion d'entités, « billion laughs ») ; les DOCTYPE "
                "sont refusés et aucune entité n'est développée")
    if rule == DOCTYPE_FORBIDDEN:
        what = "une DTD externe" if "external DTD" in detail else "un DOCTYPE"
        return f"le document déclare {what} ; un document CDA ne doit pas en porter"
    if rule == NOT_WELL_FORMED and "empty" in detail:
        return "le document est vide"
    technical = detail.removeprefix("malformed XML: ")
    return f"XML mal formé (message du lecteur libxml2 : {technical})"


def schema_message(detail: str) -> str:
    """The French message of one XSD error (libxml2's own words quoted, as parse_message does)."""
    return f"non conforme au schéma XML du CDA (message du validateur libxml2 : {detail.strip()})"
