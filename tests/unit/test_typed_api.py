"""The public API is typed where users touch it: ``await ctx.step(step, *args)`` is checked
by mypy against the step's parameters and gives its return type (an ``async def`` step's
too), and the decorators keep the functions' own types. One mypy run (strict, with the
project's ``[tool.mypy]`` settings, as ``make lint`` runs it) over a file of correct uses,
which must have no error, one of misuses, which must have errors on exactly the lines whose
comment starts with "error", and the example topologies, which must have none: examples are
what users copy (the README's typed one is ``topologies/typed_payments.py``).

One run for all three: mypy takes seconds to start and to load ``streamflow``'s types.
``make lint`` type-checks ``topologies/`` as well; this test makes ``make unit`` fail too when
an example stops type-checking."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CASES = Path("tests") / "typing_cases"
TOPOLOGIES = Path("topologies")
ERROR = re.compile(r"^(?P<path>[^:\n]+\.py):(?P<line>\d+): error", re.MULTILINE)


@pytest.fixture(scope="module")
def mypy() -> subprocess.CompletedProcess[str]:
    """mypy run from the checkout (so its ``pyproject.toml`` settings apply, and ``streamflow``
    is this checkout's) over the typing cases and the topologies; paths in its output are
    relative to the checkout."""
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy",
            "--strict",
            str(CASES / "ctx_ok.py"),
            str(CASES / "ctx_misuse.py"),
            str(TOPOLOGIES),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def _errors(done: subprocess.CompletedProcess[str]) -> list[tuple[Path, int]]:
    return [(Path(m["path"]), int(m["line"])) for m in ERROR.finditer(done.stdout)]


def test_typed_uses_pass_and_misuses_fail_on_exactly_the_marked_lines(
    mypy: subprocess.CompletedProcess[str],
) -> None:
    errors = _errors(mypy)
    assert [line for path, line in errors if path == CASES / "ctx_ok.py"] == [], mypy.stdout
    source = (ROOT / CASES / "ctx_misuse.py").read_text().splitlines()
    marked = {i + 1 for i, line in enumerate(source) if "# error:" in line}
    assert {line for path, line in errors if path == CASES / "ctx_misuse.py"} == marked, mypy.stdout
    assert mypy.returncode == 1, mypy.stdout + mypy.stderr


def test_the_example_topologies_type_check(mypy: subprocess.CompletedProcess[str]) -> None:
    assert [(p, n) for p, n in _errors(mypy) if p.parts[0] == TOPOLOGIES.name] == [], mypy.stdout
