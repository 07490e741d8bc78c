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
