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


def test_a_broken_layer_is_reported(tmp_path):
    """The contract is live: a registry module importing a door makes lint-imports fail."""
    if LINT_IMPORTS is None:
        pytest.skip("import-linter is not installed here")
    copy = tmp_path / "project"
    shutil.copytree(ROOT / "partage", copy / "partage",
                    ignore=shutil.ignore_patterns("__pycache__", "migrations"))
    shutil.copy(ROOT / "setup.cfg", copy / "setup.cfg")
    (copy / "partage" / "registry" / "zz_wrong_way.py").write_text("from ..xds import soap  # noqa\n")
    env = {**os.environ, "PYTHONPATH": str(copy)}
    done = subprocess.run([LINT_IMPORTS, "--no-cache"], cwd=copy, capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode != 0
    assert "partage.registry.zz_wrong_way -> partage.xds.soap" in done.stdout


def test_the_architecture_diagram_is_generated_from_the_contract():
    """docs/architecture.md's layers block is what tools/layers.py draws from setup.cfg now."""
    doc = layers.DOC.read_text(encoding="utf-8")
    assert layers.rewritten(doc, layers.block()) == doc, "stale: run python -m tools.layers"
    assert [["cli"]] == layers.contract_layers()[:1]
