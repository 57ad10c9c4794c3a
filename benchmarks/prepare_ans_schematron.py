"""Prepare the official ANS "structuration minimale" schematron for Partage's Schematron layer.

    .venv/bin/python benchmarks/prepare_ans_schematron.py SOURCE OUT

SOURCE is the ansforge/TestContenuCDA-3-0 repository: a working copy, or a bare git
directory (a mirror clone).
OUT receives schematrons/profils/structurationMinimale/ (the .sch, its include/ folder and
value-set files) and nothing else; the script prints the path of the .sch to give to
`--schematron` / PARTAGE_ANS_SCHEMATRON. The ANS files are not Partage's: never commit OUT.

One repair, the same as the ANS reference run (ans-reference-run.json, "deviations"): the
value set include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml (JDV_J07_XdsTypeCode_CISIS, which
checks ClinicalDocument/code) is missing from the ANS repository, so as shipped every
document fails with a doc() error. It is rebuilt, in the ART-DECOR form the schematron
reads, from jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml of the same repository.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path
from xml.sax.saxutils import quoteattr

from lxml import etree

STRUCMIN = "schematrons/profils/structurationMinimale"
SCH = f"{STRUCMIN}/ASIP-STRUCT-MIN-StrucMin.sch"
J07_SOURCE = "jeuxDeValeurs/JDV_J07_XdsTypeCode_CISIS.xml"
J07_TARGET = f"{STRUCMIN}/include/voc-1.2.250.1.213.1.1.5.471-DYNAMIC.xml"
SVS = "{urn:ihe:iti:svs:2008}"


class Source:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.bare = not (path / ".git").exists() and (path / "HEAD").is_file()

    def files(self, folder: str) -> list[str]:
        if not self.bare:
            return [str(p.relative_to(self.path)) for p in (self.path / folder).rglob("*") if p.is_file()]
        out = subprocess.run(["git", "--git-dir", str(self.path), "ls-tree", "-r", "--name-only", "HEAD", folder],
                             capture_output=True, text=True, check=True).stdout
        return out.split()

    def read(self, name: str) -> bytes | None:
        if not self.bare:
            path = self.path / name
            return path.read_bytes() if path.is_file() else None
        done = subprocess.run(["git", "--git-dir", str(self.path), "show", f"HEAD:{name}"],
                              capture_output=True, check=False)
        return done.stdout if done.returncode == 0 else None


def art_decor_value_set(svs: bytes, name: str) -> str:
    value_set = etree.fromstring(svs).find(f"{SVS}ValueSet")
    lines = ['<?xml version="1.0" encoding="UTF-8"?>',
             "<!-- Rebuilt by Partage's benchmarks/prepare_ans_schematron.py from the ANS SVS file. -->",
             '<valueSets xmlns="urn:hl7-org:v3">',
             f'   <valueSet xmlns="" id={quoteattr(value_set.get("id"))} name="{name}" displayName="{name}">',
             "      <conceptList>"]
    for concept in value_set.iter(f"{SVS}Concept"):
        lines.append(f"         <concept code={quoteattr(concept.get('code'))} "
                     f"codeSystem={quoteattr(concept.get('codeSystem'))} "
                     f"displayName={quoteattr(concept.get('displayName', ''))}/>")
    lines += ["      </conceptList>", "   </valueSet>", "</valueSets>", ""]
    return "\n".join(lines)


def prepare(source: Path, out: Path) -> Path:
    src = Source(source)
    written = missing = 0
    for name in src.files(STRUCMIN):
        data = src.read(name)
        if data is None:
            missing += 1
            continue
        target = out / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        written += 1
    if not (out / SCH).is_file():
        raise SystemExit(f"{SCH} not found in {source}")
    j07 = out / J07_TARGET
    if not j07.is_file():
        svs = src.read(J07_SOURCE)
        if svs is None:
            raise SystemExit(f"{J07_SOURCE} not found in {source}")
        j07.write_text(art_decor_value_set(svs, "JDV_J07_XdsTypeCode_CISIS"), encoding="utf-8")
    print(f"{written} files written to {out / STRUCMIN} ({missing} unreadable in the source)", file=sys.stderr)
    return out / SCH


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0], epilog=__doc__.split("\n", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("source", type=Path, help="ansforge/TestContenuCDA-3-0: a working copy or a bare git directory")
    parser.add_argument("out", type=Path, help="where to write schematrons/profils/structurationMinimale/")
    args = parser.parse_args(argv)
    print(prepare(args.source, args.out))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
