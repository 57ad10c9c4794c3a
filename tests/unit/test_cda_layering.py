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
def test_mypy_strict_on_the_whole_package():
    """Every module of partage/ is typed (mypy --strict, lxml stubs): issue 19."""
    done = subprocess.run([sys.executable, "-m", "mypy", "--strict", "--no-incremental", "partage"],
                          cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:]
