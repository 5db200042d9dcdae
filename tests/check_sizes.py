"""No module under ``streamflow/`` is over ``LIMIT`` lines unless its docstring says why
(``make lint``).

A long module usually holds two jobs that read better apart. When it is one job that must stay
whole (a state machine whose cases share one journal, a code generator whose two directions
must agree byte for byte), its module docstring says so in a paragraph that begins ``Size:``;
the check fails on a long module without one, naming it. Lines are counted as ``wc -l`` counts
them (newlines).

``KNOWN`` holds long modules allowed for a while, each with what it waits for: the check fails
on any other, and on an entry that is no longer long or that says why now, so the list only
shrinks (as ``check_layers.KNOWN`` does).

Usage: python tests/check_sizes.py [ROOT]   (exit 1, one line per module over the limit)
"""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

LIMIT = 450
KNOWN: dict[str, str] = {}
_PARAGRAPH_BREAK = re.compile(r"\n[ \t]*\n")


def says_why(source: str) -> bool:
    """The module docstring has a paragraph that begins ``Size:`` and says something after it."""
    docstring = ast.get_docstring(ast.parse(source)) or ""
    return any(
        paragraph.startswith("Size:") and paragraph.removeprefix("Size:").strip()
        for paragraph in (p.strip() for p in _PARAGRAPH_BREAK.split(docstring))
    )


def problems(root: Path) -> list[str]:
    out = []
    seen_known = set()
    for path in sorted((root / "streamflow").rglob("*.py")):
        source = path.read_text()
        lines = source.count("\n")
        name = path.relative_to(root).as_posix()
        if lines <= LIMIT or says_why(source):
            continue
        if name in KNOWN:
            seen_known.add(name)
            continue
        out.append(
            f"{name}: {lines} lines, over {LIMIT}: split it by job, or say in a 'Size:' "
            "paragraph of its module docstring why it must be one module"
        )
    for gone in sorted(set(KNOWN) - seen_known):
        out.append(f"{gone}: no longer long without a 'Size:' paragraph, remove it from KNOWN")
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    found = problems(root)
    for line in found:
        print(line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
