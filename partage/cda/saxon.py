"""The process's one Saxon (saxonche) processor, and a document handed over to it once.

One processor for every compiled schematron: each processor is a GraalVM isolate of its
own (memory), and a document parsed by one processor can be transformed by every
stylesheet it compiled. Saxon calls are serialised by one lock: the stylesheets of the
schematron layers are a few milliseconds each and run under the GIL's neighbourhood
anyway; a shared processor used by two threads at once is not something to rely on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from lxml import etree
from saxonche import PySaxonApiError, PySaxonProcessor

_lock = threading.RLock()
_processor: PySaxonProcessor | None = None


def processor() -> PySaxonProcessor:
    """The process-wide processor (created on first use: a process without schematrons has none)."""
    global _processor
    with _lock:
        if _processor is None:
            _processor = PySaxonProcessor(license=False)
        return _processor


def lock() -> threading.RLock:
    return _lock


class SaxonInputError(ValueError):
    """Saxon refused a document lxml read: its parser has limits of its own (JAXP: at most 200
    attributes on an element, names of at most 1000 characters, ...). The message is Saxon's."""


class SaxonRunError(RuntimeError):
    """A compiled schematron failed on a document as a whole (a dynamic error outside any rule's
    own try/catch: a global `let`, a rule context evaluated once per document): none of its rules
    ran. The message is Saxon's."""


def transform(executable: Any, document: SaxonDocument) -> str:
    """A compiled stylesheet's result on a document, as text; SaxonRunError when the
    transformation fails as a whole or gives nothing (no rule ran: never read as "no finding")."""
    node = document.node()
    with _lock:
        try:
            result = executable.transform_to_string(xdm_node=node)
        except PySaxonApiError as exc:
            raise SaxonRunError(" ".join(str(exc).split())) from None
    if not result:
        raise SaxonRunError("la transformation n'a produit aucun résultat")
    return str(result)


@dataclass
class SaxonDocument:
    """An lxml tree, serialised and parsed by Saxon on first use, shared by the layers that need it."""

    root: etree._Element
    _node: Any = field(default=None, repr=False)
    _refused: str = field(default="", repr=False)

    def node(self) -> Any:
        """The document as Saxon holds it; SaxonInputError (said once, then kept) if Saxon refuses it."""
        if self._refused:
            raise SaxonInputError(self._refused)
        if self._node is None:
            text = etree.tostring(self.root.getroottree(), encoding="unicode")
            with _lock:
                try:
                    self._node = processor().parse_xml(xml_text=text)
                except PySaxonApiError as exc:
                    self._refused = " ".join(str(exc).split())
                    raise SaxonInputError(self._refused) from None
        return self._node
