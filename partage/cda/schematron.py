"""Schematron layers at run time: a compiled schematron (Saxon executable) checking documents.

The compiler (`schematron_compile.py`) turns a .sch into one XSLT 3.0 stylesheet and the
assert metadata kept in Python; this module compiles that stylesheet with the process's
Saxon processor (`saxon.py`), preloads the value-set files its doc() calls name, runs it on
a document and reads its compact result back as Findings. `load_schematron` compiles each
file once per process (and modification time), through the on-disk cache of generated
stylesheets (`schematron_cache.py`).
"""

from __future__ import annotations

import threading
from functools import lru_cache
from pathlib import Path
from typing import Any

from lxml import etree

from . import saxon
from .findings import ERROR, INFO, SCHEMATRON, WARNING, Finding
from .locate import line_of, xpath_of
from .schematron_cache import SchematronCache
from .schematron_compile import (
    DEFECT_DOCUMENT,
    DEFECT_INCLUDE,
    Anchored,
    AssertInfo,
    Defect,
    Generated,
    SchematronError,
    analyse_context,
    compile_to_xslt,
)

__all__ = ["Anchored", "AssertInfo", "CompiledSchematron", "Defect", "SchematronError", "analyse_context",
           "compile_to_xslt", "load_schematron"]

_SEVERITY = {"error": ERROR, "fatal": ERROR, "warning": WARNING, "warn": WARNING,
             "info": INFO, "information": INFO}


class CompiledSchematron:
    """A schematron ready to run: compiled once; `check` is thread-safe (Saxon calls are serialised)."""

    def __init__(self, sch_path: str | Path, generated: Generated | None = None) -> None:
        self.path = Path(sch_path).resolve()
        self.generated = generated if generated is not None else SchematronCache(None).load(self.path)
        self.asserts: list[AssertInfo] = self.generated.asserts
        self.patterns: list[str] = self.generated.patterns
        self.defects: list[Defect] = self.generated.defects
        self.stats = self.generated.stats
        with saxon.lock():
            proc = saxon.processor()
            compiler = proc.new_xslt30_processor()
            compiler.set_cwd(str(self.path.parent))
            try:
                executable = compiler.compile_stylesheet(stylesheet_text=self.generated.xslt)
            except Exception as exc:   # saxonche raises PySaxonApiError
                raise SchematronError(f"{self.path.name}: the generated XSLT does not compile: {exc}") from None
            if executable is None:
                raise SchematronError(f"{self.path.name}: the generated XSLT does not compile")
            for name, relative in self.generated.documents.items():   # value-set files: parsed once
                path = (self.path.parent / relative).resolve()
                try:
                    node = proc.parse_xml(xml_file_name=str(path))
                except Exception as exc:
                    raise SchematronError(f"{self.path.name}: cannot read {relative}: {exc}") from None
                executable.set_parameter(name, node)
        self._executable: Any = executable

    @property
    def xslt(self) -> str:
        return self.generated.xslt

    @property
    def missing_includes(self) -> list[Defect]:
        """Included files that do not exist: their rules are not run (the check is partial)."""
        return [d for d in self.defects if d.kind == DEFECT_INCLUDE]

    @property
    def missing_documents(self) -> list[Defect]:
        """Value-set files named but absent: the asserts reading them test an empty set."""
        return [d for d in self.defects if d.kind == DEFECT_DOCUMENT]

    def run(self, document: saxon.SaxonDocument) -> etree._Element:
        """The raw result (<r><f a=".." loc=".."><v>..</v></f>...</r>) for a document;
        SaxonRunError when the transformation fails as a whole (no rule ran: not "no finding")."""
        return etree.fromstring(saxon.transform(self._executable, document).encode("utf-8"))

    def check(self, root: etree._Element | saxon.SaxonDocument, layer: str = SCHEMATRON) -> list[Finding]:
        """The failed asserts and successful reports on a document, as findings of `layer`."""
        document = root if isinstance(root, saxon.SaxonDocument) else saxon.SaxonDocument(root)
        tree = document.root.getroottree()
        findings: list[Finding] = []
        for f in self.run(document):
            location, line = _locate(tree, f.get("loc", ""))
            if etree.QName(f).localname == "e":   # a dynamic error while evaluating a rule
                pattern = self.generated.body_patterns[int(f.get("b", "0"))]
                message = (f"erreur d'évaluation dans le pattern {pattern} du schematron {self.path.name} : "
                           f"{' '.join((f.text or '').split())}")
                findings.append(Finding("schematron-eval-error", ERROR, layer, message, location, line))
                continue
            info = self.asserts[int(f.get("a", "0"))]
            severity = INFO if info.kind == "r" else _SEVERITY.get(info.role.lower(), ERROR)
            values = iter(v.text or "" for v in f)
            message = "".join(text if kind == "t" else next(values, "") for kind, text in info.message)
            findings.append(Finding(info.id or f"sch:{info.pattern}", severity, layer,
                                    " ".join(message.split()), location, line, info.test))
        return findings


def _locate(tree: etree._ElementTree, loc: str) -> tuple[str, int | None]:
    if not loc:
        return "/", None
    attribute = ""
    if "/@" in loc:
        loc, attribute = loc.split("/@", 1)
    try:
        nodes = tree.xpath(loc)
    except etree.XPathError:
        return loc, None
    if not isinstance(nodes, list) or not nodes or not isinstance(nodes[0], etree._Element):
        return loc, None
    el = nodes[0]
    return xpath_of(el) + (f"/@{attribute}" if attribute else ""), line_of(el)


_load_lock = threading.Lock()


@lru_cache(maxsize=128)
def _load(path: str, _mtime: float, cache_dir: str) -> CompiledSchematron:
    cache = SchematronCache(Path(cache_dir) if cache_dir else None)
    return CompiledSchematron(path, cache.load(Path(path)))


def load_schematron(path: str | Path, cache_dir: str | Path | None = None) -> CompiledSchematron:
    """Compiled once per process, file and modification time (through the on-disk cache, if given)."""
    resolved = Path(path).resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"schematron not found: {resolved}")
    with _load_lock:   # two threads asking for the same model compile it once
        return _load(str(resolved), resolved.stat().st_mtime, str(cache_dir or ""))
