"""The import direction between corral's packages (docs/architecture.md).

protocols and runtime know nothing of trio; ctypes lives only in
runtime/_syscalls.py and pyroute2 only in runtime/net.py.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FORBIDDEN = {
    "protocols": {"trio", "anyio", "socket", "ctypes", "pyroute2", "runtime", "supervisor", "metrics"},
    "runtime": {"trio", "anyio", "supervisor", "metrics", "ctypes", "pyroute2"},
    "metrics": {"trio", "anyio", "supervisor", "ctypes", "pyroute2"},
    "supervisor": {"ctypes", "pyroute2"},
}
ONLY_IN = {"ctypes": "runtime/_syscalls.py", "pyroute2": "runtime/net.py"}


def imported_names(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_point_one_way(package: str) -> None:
    files = sorted((ROOT / package).rglob("*.py"))
    assert files, f"{package}/ has no modules"
    for path in files:
        rel = path.relative_to(ROOT).as_posix()
        allowed = {name for name, home in ONLY_IN.items() if home == rel}
        bad = (imported_names(path) & FORBIDDEN[package]) - allowed
        assert not bad, f"{rel} imports {sorted(bad)}"
