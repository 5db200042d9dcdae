"""Imports point down the layers, and no two modules import each other (``make lint``).

Layers, bottom to top: ``errors``; ``dev`` (the local cluster, a leaf of its own);
``kafka`` (settings, client log, refusals, record sizes); ``serde``; ``state``; ``topology``;
``cluster`` (access, ACLs, topics, identity); ``operate`` (endpoint, metrics, queries, dead
letters, replay, rebuild: served by the worker, so below it); ``runtime`` (the engine);
``workflow``; the app (``app``, ``testing``, the package itself); the surfaces (``ui``,
``cli``, ``__main__``). A module may
import its own layer and the ones below. Imports inside functions count as much as any other
(they used to hide cycles); only those under ``if TYPE_CHECKING:`` are left out, since they
never run.

``KNOWN`` and ``KNOWN_CYCLES`` hold exceptions allowed for a while, each with what it waits
for (empty today): the check fails on anything else, and on an entry that no longer occurs, so
the lists only shrink.

Usage: python tests/check_layers.py [ROOT]   (exit 1 with the offending imports)
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

LAYERS: list[tuple[str, ...]] = [
    ("errors",),
    ("dev",),
    ("kafka",),
    ("serde",),
    ("state",),
    ("topology",),
    ("cluster",),
    ("operate",),
    ("runtime",),
    ("workflow",),
    ("app", "testing", ""),
    ("ui", "cli", "__main__"),
]
KNOWN: dict[tuple[str, str], str] = {}
KNOWN_CYCLES: dict[frozenset[str], str] = {}


def _layer(module: str) -> int:
    part = module.split(".")[1] if module.count(".") else ""
    for rank, names in enumerate(LAYERS):
        if part in names:
            return rank
    raise SystemExit(f"{module}: in no layer; add its package to LAYERS in {__file__}")


def _modules(root: Path) -> dict[str, Path]:
    found = {}
    for path in (root / "streamflow").rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        found[".".join(parts).removesuffix(".__init__")] = path
    return found


def _imports(path: Path, module: str, modules: dict[str, Path]) -> set[str]:
    """The streamflow modules ``module`` imports when it runs (``TYPE_CHECKING`` left out)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]

    def resolve(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    targets: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            names: list[str] = []
            if isinstance(child, ast.Import):
                names = [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    anchor = package.rsplit(".", child.level - 1)[0]
                    base = f"{anchor}.{base}" if base else anchor
                names = [base] + [f"{base}.{alias.name}" for alias in child.names]
            for name in names:
                target = resolve(name) if name.startswith("streamflow") else None
                if target and target != module and not module.startswith(target + "."):
                    targets.add(target)
            visit(child)

    visit(ast.parse(path.read_text()))
    return targets


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(frozenset(component))
    return found


def problems(root: Path) -> list[str]:
    modules = _modules(root)
    graph = {m: _imports(p, m, modules) for m, p in modules.items()}
    out = []
    seen_known = set()
    for module, targets in sorted(graph.items()):
        for target in sorted(targets):
            if _layer(target) <= _layer(module):
                continue
            if (module, target) in KNOWN:
                seen_known.add((module, target))
                continue
            out.append(f"upward import: {module} -> {target}")
    for cycle in _cycles(graph):
        if cycle in KNOWN_CYCLES:
            seen_known.add(cycle)
            continue
        out.append("import cycle: " + " <-> ".join(sorted(cycle)))
    for gone in (set(KNOWN) | set(KNOWN_CYCLES)) - seen_known:
        out.append(f"no longer there, remove it from KNOWN: {gone}")
    return out


def main() -> None:
    root = Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1])
    found = problems(root)
    for line in found:
        print(line)
    sys.exit(1 if found else 0)


if __name__ == "__main__":
    main()
