"""The README's complete examples run as written.

A Python block preceded by ``<!-- runs as written: NAME -->`` is run; blocks with the same
NAME run one after the other in one namespace (a quickstart, then its test), in the driver.
A block preceded by ``<!-- as in PATH -->`` is a verbatim part of that file of the checkout,
so it is what the checks of that file (mypy over ``topologies/``, its tests) have read.
"""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[2] / "README.md"
MARKED = re.compile(
    r"<!-- runs as written: (?P<name>[\w-]+) -->\n```python\n(?P<code>.*?)```", re.S
)
COPIED = re.compile(r"<!-- as in (?P<path>[\w./-]+) -->\n```python\n(?P<code>.*?)```", re.S)


def _examples() -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for match in MARKED.finditer(README.read_text()):
        found.setdefault(match.group("name"), []).append(match.group("code"))
    return found


def test_the_readme_marks_its_quickstarts() -> None:
    assert {"stream", "workflow"} <= set(_examples())


@pytest.mark.parametrize("name", sorted(_examples()))
def test_the_readme_example_runs(name: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # its .state, not the checkout's
    # A module of its own, as a user's file would be (dataclasses and type hints look it up).
    module = types.ModuleType(f"readme_{name}")
    monkeypatch.setitem(sys.modules, module.__name__, module)
    for number, code in enumerate(_examples()[name], start=1):
        exec(compile(code, f"README.md ({name} #{number})", "exec"), module.__dict__)


def test_the_readme_copies_its_typed_example_from_the_file_that_is_type_checked() -> None:
    copies = {m["path"]: m["code"] for m in COPIED.finditer(README.read_text())}
    assert "topologies/typed_payments.py" in copies
    for path, code in copies.items():
        assert code in (README.parent / path).read_text(), f"README block differs from {path}"
