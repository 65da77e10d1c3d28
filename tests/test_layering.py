"""The package's layers: imports run one way (cli -> daemon -> server -> api -> service ->
kernel/openclaw/models -> translate -> config -> errors), with no cycles, and every folder says what lives in it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "aiosd"

# Higher layers may import lower ones, never the reverse; layers of equal rank may not import each other.
LAYERS = {
    "cli": 8,
    "__main__": 9,
    "daemon": 7,
    "server": 6,
    "api": 5,
    "service": 4,
    "kernel": 3,
    "openclaw": 3,
    "models": 3,
    "translate": 2,
    "config": 1,
    "errors": 0,
    "__init__": 0,  # the package root holds only __version__
}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> str:
    parts = module.split(".")
    return "__init__" if len(parts) == 1 else parts[1]


def imported_modules(path: Path) -> set[str]:
    """Every aiosd module the file imports, at any depth (deferred imports in functions included)."""
    this = module_name(path)
    package = this if path.name == "__init__.py" else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.split(".")[0] == "aiosd")
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.split(".")[0] != "aiosd":
                continue
            found.add(target)
            # "from aiosd.kernel import client" imports the submodule aiosd.kernel.client
            for alias in node.names:
                if (PACKAGE.parent / (target + "." + alias.name).replace(".", "/")).with_suffix(".py").is_file():
                    found.add(target + "." + alias.name)
    found.discard(this)
    return found


def import_graph() -> dict[str, set[str]]:
    return {module_name(path): imported_modules(path) for path in PACKAGE.rglob("*.py")}


def test_the_walk_sees_the_whole_package():
    graph = import_graph()
    assert {"aiosd.cli.main", "aiosd.daemon", "aiosd.api.app", "aiosd.service.runtime", "aiosd.kernel.client",
            "aiosd.openclaw.sync", "aiosd.translate.query", "aiosd.config.loader", "aiosd.errors"} <= graph.keys()
    assert "aiosd.kernel.client" in graph["aiosd.service.runtime"]


def test_every_module_belongs_to_a_known_layer():
    unknown = sorted(m for m in import_graph() if layer_of(m) not in LAYERS)
    assert unknown == [], f"add these folders to LAYERS: {unknown}"


def test_imports_run_downward_only():
    upward = []
    for module, imports in import_graph().items():
        for target in imports:
            mine, theirs = layer_of(module), layer_of(target)
            if mine == theirs or target == "aiosd":
                continue
            if LAYERS[theirs] >= LAYERS[mine]:
                upward.append(f"{module} imports {target}")
    assert upward == []


def test_there_are_no_import_cycles():
    graph = import_graph()
    done: set[str] = set()
    path: list[str] = []

    def visit(module: str) -> None:
        if module in path:
            pytest.fail("import cycle: " + " -> ".join(path[path.index(module):] + [module]))
        if module in done:
            return
        path.append(module)
        for target in sorted(graph.get(module, ())):
            visit(target)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)


def test_every_package_and_module_says_what_lives_there():
    missing = [str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
               if not ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))]
    assert missing == []


def test_names_inside_a_folder_drop_the_folders_prefix():
    stuttering = [str(path.relative_to(PACKAGE.parent)) for path in PACKAGE.rglob("*.py")
                  if path.parent != PACKAGE and path.stem.startswith(path.parent.name + "_")]
    assert stuttering == []
