"""The ANS document-model ("volet") schematrons, and which one applies to a document.

A directory in the layout of ANS's TestContenuCDA repository (`--cda-schematrons DIR`)
holds `schematrons/CI-SIS_<MODEL>_<VERSION>.sch` (59 of them in the 2025 snapshot), what
they include, and `jeuxDeValeurs/` (the value sets they read). The catalogue lists them with
what each requires of the ClinicalDocument: the templateId roots and document codes its own
asserts on ClinicalDocument demand (read by the compiler, `schematron_compile.py`).

Which schematron applies to a document (the ANS tool does not choose; its user does). The
rule, in order (docs/cda-rules.md, "Model schematron"):

1. A CDA R2 level 1 document (nonXMLBody) has no content model: not applicable.
2. Its ClinicalDocument templateIds (other than the two generic ones) name candidates: the
   schematrons asserting that root. A schematron asserting another ClinicalDocument/code
   than the document's is set aside. The most discriminating root wins (the one naming the
   fewest models).
3. The version is the @extension of the document's templateId for that model.
4. When the templateIds give no model, or no version, or a version without schematron, the
   document's own declaration decides if it makes one: a `<?oxygen SCHSchema=".../CI-SIS_X.sch"?>`
   processing instruction naming a schematron of the catalogue (the ANS examples declare
   theirs so; real documents rarely do).
5. Still no version: every version of the model is tried and the one the document fits best
   (fewest errors, then the latest) is retained; the report says so.
   Only versions of one model compete: several models claimed by as discriminating roots are
   each checked (the document must satisfy every model it claims).
6. No model: "aucun schematron de modèle pour les templateIds ..." (not run; an error in a profile
   requiring a model).

Seven schematrons assert no document templateId at all (CANCER-CR-GM, CANCER-FRCP, CSE-MDE,
LDL-EES, LDL-SES, OPH-CR-RTN, and BIO-CR-BIO, whose 2021/2024 versions assert only the IHE
XD-LAB root 1.3.6.1.4.1.19376.1.3.3 while documents carry the CI-SIS one with the version):
for them the model's CI-SIS templateId is Partage's own table below, from the CI-SIS volets
(the same roots as the ASS_A11 model -> formatCode table).
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from lxml import etree

from .constants import GENERIC_TEMPLATES, HL7
from .schematron import CompiledSchematron, load_schematron
from .schematron_cache import SchematronCache
from .schematron_compile import Generated, SchematronError, document_facts

log = logging.getLogger("partage.cda")

_H = f"{{{HL7}}}"
_SCH_NAME = re.compile(r"CI-SIS_(?P<model>.+)_(?P<version>\d{4}\.\d{2})\.sch\Z")
_OXYGEN = re.compile(r"""SCHSchema\s*=\s*["']([^"']+)["']""")
STRUCMIN = Path("schematrons/profils/structurationMinimale/ASIP-STRUCT-MIN-StrucMin.sch")

# Model -> its CI-SIS document templateId, for the volets whose schematron does not assert it.
MODEL_TEMPLATE_IDS: dict[str, tuple[str, ...]] = {
    "BIO-CR-BIO": ("1.2.250.1.213.1.1.1.55",),
    "CANCER-CR-GM": ("1.2.250.1.213.1.1.1.32",),
    "CANCER-FRCP": ("1.2.250.1.213.1.1.1.8",),
    "CSE-MDE": ("1.2.250.1.213.1.1.1.5.4",),
    "LDL-EES": ("1.2.250.1.213.1.1.1.21",),
    "LDL-SES": ("1.2.250.1.213.1.1.1.29",),
    "OPH-CR-RTN": ("1.2.250.1.213.1.1.1.18",),
}

# How a schematron was chosen (shown in reports).
BY_TEMPLATE = "templateId"
BY_TEMPLATE_VERSION = "templateId + @extension"
BY_DECLARATION = "déclaration <?oxygen SCHSchema?> du document"
BY_BEST_FIT = "meilleure correspondance (version non donnée)"

CHOSEN = "chosen"
NONE = "none"
NOT_APPLICABLE = "not applicable"


@dataclass(frozen=True)
class ModelEntry:
    """One model schematron of the catalogue."""

    path: Path
    model: str
    version: str
    template_ids: frozenset[str]
    codes: frozenset[str]
    problem: str = ""      # why it cannot be used (it did not compile when the catalogue loaded)

    @property
    def name(self) -> str:
        return self.path.name


@dataclass
class ModelChoice:
    """Which model schematron(s) a document is checked against, and why."""

    status: str                                   # CHOSEN, NONE, NOT_APPLICABLE
    entries: list[ModelEntry] = field(default_factory=list)
    how: str = ""
    reason: str = ""                              # for NONE / NOT_APPLICABLE: why, in French
    template_ids: list[tuple[str, str]] = field(default_factory=list)
    # Unusable schematrons whose volet is unknown, which a templateId of the document that no
    # other schematron names may claim: the check cannot be said complete.
    unsure: list[ModelEntry] = field(default_factory=list)

    @property
    def label(self) -> str:
        return ", ".join(e.name for e in self.entries)


def document_templates(doc: etree._Element) -> list[tuple[str, str]]:
    """The document's ClinicalDocument templateIds (root, extension), generic ones left out."""
    return [(t.get("root", ""), t.get("extension", "")) for t in doc.iterchildren(_H + "templateId")
            if t.get("root") and t.get("root") not in GENERIC_TEMPLATES]


def declared_schematrons(root: etree._Element) -> list[str]:
    """File names the document declares in <?oxygen SCHSchema="..."?> instructions before its root."""
    out: list[str] = []
    for node in reversed(list(root.itersiblings(preceding=True))):
        if isinstance(node, etree._ProcessingInstruction) and node.target == "oxygen":
            m = _OXYGEN.search(node.text or "")
            if m:
                out.append(m.group(1).replace("\\", "/").rsplit("/", 1)[-1])
    return out


def _layout(directory: Path) -> tuple[Path, Path]:
    """(root of the TestContenuCDA layout, folder of the CI-SIS_*.sch): DIR, or DIR/schematrons given."""
    base = directory.resolve()
    if (base / "schematrons").is_dir():
        return base, base / "schematrons"
    return base.parent, base


def model_files(directory: Path) -> list[Path]:
    """The CI-SIS_<MODEL>_<VERSION>.sch files of a directory (nothing is read)."""
    folder = _layout(directory)[1]
    return sorted(p for p in folder.glob("CI-SIS_*.sch") if _SCH_NAME.match(p.name))


def find_strucmin(directory: Path) -> Path | None:
    """The ANS structuration-minimale schematron of the same layout, when it is there."""
    path = _layout(directory)[0] / STRUCMIN
    return path if path.is_file() else None


class ModelCatalog:
    """The model schematrons of one directory; each compiled (Saxon) when first needed."""

    def __init__(self, directory: str | Path, cache_dir: Path | None = None) -> None:
        base = Path(directory).resolve()
        if not base.is_dir():
            raise FileNotFoundError(f"model schematron directory not found: {base}")
        self.root = _layout(base)[0]
        self.cache_dir = cache_dir
        self.cache = SchematronCache(cache_dir)
        self.entries: list[ModelEntry] = []
        self.unreadable: dict[str, str] = {}      # file -> why it cannot be used
        self._generated: dict[Path, Generated] = {}
        broken: list[tuple[Path, str, str]] = []
        for path in model_files(base):
            m = _SCH_NAME.match(path.name)
            if m is None:
                continue
            try:
                generated = self.cache.load(path)
            except (SchematronError, OSError) as exc:
                self.unreadable[path.name] = str(exc)
                log.warning("model schematron %s cannot be compiled: %s", path.name, exc)
                broken.append((path, m.group("model"), m.group("version")))
                continue
            self._generated[path] = generated
            model = m.group("model")
            roots = {*generated.document_template_ids, *MODEL_TEMPLATE_IDS.get(model, ())}
            self.entries.append(ModelEntry(path, model, m.group("version"),
                                           frozenset(r for r in roots if r not in GENERIC_TEMPLATES),
                                           frozenset(generated.document_codes)))
        # A schematron that cannot be compiled stays in the catalogue, marked: a document claiming
        # its volet is told that the volet's schematron cannot be used (not that there is none),
        # and one claiming it with another volet is not checked against the other alone. Which
        # documents it is for: what its file still says, the volet's table entry, its other versions.
        for path, model, version in broken:
            asserted, codes = document_facts(path)
            known = {*asserted, *MODEL_TEMPLATE_IDS.get(model, ()),
                     *(r for e in self.entries if e.model == model for r in e.template_ids)}
            self.entries.append(ModelEntry(path, model, version,
                                           frozenset(r for r in known if r not in GENERIC_TEMPLATES),
                                           frozenset(codes), problem=self.unreadable[path.name]))
        self.entries.sort(key=lambda e: e.path)
        self.by_name = {e.name: e for e in self.entries}

    @property
    def strucmin(self) -> Path | None:
        """The ANS structuration-minimale schematron of the same directory, when it is there."""
        return find_strucmin(self.root)

    def __len__(self) -> int:
        return len(self.entries)

    def compiled(self, entry: ModelEntry) -> CompiledSchematron:
        """The entry's schematron ready to run (compiled by Saxon on first use, then kept)."""
        return load_schematron(entry.path, self.cache_dir)

    def defects(self) -> dict[str, list[str]]:
        """Per schematron, what it names and does not exist (upstream defects)."""
        out: dict[str, list[str]] = {}
        for path, generated in self._generated.items():
            if generated.defects:
                out[path.name] = [f"{d.kind}: {d.href}" for d in generated.defects]
        return out

    # --- selection ----------------------------------------------------------------------------
    def select(self, doc: etree._Element, root: etree._Element | None = None) -> ModelChoice:
        """Which schematron applies to a ClinicalDocument (`root`: the parsed tree's root, for PIs)."""
        templates = document_templates(doc)
        if doc.find(f"{_H}component/{_H}nonXMLBody") is not None:
            return ModelChoice(NOT_APPLICABLE, reason="document CDA R2 de niveau 1 (nonXMLBody) : pas de "
                               "modèle de contenu, pas de schematron de modèle", template_ids=templates)
        code_el = doc.find(f"{_H}code")
        code = code_el.get("code", "") if code_el is not None else ""
        declared = [self.by_name[n] for n in declared_schematrons(root if root is not None else doc)
                    if n in self.by_name]

        set_aside: list[ModelEntry] = []
        claimed_set_aside: list[ModelEntry] = []   # a model the document names by its own root, set aside
        per_root: dict[str, list[ModelEntry]] = {}
        for tid_root, _ext in templates:
            matching = [e for e in self.entries if tid_root in e.template_ids]
            fitting = [e for e in matching if not e.codes or code in e.codes]
            set_aside += [e for e in matching if e not in fitting and e not in set_aside]
            if matching and not fitting and len({e.model for e in matching}) == 1:
                claimed_set_aside += matching
            if fitting:
                per_root[tid_root] = fitting
        # Unusable schematrons of unknown volet: a templateId no schematron names may claim one.
        unknown = [e for e in self.entries if e.problem and not e.template_ids]
        unsure = unknown if any(not any(r in e.template_ids for e in self.entries) for r, _ext in templates) else []
        if per_root and claimed_set_aside:
            # A templateId is a claim of conformance: checking the document against another model
            # only would let it pass as what it also claims to be and is not.
            return ModelChoice(NONE, reason=self._no_model_reason(templates, code, claimed_set_aside),
                               template_ids=templates)
        if not per_root:
            if declared:
                return ModelChoice(CHOSEN, [declared[-1]], BY_DECLARATION, template_ids=templates, unsure=unsure)
            return ModelChoice(NONE, reason=self._no_model_reason(templates, code, set_aside, unsure),
                               template_ids=templates)

        def models(es: list[ModelEntry]) -> int:
            return len({e.model for e in es})
        fewest = min(models(es) for es in per_root.values())
        candidates: list[ModelEntry] = []
        for es in per_root.values():
            if models(es) == fewest:
                candidates += [e for e in es if e not in candidates]
        # Several models named by as discriminating roots: the document claims each of them, and
        # each is checked (its version chosen as below); the best fit is only between versions.
        by_model: dict[str, list[ModelEntry]] = {}
        for e in candidates:
            by_model.setdefault(e.model, []).append(e)
        chosen: list[ModelEntry] = []
        hows: list[str] = []
        for family in by_model.values():
            picked = self._version(family, templates, declared)
            if isinstance(picked, str):
                return ModelChoice(NONE, reason=picked, template_ids=templates)
            how, entries = picked
            chosen += entries
            hows.append(how)
        return ModelChoice(CHOSEN, chosen, " ; ".join(dict.fromkeys(hows)), template_ids=templates, unsure=unsure)

    @staticmethod
    def _version(family: list[ModelEntry], templates: list[tuple[str, str]],
                 declared: list[ModelEntry]) -> tuple[str, list[ModelEntry]] | str:
        """The version(s) of one model to check a document against (how, entries), or why none."""
        if len(family) == 1:
            claimed = {ext for r, ext in templates if ext and r in family[0].template_ids}
            if not claimed or family[0].version in claimed:
                return BY_TEMPLATE, family
            # The templateId names a version this schematron is not: the rule below (declaration,
            # else "aucun schematron pour la version"), as for a model with several versions.
        roots = {r for e in family for r in e.template_ids}
        extensions = {ext for r, ext in templates if ext and r in roots}
        by_version = [e for e in family if e.version in extensions]
        if len(by_version) == 1:
            return BY_TEMPLATE_VERSION, by_version
        in_family = [e for e in declared if e in family]
        if in_family:
            return BY_DECLARATION, [in_family[-1]]
        if extensions and not by_version:
            available = ", ".join(sorted(f"{e.model} {e.version}" for e in family))
            return (f"aucun schematron pour la version {', '.join(sorted(extensions))} donnée par le "
                    f"templateId (disponibles : {available})")
        return BY_BEST_FIT, sorted(by_version or family, key=lambda e: (e.version, e.model))

    @staticmethod
    def _no_model_reason(templates: list[tuple[str, str]], code: str, set_aside: list[ModelEntry],
                         unsure: list[ModelEntry] | None = None) -> str:
        shown = ", ".join(f"{r}@{e}" if e else r for r, e in templates) or "(aucun)"
        reason = f"aucun schematron de modèle pour les templateIds {shown}"
        if set_aside:
            wanted = sorted({c for e in set_aside for c in e.codes})
            reason += (f" : {', '.join(sorted({e.model for e in set_aside}))} exige(nt) le code de document "
                       f"{' ou '.join(wanted)}, le document porte {code or '(aucun)'}")
        if unsure:
            reason += f" ; {unusable_text(unsure)}, le document relève peut-être de l'un d'eux"
        return reason


def unusable_text(entries: list[ModelEntry]) -> str:
    """The words saying that schematrons of the directory exist but cannot be used (French)."""
    return ("schematron(s) présent(s) mais inutilisable(s) : "
            + " ; ".join(f"{e.name} ({e.problem})" for e in entries))


_catalog_lock = threading.Lock()


@lru_cache(maxsize=4)
def _catalog(directory: str, cache_dir: str) -> ModelCatalog:
    return ModelCatalog(directory, Path(cache_dir) if cache_dir else None)


def load_catalog(directory: str | Path, cache_dir: Path | None = None) -> ModelCatalog:
    """One catalogue per directory per process (every profile using it shares it)."""
    with _catalog_lock:
        return _catalog(str(Path(directory).resolve()), str(cache_dir or ""))
