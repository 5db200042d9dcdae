"""The public API is typed where users touch it: ``await ctx.step(step, *args)`` is checked
by mypy against the step's parameters and gives its return type (an ``async def`` step's
too), and the decorators keep the functions' own types. One mypy run (strict, as ``make lint``
does) over a file of correct uses, which must have no error, and one of misuses, which must
have errors on exactly the lines whose comment starts with "error"."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CASES = ROOT / "tests" / "typing_cases"


def test_typed_uses_pass_and_misuses_fail_on_exactly_the_marked_lines() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "ctx_ok.py", "ctx_misuse.py"],
        cwd=CASES,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = re.findall(r"^(ctx_\w+)\.py:(\d+): error", done.stdout, re.MULTILINE)
    assert [line for name, line in errors if name == "ctx_ok"] == [], done.stdout
    source = (CASES / "ctx_misuse.py").read_text().splitlines()
    marked = {i + 1 for i, line in enumerate(source) if "# error:" in line}
    assert {int(line) for name, line in errors if name == "ctx_misuse"} == marked, done.stdout
    assert done.returncode == 1
