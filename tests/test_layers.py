"""The import contract of the three packages: imports point pipeline -> models -> data, never back.

``data`` (photos, labels, the generator, settings) knows nothing of the network or the application;
``models`` (the network, training, the registry) may use ``data``; ``pipeline`` (the stages, the
command line, the web app) may use both. Every import of every module is read from its source
(top level and inside functions alike), relative imports resolved, so a lazy import inside a
function cannot slip past the rule."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
#: what each package may import of the project (itself always)
ALLOWED = {"data": {"data"}, "models": {"models", "data"}, "pipeline": {"pipeline", "models", "data"}}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path``."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            found.append((node.lineno, name))
    return found


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_point_only_down_the_layers(package):
    bad = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, name in _imports(path):
            top = name.split(".")[0]
            if top in ALLOWED and top not in ALLOWED[package]:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    assert not bad, "\n".join(bad)


def test_the_contract_would_catch_a_violation(tmp_path):
    """The reader resolves relative imports, so the rule cannot be dodged with dots."""
    probe = ROOT / "data" / "synth" / "_probe_for_test.py"
    probe.write_text("def f():\n    from ...pipeline import cli\n    import models.network\n")
    try:
        names = [name for _, name in _imports(probe)]
    finally:
        probe.unlink()
    assert names == ["pipeline", "models.network"]
