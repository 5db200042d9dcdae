"""The public API is typed where users touch it: ``await ctx.step(step, *args)`` is checked
by mypy against the step's parameters and gives its return type (an ``async def`` step's
too), and the decorators keep the functions' own types. Runs mypy (strict, as ``make lint``
does) on a file of correct uses, which must pass, and one of misuses, which must fail on
exactly the lines marked ``# error:``."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "typing_cases"


def _mypy(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_typed_uses_pass_mypy() -> None:
    done = _mypy(CASES / "ctx_ok.py")
    assert done.returncode == 0, done.stdout


def test_misuses_of_ctx_step_fail_mypy_on_exactly_the_marked_lines() -> None:
    source = (CASES / "ctx_misuse.py").read_text().splitlines()
    marked = {i + 1 for i, line in enumerate(source) if "# error:" in line}
    done = _mypy(CASES / "ctx_misuse.py")
    flagged = {int(m) for m in re.findall(r"ctx_misuse\.py:(\d+): error", done.stdout)}
    assert done.returncode == 1
    assert flagged == marked, done.stdout
