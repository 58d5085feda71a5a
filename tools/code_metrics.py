"""Structural counts of the library, as the architecture review measures them.

    python tools/code_metrics.py [SRC]        (default: src/diffattr of this checkout)

Prints, from the source alone (ast, nothing imported):

* functions (and methods) with more than 5 and more than 6 parameters (``self``/``cls`` not
  counted, ``*args``/``**kwargs`` one each), and the longest ones;
* the modules that define job functions (those of the ``diffattr.jobs`` package, plus any module
  elsewhere defining a ``*_job`` function);
* import cycles between diffattr modules: strongly connected components of the graph of
  ``import diffattr.x`` / ``from diffattr.x import y`` edges, with top-level imports only and
  with function-level (deferred) imports too.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def modules(src: Path) -> dict[str, Path]:
    package = src.name
    found = {}
    for path in sorted(src.rglob("*.py")):
        parts = list(path.relative_to(src.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    assert package in found, f"{src} is not a package"
    return found


def parameter_counts(tree: ast.AST) -> list[tuple[str, int, int]]:
    """(name, line, parameters) of every function and method."""
    counts = []
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            args = node.args
            names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs)]
            count = len([n for n in names if n not in ("self", "cls")])
            count += bool(args.vararg) + bool(args.kwarg)
            counts.append((node.name, node.lineno, count))
    return counts


def imported_modules(tree: ast.AST, name: str, known: set[str], top_level_only: bool) -> set[str]:
    if top_level_only:  # also imports under `if TYPE_CHECKING` / try blocks at module level
        nodes = [n for stmt in tree.body for n in ast.walk(stmt) if not _in_function(stmt, n)]
    else:
        nodes = list(ast.walk(tree))
    targets = set()
    package = name if name in known and _is_package(name, known) else name.rsplit(".", 1)[0]
    for node in nodes:
        if isinstance(node, ast.Import):
            targets |= {_longest_known(a.name, known) for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            for alias in node.names:
                full = f"{base}.{alias.name}"
                targets.add(full if full in known else _longest_known(base, known))
    return {t for t in targets if t and t != name}


def _in_function(stmt: ast.AST, node: ast.AST) -> bool:
    if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
        return node is not stmt
    return False


def _is_package(name: str, known: set[str]) -> bool:
    return any(other.startswith(name + ".") for other in known)


def _longest_known(name: str, known: set[str]) -> str | None:
    parts = name.split(".")
    for end in range(len(parts), 0, -1):
        candidate = ".".join(parts[:end])
        if candidate in known:
            return candidate
    return None


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []
    counter = [0]

    def visit(node):
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for other in graph.get(node, ()):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10_000)
    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def main(argv: list[str]) -> int:
    src = Path(argv[0]) if argv else ROOT / "src" / "diffattr"
    found = modules(src)
    known = set(found)
    trees = {name: ast.parse(path.read_text()) for name, path in found.items()}
    counts = [(f"{m}.{f}", line, n) for m, t in trees.items() for f, line, n in parameter_counts(t)]
    above5 = sorted((c for c in counts if c[2] > 5), key=lambda c: -c[2])
    above6 = [c for c in above5 if c[2] > 6]
    print(
        f"functions: {len(counts)}; more than 5 parameters: {len(above5)}; more than 6: {len(above6)}"
    )
    for name, _, n in above6[:10]:
        print(f"    {n:3d}  {name}")
    jobs_package = f"{src.name}.jobs"
    job_modules = sorted(
        m
        for m, t in trees.items()
        if (m.startswith(jobs_package + ".") and m != f"{jobs_package}.common")
        or any(isinstance(n, ast.FunctionDef) and n.name.endswith("_job") for n in ast.walk(t))
    )
    outside = [m for m in job_modules if not m.startswith(jobs_package + ".")]
    print(
        f"modules holding job functions: {len(job_modules)} ({len(outside)} outside {jobs_package})"
    )
    for top_level_only in (True, False):
        graph = {m: imported_modules(t, m, known, top_level_only) for m, t in trees.items()}
        found_cycles = cycles(graph)
        kind = "top-level imports" if top_level_only else "all imports, deferred included"
        print(f"import cycles ({kind}): {len(found_cycles)}")
        for component in found_cycles:
            print(f"    {' <-> '.join(component)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
