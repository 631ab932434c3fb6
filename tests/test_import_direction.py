"""Imports run one way (DESIGN.md, convention 14): config and small utilities, then data,
modeling, evaluation, engine, then the launchers; and no module imports hnm_d2 inside a function
(a deferred import that dodges a cycle hides the cycle instead of removing it).

Every module of the package is parsed with ``ast``, nothing is imported."""

import ast
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "hnm_d2"

# Layers, bottom to top: a module may import its own layer and the layers below it.
LAYERS = ("bottom", "data", "modeling", "evaluation", "engine", "launcher", "package")
# Modules by dotted prefix; the longest prefix wins. Any other module at the package root is a
# small utility of the bottom layer (like config.py and key_check.py), so that a new launcher
# there fails this test until it is named here.
LAYER_OF_PREFIX = {
    "hnm_d2.utils": "bottom",
    "hnm_d2.data": "data",
    "hnm_d2.modeling": "modeling",
    "hnm_d2.evaluation": "evaluation",
    "hnm_d2.engine": "engine",
    "hnm_d2.mine": "launcher",
    "hnm_d2.review": "launcher",
    "hnm_d2.demo": "launcher",
}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def package_modules() -> List[Tuple[str, Path]]:
    return sorted((module_name(p), p) for p in PACKAGE.rglob("*.py"))


def layer_of(module: str) -> str:
    if module == "hnm_d2":
        return "package"  # its __init__ imports every part, so that importing it registers all
    prefixes = [p for p in LAYER_OF_PREFIX if module == p or module.startswith(p + ".")]
    if prefixes:
        return LAYER_OF_PREFIX[max(prefixes, key=len)]
    return "bottom"


def is_module(dotted: str) -> bool:
    path = PACKAGE.parent.joinpath(*dotted.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_modules(node: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """The hnm_d2 modules an import statement imports (nothing for other packages)."""
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name == "hnm_d2" or alias.name.startswith("hnm_d2."):
                yield alias.name
        return
    base = resolve_from(node, module, is_package)
    if base is None:
        return
    for alias in node.names:
        # "from hnm_d2.data import mapper" imports the module hnm_d2.data.mapper.
        yield f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base


def resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> Optional[str]:
    if node.level == 0:
        name = node.module or ""
        return name if name == "hnm_d2" or name.startswith("hnm_d2.") else None
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def problems_of(source: str, module: str, is_package: bool = False) -> List[str]:
    """The upward and the function-level imports of hnm_d2 modules in one module's source."""
    problems = []
    own = LAYERS.index(layer_of(module))

    def visit(node: ast.AST, in_function: bool) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            for target in imported_modules(node, module, is_package):
                if in_function:
                    problems.append(f"{module}:{node.lineno} imports {target} inside a function")
                if LAYERS.index(layer_of(target)) > own:
                    problems.append(
                        f"{module}:{node.lineno} ({layer_of(module)}) imports {target} "
                        f"({layer_of(target)}), a layer above"
                    )
        inner = in_function or isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        for child in ast.iter_child_nodes(node):
            visit(child, inner)

    visit(ast.parse(source), False)
    return problems


def test_the_layers_name_every_part_of_the_package():
    parts = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert {f"hnm_d2.{part}" for part in parts} <= set(LAYER_OF_PREFIX)


def test_no_module_imports_upward_or_inside_a_function():
    modules = package_modules()
    assert len(modules) > 30, "the package was not found"
    problems = [
        problem
        for name, path in modules
        for problem in problems_of(path.read_text(), name, path.name == "__init__.py")
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "module, source, found",
    [
        ("hnm_d2.data.mapper", "from ..modeling.buffer import image_key", "a layer above"),
        ("hnm_d2.data.mapper", "from hnm_d2.engine import setup", "a layer above"),
        ("hnm_d2.evaluation.froc", "import hnm_d2.engine.launcher", "a layer above"),
        ("hnm_d2.data", "from ..evaluation import x", "a layer above"),
        ("hnm_d2.key_check", "from .modeling import meta_arch", "a layer above"),
        ("hnm_d2.config", "from . import mine", "a layer above"),
        ("hnm_d2.modeling.rpn", "def f():\n    from .buffer import image_key", "inside a function"),
        ("hnm_d2.engine.mining", "def f():\n    import hnm_d2.config", "inside a function"),
    ],
)
def test_the_check_finds_what_it_looks_for(module, source, found):
    problems = problems_of(source, module, is_package=module == "hnm_d2.data")
    assert len(problems) == 1 and found in problems[0]


@pytest.mark.parametrize(
    "module, source",
    [
        ("hnm_d2.modeling.rpn", "from ..data.identity import image_identity"),
        ("hnm_d2.engine.mining", "from ..evaluation import build_hnm_evaluator"),
        ("hnm_d2.data.mapper", "from ..key_check import check_hnm_keys_are_used"),
        ("hnm_d2.mine", "from .engine import setup"),
        ("hnm_d2.data.mapper", "def f():\n    import numpy"),
    ],
)
def test_the_check_lets_downward_and_other_imports_pass(module, source):
    assert problems_of(source, module) == []
