"""The layering of docs/architecture.md, checked on the source.

* Only ``diffattr.jobs`` (the orchestration layer) may import ``diffattr.jobs``; kernels never do.
* Only ``diffattr.jobs`` defines ``*_job`` functions; there, each job is named after its rule.
* What the Snakefile imports at parse time loads no torch, diffusers, transformers, matplotlib
  or kronfluence (every dry run and every DAG build would pay for them).
* Every ``scripts/*.py`` calls one job of ``diffattr.jobs.<rule file>``, and that job exists;
  besides it a script imports only ``diffattr.jobs.common``, the settings classes of
  ``diffattr.settings`` and the file-set classes its job module defines (``SummaryFiles``).
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = SRC / "diffattr"
JOBS = PACKAGE / "jobs"
HEAVY = ("torch", "diffusers", "transformers", "matplotlib", "kronfluence")
RULE_FILES = sorted((ROOT / "rules").glob("*.smk"))
WORKFLOW_FILES = [
    ROOT / "Snakefile",
    *RULE_FILES,
    *sorted((ROOT / "rules" / "functions").glob("*.smk")),
]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, text: str | None = None) -> list[tuple[int, str]]:
    """(line, module) of every import in ``path`` (or in ``text`` as if it were that file), at
    any depth (function-level included); relative imports resolved, and ``from pkg import name``
    also yields ``pkg.name``."""
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    source = path.read_text(encoding="utf-8") if text is None else text
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def is_jobs(module: str) -> bool:
    return module == "diffattr.jobs" or module.startswith("diffattr.jobs.")


def library_files() -> list[Path]:
    return sorted(PACKAGE.rglob("*.py"))


def outside_jobs() -> list[Path]:
    return [p for p in library_files() if JOBS not in p.parents]


def test_only_the_jobs_package_imports_diffattr_jobs():
    offenders = [
        f"{path.relative_to(ROOT)}:{line}: imports {module}"
        for path in outside_jobs()
        for line, module in imported_modules(path)
        if is_jobs(module)
    ]
    assert not offenders, "kernels must not import the orchestration layer:\n" + "\n".join(
        offenders
    )


def test_the_import_check_sees_every_form():
    """The checker above catches plain, from, relative and function-level imports."""
    probe = PACKAGE / "methods" / "probe.py"  # resolved like a file of the package
    forms = [
        "import diffattr.jobs",
        "import diffattr.jobs.lds as x",
        "from diffattr.jobs import lds",
        "from diffattr.jobs.lds import evaluate_lds",
        "from diffattr import jobs",
        "from .. import jobs",
        "from ..jobs.lds import evaluate_lds",
        "def f():\n    from diffattr.jobs.common import job_logging",
        "class A:\n    def f(self):\n        import diffattr.jobs.scores",
    ]
    for form in forms:
        modules = [m for _, m in imported_modules(probe, form + "\n")]
        assert any(is_jobs(m) for m in modules), (form, modules)
    innocent = (
        "from diffattr.jobenv import use_source_tree\nimport diffattr.lds\nfrom . import trak\n"
    )
    assert not any(is_jobs(m) for _, m in imported_modules(probe, innocent))


def test_only_the_jobs_package_defines_job_functions():
    offenders = [
        f"{path.relative_to(ROOT)}:{node.lineno}: def {node.name}"
        for path in outside_jobs()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.endswith("_job")
    ]
    assert not offenders, "file-level jobs belong in diffattr.jobs:\n" + "\n".join(offenders)


IMPORT_LINE = re.compile(
    r"^\s*(?:from\s+(diffattr[\w.]*)\s+import\s+(.+)|import\s+(diffattr[\w.]*))"
)


def workflow_imports() -> set[str]:
    """The diffattr modules the Snakefile and the rule files import (at any indentation)."""
    modules = set()
    for path in WORKFLOW_FILES:
        for line in path.read_text(encoding="utf-8").splitlines():
            match = IMPORT_LINE.match(line)
            if not match:
                continue
            if match.group(3):
                modules.add(match.group(3))
                continue
            modules.add(match.group(1))
            for name in match.group(2).split(","):
                name = name.split(" as ")[0].strip(" ()")
                candidate = PACKAGE.joinpath(*match.group(1).split(".")[1:], name)
                if candidate.with_suffix(".py").is_file() or (candidate / "__init__.py").is_file():
                    modules.add(f"{match.group(1)}.{name}")
    return modules


def loaded_after_import(modules: list[str]) -> list[str]:
    code = (
        "import json, sys\n"
        + "".join(f"import {m}\n" for m in modules)
        + "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    return json.loads(result.stdout)


def test_the_workflow_parses_without_heavy_imports():
    modules = sorted(workflow_imports())
    assert {"diffattr.jobenv", "diffattr.config", "diffattr.methods"} <= set(modules), modules
    loaded = loaded_after_import(modules)
    heavy = [m for m in loaded if m.split(".")[0] in HEAVY]
    ours = [m for m in loaded if m.startswith("diffattr")]
    assert not heavy, (
        f"importing {modules} (what the Snakefile and rules import) loads {sorted(heavy)}; "
        f"import them inside the functions that need them. diffattr modules loaded: {ours}"
    )
    assert not any(is_jobs(m) for m in ours), ours


def test_the_jobs_package_itself_imports_nothing():
    loaded = loaded_after_import(["diffattr.jobs"])
    assert [m for m in loaded if m.startswith("diffattr")] == ["diffattr", "diffattr.jobs"]


def rule_scripts() -> dict[str, list[tuple[str, str]]]:
    """script stem -> [(rule, rule file stem)] of every rule that runs it."""
    by_script: dict[str, list[tuple[str, str]]] = {}
    for path in RULE_FILES:
        text = path.read_text(encoding="utf-8")
        blocks = re.split(r"^(?=rule \w+:|use rule \w+ as \w+)", text, flags=re.M)
        scripts = {}
        for block in blocks:
            head = re.match(r"rule (\w+):|use rule (\w+) as (\w+)", block)
            if not head:
                continue
            if head.group(1):
                script = re.search(r'script:\s*\n\s*"\.\./scripts/(\w+)\.py"', block)
                if script:
                    scripts[head.group(1)] = script.group(1)
                    by_script.setdefault(script.group(1), []).append((head.group(1), path.stem))
            elif head.group(2) in scripts:  # a derived rule runs its parent's script
                by_script[scripts[head.group(2)]].append((head.group(3), path.stem))
    return by_script


def top_level_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.FunctionDef)}


def top_level_classes(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {n.name for n in tree.body if isinstance(n, ast.ClassDef)}


def test_every_script_calls_a_job_named_after_its_rule():
    rules = rule_scripts()
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    assert set(rules) == {p.stem for p in scripts}, "every script is run by a rule"
    problems = []
    for path in scripts:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        jobs = []
        for node in tree.body:
            if isinstance(node, ast.Import) and any(
                a.name.startswith("diffattr") for a in node.names
            ):
                problems.append(f"{path.name}: `import diffattr...`; import the job by name")
            if not isinstance(node, ast.ImportFrom) or not (node.module or "").startswith(
                "diffattr"
            ):
                continue
            if node.module == "diffattr.settings":
                import diffattr.settings as settings

                problems += [
                    f"{path.name}: diffattr.settings has no class {alias.name}"
                    for alias in node.names
                    if not isinstance(getattr(settings, alias.name, None), type)
                ]
                continue
            if not is_jobs(node.module) or node.module == "diffattr.jobs":
                problems.append(
                    f"{path.name}: imports from {node.module}, not diffattr.jobs.<rules>"
                )
                continue
            module_path = JOBS / (node.module.split(".")[2] + ".py")
            if not module_path.is_file():
                problems.append(f"{path.name}: no module {node.module}")
                continue
            for alias in node.names:
                if node.module != "diffattr.jobs.common" and alias.name in top_level_classes(
                    module_path
                ):
                    continue  # a file set of the job (several paths as one value)
                if alias.name not in top_level_functions(module_path):
                    problems.append(f"{path.name}: {node.module} has no function {alias.name}")
                elif node.module != "diffattr.jobs.common":
                    jobs.append((node.module.split(".")[2], alias.name))
        called = {
            n.func.id
            for n in ast.walk(tree)
            if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)
        }
        if len(jobs) != 1 or jobs[0][1] not in called:
            problems.append(f"{path.name}: calls {jobs}; expected exactly one job of diffattr.jobs")
            continue
        module, function = jobs[0]
        runs = rules[path.stem]
        if module not in {stem for _, stem in runs}:
            problems.append(f"{path.name}: job in diffattr.jobs.{module}; its rules {runs}")
        if function not in {rule for rule, _ in runs} | {path.stem}:
            problems.append(f"{path.name}: job {function} is named after none of its rules {runs}")
    assert not problems, "\n".join(problems)


def test_the_stage_map_in_the_architecture_doc_matches_the_rules_and_scripts():
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    section = text.split("### Stage map", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in section.splitlines() if line.startswith("| `")]
    documented = {}
    for row in rows:
        rules_cell, script, job = (cell.strip().strip("`") for cell in row.split("|")[1:4])
        for rule in re.findall(r"\w+", rules_cell):
            assert rule not in documented, f"rule {rule} has two rows"
            documented[rule] = (script, job)
    actual = {}
    for script, runs in rule_scripts().items():
        tree = ast.parse((ROOT / "scripts" / f"{script}.py").read_text(encoding="utf-8"))
        (job,) = [
            f"{node.module.split('.')[2]}.{alias.name}"
            for node in tree.body
            if isinstance(node, ast.ImportFrom)
            and is_jobs(node.module or "")
            and node.module != "diffattr.jobs.common"
            for alias in node.names
            if alias.name in top_level_functions(JOBS / (node.module.split(".")[2] + ".py"))
        ]
        for rule, _ in runs:
            actual[rule] = (f"{script}.py", job)
    assert documented == actual


def _code_metrics():
    from tests.tool_module import load_tool

    return load_tool("code_metrics")


def test_no_import_cycle_between_diffattr_modules_deferred_imports_included():
    metrics = _code_metrics()
    modules = metrics.modules(SRC / "diffattr")
    known = set(modules)
    graph = {
        name: metrics.imported_modules(ast.parse(path.read_text()), name, known, False)
        for name, path in modules.items()
    }
    assert metrics.cycles(graph) == []
    # the detector itself finds a planted cycle, through a package and a deferred import
    graph["diffattr.schema"] = {"diffattr.config"}
    planted = metrics.cycles(graph)
    assert any({"diffattr.config", "diffattr.schema"} <= set(c) for c in planted), planted
