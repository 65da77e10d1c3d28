"""The package's layers: imports run one way (cli -> daemon -> server -> api -> service ->
kernel/openclaw/models -> translate -> config -> errors), with no cycles, and every folder says what lives in it.

An object passed down can hide an upward reach that no import shows (kernel code handed the whole
runtime and reading its config). mypy makes every parameter carry a type; the checks below make
sure the lower layers' annotations and ``TYPE_CHECKING`` imports name no higher layer's type.
"""

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
    """Every aiosd module the file imports, at any depth (deferred imports in functions and
    ``if TYPE_CHECKING:`` imports included)."""
    return imports_in(path.read_text(encoding="utf-8"), module_name(path), is_package=path.name == "__init__.py")


def imports_in(source: str, this: str, *, is_package: bool = False) -> set[str]:
    package = this if is_package else this.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
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
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(module):], module]))
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


# --- types passed down -------------------------------------------------------------------------

# The layers that are handed objects from above (a runtime, a config generation) and must not know their types.
LOWER = ("kernel", "models", "openclaw", "translate", "config")


def annotation_names(source: str) -> set[str]:
    """Every name an annotation mentions, string annotations and dotted names (last part) included."""
    names: set[str] = set()

    def collect(annotation: ast.expr | None) -> None:
        if annotation is None:
            return
        for node in ast.walk(annotation):
            if isinstance(node, ast.Name):
                names.add(node.id)
            elif isinstance(node, ast.Attribute):
                names.add(node.attr)
            elif isinstance(node, ast.Constant) and isinstance(node.value, str):
                try:
                    collect(ast.parse(node.value, mode="eval").body)
                except SyntaxError:
                    continue

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            arguments = node.args
            for argument in (*arguments.posonlyargs, *arguments.args, *arguments.kwonlyargs,
                             arguments.vararg, arguments.kwarg):
                if argument is not None:
                    collect(argument.annotation)
            collect(node.returns)
        elif isinstance(node, ast.AnnAssign):
            collect(node.annotation)
    return names


def classes_by_layer() -> dict[str, set[str]]:
    """Each class name defined in aiosd, with the layers that define a class of that name."""
    found: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ClassDef):
                found.setdefault(node.name, set()).add(layer_of(module_name(path)))
    return found


def higher_types_named(source: str, layer: str, classes: dict[str, set[str]]) -> list[str]:
    """The names in ``source``'s annotations that only a layer above ``layer`` defines."""
    rank = LAYERS[layer]
    return sorted(name for name in annotation_names(source)
                  if name in classes and all(LAYERS[owner] > rank for owner in classes[name]))


def test_the_lower_layers_name_no_higher_layers_types():
    classes = classes_by_layer()
    reaching = []
    for path in sorted(PACKAGE.rglob("*.py")):
        layer = layer_of(module_name(path))
        if layer in LOWER:
            for name in higher_types_named(path.read_text(encoding="utf-8"), layer, classes):
                reaching.append(f"{module_name(path)} mentions {name} ({'/'.join(sorted(classes[name]))})")
    assert reaching == [], "pass what the code needs as arguments, not a higher layer's object"


def test_the_type_checks_see_what_they_must():
    # Import checks see TYPE_CHECKING imports; annotation checks see strings and names never imported,
    # and leave alone a name that a layer at or below the module's also defines (Config).
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from aiosd.service.runtime import Runtime\n"
        "def probe(runtime: 'Runtime', daemon: Daemon, config: Config, *rest: list[aiosd.api.app.Thing]) -> None: ...\n"
        "state: RequestHistory | None = None\n"
    )
    assert "aiosd.service.runtime" in imports_in(source, "aiosd.kernel.canary")
    classes = {"Runtime": {"service"}, "Daemon": {"daemon"}, "Thing": {"api"}, "RequestHistory": {"service"},
               "Config": {"config", "service"}}
    assert higher_types_named(source, "kernel", classes) == ["Daemon", "RequestHistory", "Runtime", "Thing"]
