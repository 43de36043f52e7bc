"""The package's layout: stages import only from the stages before them.

The order is the path data takes (docs/architecture.md): the shared base,
then data, models, inference, evaluation, training, export, the main job
and the command line. These tests read every module's imports (those inside
functions too) with `ast`, so they need no TensorFlow.
"""

import ast
import importlib
from pathlib import Path

import pytest

import keras_unet

PACKAGE = Path(keras_unet.__file__).parent
STAGES = ["base", "data", "models", "inference", "evaluation", "training", "export",
          "quickstart", "cli"]
BASE = {"keras_unet", "keras_unet.errors", "keras_unet.files", "keras_unet.logs",
        "keras_unet.lazy"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def stage(module: str) -> str:
    if module in BASE:
        return "base"
    return module.split(".")[1]


def imported_modules(path: Path) -> set[str]:
    """keras_unet modules a file imports; a public name of `keras_unet`
    counts as the module that defines it."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("keras_unet")}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("keras_unet"):
            for alias in node.names:
                full = f"{node.module}.{alias.name}"
                if node.module == "keras_unet" and alias.name in keras_unet._EXPORTS:
                    found.add(keras_unet._EXPORTS[alias.name])
                elif (PACKAGE.parent / full.replace(".", "/")).with_suffix(".py").is_file() or (
                        PACKAGE.parent / full.replace(".", "/")).is_dir():
                    found.add(full)
                else:
                    found.add(node.module)
    return found


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}
GRAPH = {name: imported_modules(path) - {name} for name, path in MODULES.items()}


def test_every_module_belongs_to_a_known_stage():
    assert {stage(m) for m in MODULES} == set(STAGES)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_imports_only_its_own_stage_and_earlier_ones(module):
    rank = STAGES.index(stage(module))
    later = sorted(m for m in GRAPH[module] if STAGES.index(stage(m)) > rank)
    assert not later, f"{module} ({stage(module)}) imports later stages: {later}"


def test_the_base_imports_no_stage():
    for module in BASE:
        assert {stage(m) for m in GRAPH[module]} <= {"base"}, module


def test_there_is_no_import_circle():
    """Depth-first search over every import, those inside functions too."""
    done, path = set(), []

    def visit(module):
        if module in path:
            circle = path[path.index(module):] + [module]
            pytest.fail("import circle: " + " -> ".join(circle))
        if module in done or module not in GRAPH:
            return
        path.append(module)
        for imported in sorted(GRAPH[module]):
            visit(imported)
        path.pop()
        done.add(module)

    for module in sorted(GRAPH):
        visit(module)


@pytest.mark.parametrize("package", ["keras_unet", "keras_unet.export"])
def test_every_public_name_is_defined_where_the_package_says(package):
    exports = importlib.import_module(package)._EXPORTS
    for name, module in exports.items():
        source = MODULES[module].read_text()
        tree = ast.parse(source)
        defined = {n.name for n in tree.body
                   if isinstance(n, ast.FunctionDef | ast.ClassDef)}
        defined |= {t.id for n in tree.body if isinstance(n, ast.Assign)
                    for t in n.targets if isinstance(t, ast.Name)}
        assert name in defined, f"{package}.{name}: not defined in {module}"
