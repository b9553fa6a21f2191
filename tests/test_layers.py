"""The tree's layers hold: the Airflow-free core imports no Airflow, the domain imports nothing of
the package but itself and the errors, no module imports another in a cycle, the local and cloud
backends share code only through backends/common/, the README's tree names every module of the
package, and no test module imports another (shared builders live in tests/builders/)."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "include" / "orchestrator"
TESTS = ROOT / "tests"


def modules() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
        found[name.removesuffix(".__init__")] = path
    return found


def imports() -> dict[str, set[str]]:
    """Each module's imports of the package, also those inside functions (they can make cycles too)."""
    known, graph = modules(), {}
    for name, path in known.items():
        graph[name] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("include.orchestrator"):
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    graph[name].add(full if full in known else node.module)
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.startswith("include.orchestrator")}
    return graph


def test_the_core_imports_no_airflow():
    code = (
        "import importlib, pkgutil, sys\n"
        "for pkg in ('include.orchestrator.domain', 'include.orchestrator.saga'):\n"
        "    for m in pkgutil.iter_modules(importlib.import_module(pkg).__path__, pkg + '.'):\n"
        "        importlib.import_module(m.name)\n"
        "importlib.import_module('include.orchestrator.approval.rules')\n"
        "importlib.import_module('include.orchestrator.steps')\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'airflow'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout


def test_no_import_cycles():
    graph = imports()
    seen: dict[str, int] = {}  # 1: on the current path, 2: done

    def walk(name: str, path: list[str]) -> list[str] | None:
        seen[name] = 1
        for other in sorted(graph.get(name, ())):
            if seen.get(other) == 1:
                return [*path[path.index(other) :], other] if other in path else [name, other]
            if other in graph and other not in seen and (cycle := walk(other, [*path, other])):
                return cycle
        seen[name] = 2
        return None

    for start in sorted(graph):
        if start not in seen:
            assert (cycle := walk(start, [start])) is None, " -> ".join(cycle)


def test_the_domain_depends_on_nothing_but_itself_and_the_errors():
    outside = [
        f"{a} imports {b}"
        for a, targets in imports().items()
        if a.startswith("include.orchestrator.domain")
        for b in targets
        if not b.startswith("include.orchestrator.domain") and b != "include.orchestrator.errors"
    ]
    assert outside == []


def test_local_and_cloud_backends_share_only_common_code():
    crossing = [
        f"{a} imports {b}"
        for a, targets in imports().items()
        for b in targets
        for side, other in (("local", "cloud"), ("cloud", "local"))
        if f".backends.{side}." in a and f".backends.{other}." in b
    ]
    assert crossing == []


def test_the_readme_tree_names_every_module():
    readme = (ROOT / "README.md").read_text()
    tree = readme[readme.index("include/orchestrator/\n") :]
    tree = tree[: tree.index("```")]
    named = set(re.findall(r"[a-z_]+\.py", tree))
    missing = sorted(
        str(path.relative_to(PACKAGE)) for path in PACKAGE.rglob("*.py") if path.name != "__init__.py" and path.name not in named
    )
    assert missing == [], f"README's package tree does not name: {missing}"


def test_no_module_under_tests_imports_a_test_module():
    """What two test modules need lives in tests/builders/ (or worlds.py, doubles/, conftest.py): a
    test module is tests, not a library; importing one ties its helpers to another file's tests, and
    an imported test function or fixture runs again under the importer's name."""

    def is_test_module(dotted: str) -> bool:
        return any(part.startswith("test_") for part in dotted.split("."))

    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                named = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
            elif isinstance(node, ast.Import):
                named = [a.name for a in node.names]
            else:
                continue
            found += [f"{path.relative_to(ROOT)}:{node.lineno} imports {n}" for n in named if is_test_module(n)]
    assert found == []
