"""The package's shape (docs/architecture.md): imports point one way, down the layers, function-level ones included;
no circle; the commands are thin; the configuration reference is generated from the declarations."""

from __future__ import annotations

import pytest
import ast
import subprocess
import sys
from pathlib import Path

from .helpers import REPO

PACKAGE = REPO / "plugin"
# bottom to top; the commands (plugin/<name>.py) and the public API (plugin/__init__.py) stand above them all
LAYERS = ["utils", "tuners", "config", "models", "data", "inference", "serving", "evaluation", "training",
          "experiments", "integrations"]
COMMANDS = ["train", "eval", "lm_eval", "plot", "bench", "study", "chat", "export", "serve"]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py")}


def import_edges() -> set[tuple[str, str]]:
    """(importer, imported) for every import of a plugin module anywhere in a plugin module's code."""
    modules = _modules()
    edges = set()
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                # "from package import submodule" imports the submodule
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            edges |= {(name, t) for t in targets if t in modules and t != name}
    return edges


def layer(module: str) -> int:
    parts = module.split(".")
    if len(parts) == 1 or parts[1] not in LAYERS:
        return len(LAYERS)  # plugin itself and the commands
    return LAYERS.index(parts[1])


def test_no_import_circle():
    graph: dict[str, set[str]] = {}
    for a, b in import_edges():
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            assert state.get(nxt) != 1, "import circle: " + " -> ".join(path[path.index(nxt):] + [nxt])
            if nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


def test_imports_point_down_the_layers():
    upward = sorted((a, b) for a, b in import_edges() if layer(b) > layer(a))
    assert not upward, f"imports that point up the layers {LAYERS}: {upward}"
    assert not [(a, b) for a, b in import_edges() if b == "plugin" and a != "plugin"], "import plugin from inside it"


def test_the_checks_can_fail():
    """The edge reader sees a function-level relative import (the kind that hid the old circles)."""
    edges = import_edges()
    assert ("plugin.train", "plugin.training.run") in edges
    assert ("plugin.integrations.axolotl", "plugin.training.trainer") in edges  # imported inside a method
    assert layer("plugin.tuners.base") < layer("plugin.config.schema") < layer("plugin.training.run")


def test_commands_are_thin():
    """A command module holds its argument parser and main; the work is in the library."""
    for command in COMMANDS:
        tree = ast.parse((PACKAGE / f"{command}.py").read_text())
        functions = [n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
        assert set(functions) <= {"_parser", "main", "compare"}, (command, functions)


@pytest.mark.slow
def test_configuration_reference_is_current():
    """docs/configuration.md is what the declarations generate; regenerate it with the command it names."""
    generated = subprocess.run([sys.executable, "-m", "plugin.train", "--config-reference"], cwd=REPO,
                               capture_output=True, text=True, check=True).stdout
    assert (REPO / "docs" / "configuration.md").read_text() == generated, (
        "docs/configuration.md is stale: python -m plugin.train --config-reference > docs/configuration.md")
