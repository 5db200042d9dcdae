"""The size rule of ``tests/check_sizes.py`` holds, and the check fails when it breaks."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _checker():
    spec = importlib.util.spec_from_file_location("check_sizes", ROOT / "tests" / "check_sizes.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_sizes"] = module
    spec.loader.exec_module(module)
    return module


def test_every_long_module_says_why() -> None:
    assert _checker().problems(ROOT) == []


def _module(root: Path, name: str, docstring: str, lines: int) -> None:
    body = f'"""{docstring}"""\n' + "# Size: a comment is not the docstring\n"
    body += "x = 1\n" * (lines - body.count("\n"))
    path = root / "streamflow" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(body)
    assert body.count("\n") == lines


def test_a_long_module_is_named_unless_its_docstring_has_a_size_paragraph(
    tmp_path: Path,
) -> None:
    check = _checker()
    limit = check.LIMIT
    _module(tmp_path, "state/at_limit.py", "Short enough.", limit)
    _module(tmp_path, "state/long.py", "Two jobs. Size: inside a paragraph.", limit + 1)
    _module(tmp_path, "state/empty.py", "One job.\n\nSize:\n", limit + 1)
    _module(tmp_path, "state/why.py", "One job.\n\nSize: one state machine; its cases share\n", 999)
    found = check.problems(tmp_path)
    named = {line.split(":")[0] for line in found}
    assert {"streamflow/state/long.py", "streamflow/state/empty.py"} <= named
    assert not named & {"streamflow/state/at_limit.py", "streamflow/state/why.py"}


def test_a_known_exception_that_no_longer_applies_is_reported(tmp_path: Path) -> None:
    check = _checker()
    (tmp_path / "streamflow").mkdir()
    assert [line for line in check.problems(tmp_path) if "remove it from KNOWN" in line] == [
        f"{name}: no longer long without a 'Size:' paragraph, remove it from KNOWN"
        for name in sorted(check.KNOWN)
    ]
