"""The import rules of ``tests/check_layers.py`` hold, and the check fails when they break."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location(
        "check_layers", ROOT / "tests" / "check_layers.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_layers"] = module
    spec.loader.exec_module(module)
    return module


def test_the_package_follows_its_layers() -> None:
    assert _checker().problems(ROOT) == []


def test_an_upward_import_and_a_cycle_are_both_reported(tmp_path: Path) -> None:
    shutil.copytree(
        ROOT / "streamflow", tmp_path / "streamflow", ignore=shutil.ignore_patterns("__pycache__")
    )
    store = tmp_path / "streamflow" / "state" / "store.py"
    store.write_text(
        store.read_text() + "\n\ndef _late():\n    from streamflow.workflow import journal\n"
    )
    specs = tmp_path / "streamflow" / "topology" / "specs.py"
    specs.write_text(specs.read_text() + "\nimport streamflow.topology.graph\n")
    found = _checker().problems(tmp_path)
    assert "upward import: streamflow.state.store -> streamflow.workflow.journal" in found
    assert any(
        line.startswith("import cycle:")
        and "streamflow.topology.graph" in line
        and "streamflow.topology.specs" in line
        for line in found
    ), found
