"""The CDA and terminology packages keep their place: typed (mypy --strict), imports at module
level only, and only from the layers below them (cda: metadata, terminology, config, xmlsafe;
terminology: xmlsafe)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PROJECT_ROOT

ALLOWED = {
    "cda": {"cda", "metadata", "terminology", "config", "xmlsafe"},
    "terminology": {"terminology", "xmlsafe"},
}


def _modules(package: str) -> list[Path]:
    return sorted((PROJECT_ROOT / "partage" / package).rglob("*.py"))


def _partage_imports(path: Path, package: str) -> list[tuple[int, str, bool]]:
    """(line, partage subpackage, at module level) of every import of ours in a module."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top = {id(node) for node in tree.body}
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against the module's package
                parts = path.relative_to(PROJECT_ROOT / "partage").parts[:-1]
                base = list(parts[: len(parts) - (node.level - 1)]) if node.level > 1 else list(parts)
                target = ".".join([*base, *(node.module or "").split(".")]).strip(".")
            else:
                target = node.module or ""
                if not target.startswith("partage"):
                    out.append((node.lineno, "", id(node) in top))
                    continue
                target = target.removeprefix("partage").lstrip(".")
            out.append((node.lineno, target.split(".")[0] or package, id(node) in top))
        elif isinstance(node, ast.Import):
            out.append((node.lineno, "", id(node) in top))
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_are_module_level_and_point_down(package):
    wrong = []
    for path in _modules(package):
        for line, target, module_level in _partage_imports(path, package):
            if not module_level:
                wrong.append(f"{path.name}:{line}: function-local import")
            elif target and target not in ALLOWED[package]:
                wrong.append(f"{path.name}:{line}: imports partage.{target}")
    assert not wrong, wrong


def test_xmlsafe_imports_nothing_of_ours():
    assert all(not t for _l, t, _m in _partage_imports(PROJECT_ROOT / "partage" / "xmlsafe.py", ""))


@pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None,
                    reason="mypy is in the test extras ('.[test]'); not installed here")
def test_mypy_strict():
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "partage/cda", "partage/terminology", "partage/xmlsafe.py"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]


# Modules typed since issue 19, beyond the CDA layers; a module joins this list once
# `mypy --strict partage` reports nothing in it. Errors of the modules they import but that
# are not listed are those modules' own (--follow-imports=silent), not this list's.
TYPED = [
    "partage/conformance", "partage/repository", "partage/metadata", "partage/services.py",
    "partage/config.py", "partage/registry", "partage/query", "partage/clinical", "partage/cli",
    "partage/notify", "partage/ingest.py", "partage/fsck.py", "partage/lifecycle.py",
    *(f"partage/access/{m}.py" for m in ("__init__", "actor", "audit", "authn", "credentials", "gate", "saml",
                                        "signatures", "tokens")),
    *(f"partage/xds/{m}.py" for m in ("__init__", "ebrim", "mtom", "responses", "retrieve")),
]


@pytest.mark.skipif(shutil.which("mypy", path=str(Path(sys.executable).parent)) is None,
                    reason="mypy is in the test extras ('.[test]'); not installed here")
def test_mypy_strict_typed_modules():
    assert all((PROJECT_ROOT / p).exists() for p in TYPED), [p for p in TYPED if not (PROJECT_ROOT / p).exists()]
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental",
                           "--follow-imports=silent", *TYPED],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
