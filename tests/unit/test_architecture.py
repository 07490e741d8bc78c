"""Import boundaries (DESIGN.md "Layout"): walk every module's imports with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OURS = ("hub", "partners", "matching")
# Modules that must import nothing of ours outside themselves.
# The engine may use its own compiled kernels, which import nothing of ours either.
SELF_CONTAINED = {
    "matching/engine.py": {"matching.engine", "matching.kernels"},
    "matching/kernels.py": {"matching.kernels"},
    "matching/rules.py": {"matching.rules"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
    return {name for name in found if name.split(".")[0] in OURS}


def python_files(package: str) -> list[Path]:
    return sorted((ROOT / package).rglob("*.py"))


def test_hub_core_imports_no_domain() -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {name}"
        for path in python_files("hub/core")
        for name in imports_of(path)
        if not name.startswith("hub.core") and name != "hub"
    ]
    assert crossings == []


def test_domains_import_only_hub_core_from_the_shell() -> None:
    crossings = [
        f"{path.relative_to(ROOT)} imports {name}"
        for package in ("partners", "matching")
        for path in python_files(package)
        for name in imports_of(path)
        if name.startswith("hub") and not name.startswith("hub.core")
    ]
    assert crossings == []


def test_the_kit_and_the_engine_import_nothing_of_ours() -> None:
    crossings = []
    for path in python_files("partners/kit"):
        crossings += [
            f"{path.relative_to(ROOT)} imports {n}"
            for n in imports_of(path)
            if not n.startswith("partners.kit")
        ]
    for relative, own in SELF_CONTAINED.items():
        path = ROOT / relative
        if path.exists():
            crossings += [f"{relative} imports {n}" for n in imports_of(path) if n not in own]
    assert crossings == []


def test_the_walker_sees_imports() -> None:
    # Guard against a walker that silently finds nothing.
    assert "hub.core.auth" in imports_of(ROOT / "hub" / "app.py")


def _cli_imports(path: Path) -> set[str]:
    """The ``hub.cli*`` modules ``path`` imports, ``from hub import cli_x`` included."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("hub.cli")}


def test_the_cli_modules_import_each_other_without_a_cycle() -> None:
    modules = {f"hub.{path.stem}": path for path in sorted((ROOT / "hub").glob("cli*.py"))}
    graph = {name: _cli_imports(path) & set(modules) - {name} for name, path in modules.items()}
    assert {"hub.cli", "hub.cli_common"} <= set(graph)  # the walker sees the modules
    assert "hub.cli_common" in graph["hub.cli_admin"]  # ... and their imports
    cycles = []

    def visit(name: str, trail: list[str]) -> None:
        if name in trail:
            cycles.append(" -> ".join([*trail[trail.index(name) :], name]))
            return
        for target in sorted(graph[name]):
            visit(target, [*trail, name])

    for start in sorted(graph):
        visit(start, [])
    assert cycles == []
    assert graph["hub.cli_common"] == set()  # the shared helpers import no command module
