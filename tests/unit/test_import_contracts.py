"""The package layering of setup.cfg's [importlinter] contracts holds (doors over flows over
services over the registry over the model; the doors independent of one another)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tools import layers

ROOT = Path(__file__).resolve().parents[2]
LINT_IMPORTS = shutil.which("lint-imports", path=str(Path(sys.executable).parent))


@pytest.mark.skipif(LINT_IMPORTS is None and os.environ.get("CI") != "true",
                    reason="import-linter is in the test extras ('.[test]'); not installed here")
def test_import_contracts_are_kept():
    assert LINT_IMPORTS is not None, "CI must install the test extras (import-linter)"
    done = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "0 broken" in done.stdout


def _lint_with(tmp_path: Path, package: str, line: str) -> subprocess.CompletedProcess[str]:
    """lint-imports on a copy of the code with one module `zz_wrong_way` added to `package`."""
    if LINT_IMPORTS is None:
        pytest.skip("import-linter is not installed here")
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "partage", copy / "partage",
                    ignore=shutil.ignore_patterns("__pycache__", "migrations"))
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    (copy / "partage" / package / "zz_wrong_way.py").write_text(line + "  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    return subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=copy, capture_output=True, text=True,
                          timeout=300, env=env)


@pytest.mark.parametrize("package, line, reported", [
    # the registry reaching up to a wire format
    ("registry", "from ..ebxml import soap", "partage.registry.zz_wrong_way -> partage.ebxml.soap"),
    # one door reaching into another (the browser door into the FHIR door)
    ("web", "from ..fhir import routes", "partage.web.zz_wrong_way -> partage.fhir.routes"),
    # a wire format reaching up to a door
    ("mhd", "from ..xds import endpoints", "partage.mhd.zz_wrong_way -> partage.xds.endpoints"),
])
def test_a_broken_layer_is_reported(tmp_path, package, line, reported):
    """The contract is live: an import against the layers or between doors makes it fail."""
    done = _lint_with(tmp_path, package, line)
    assert done.returncode != 0
    assert reported in done.stdout


def test_the_architecture_diagram_is_generated_from_the_contract():
    """docs/architecture.md's layers block is what tools/layers.py draws from setup.cfg now."""
    doc = layers.DOC.read_text(encoding="utf-8")
    assert layers.rewritten(doc, layers.block()) == doc, "stale: run python -m tools.layers"
    assert [["cli"]] == layers.contract_layers()[:1]
