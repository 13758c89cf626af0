"""The architecture, stated as tests: which part of photonlib may import which, no import cycles,
and the light parts (geometry, the wire format, the client, the Slicer side) never load PyTorch.

Imports are read from the source (``ast``), function-level ("lazy") imports included: a lazy
import still makes a dependency, and one that closes a cycle only hides it. Imports under
``if TYPE_CHECKING:`` do not run and are left out. Importing ``a.b.c`` also runs the package
``a.b``'s ``__init__``; those package edges are not counted (a package importing its own modules
is what a package is).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPOSITORY = Path(__file__).resolve().parents[1]
PACKAGE = REPOSITORY / "PhotonLib" / "photonlib"
SLICER_SIDE = REPOSITORY / "PhotonSlicer"

#: Which top-level parts of photonlib each part may import (besides itself). Read upwards: the
#: geometry, errors and answer vocabulary are the ground floor; volume I/O and the wire format
#: stand on them; the model on volume I/O; inference on the model; serving, training,
#: evaluation and benchmarks on those; the command line on everything.
ALLOWED = {
    "errors": set(),
    "geometry": set(),
    "answers": set(),
    "wire": {"errors", "geometry"},
    "client": {"photonlib", "errors", "geometry", "wire"},
    "volume": {"errors", "geometry"},
    "data": {"photonlib", "errors", "geometry", "answers", "volume"},
    "model": {"errors", "geometry", "volume"},
    "inference": {"errors", "geometry", "volume", "model"},
    "evaluation": {"photonlib", "errors", "answers", "geometry", "volume", "data"},
    "training": {"errors", "geometry", "answers", "volume", "data", "model"},
    "serving": {"photonlib", "errors", "geometry", "wire", "volume", "model", "inference"},
    "benchmarks": {"errors", "geometry", "volume", "model"},
    "cli": {
        "photonlib", "errors", "geometry", "answers", "wire", "client", "volume", "data", "model",
        "inference", "evaluation", "training", "serving", "benchmarks",
    },  # fmt: skip
}
#: Modules that must load without PyTorch, transformers or SimpleITK, with everything they import.
#: (``photonlib.volume.formats`` imports nothing either, but its package loads the readers.)
LIGHT_MODULES = (
    "photonlib.errors",
    "photonlib.geometry",
    "photonlib.answers",
    "photonlib.wire",
    "photonlib.client",
    "photonlib.model.checkpoint_formats",
)
HEAVY_PACKAGES = ("torch", "transformers", "SimpleITK", "accelerate")


@dataclass(frozen=True)
class Import:
    target: str
    line: int


def module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def imports_of(path: Path, known: dict[str, Path] = MODULES) -> list[Import]:
    """Every import the file makes, anywhere in it, except under ``if TYPE_CHECKING:``."""
    found: list[Import] = []

    def visit(node: ast.AST) -> Iterator[None]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and isinstance(child.test, ast.Name) and child.test.id == "TYPE_CHECKING":
                continue
            if isinstance(child, ast.Import):
                found.extend(Import(alias.name, child.lineno) for alias in child.names)
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                for alias in child.names:  # `from a import b` imports the module a.b when there is one
                    full = f"{child.module}.{alias.name}"
                    found.append(Import(full if full in known else child.module, child.lineno))
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return found


def part_of(module: str) -> str:
    """``photonlib.model.pruning.its`` -> ``model``; ``photonlib`` -> ``photonlib``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def photonlib_graph() -> dict[str, set[str]]:
    return {
        name: {item.target for item in imports_of(path) if item.target in MODULES and item.target != name}
        for name, path in MODULES.items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(sorted(graph[successor]))))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        cycles.append(sorted(component))
    return cycles


def closure(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo.extend(graph.get(module, ()))
    return seen


def test_every_part_imports_only_the_parts_below_it():
    unknown = {part_of(name) for name in MODULES} - set(ALLOWED) - {"photonlib", "examples", "pretrained"}
    assert not unknown, f"new top-level parts of photonlib need a place in ALLOWED: {sorted(unknown)}"
    breaks = []
    for name, path in MODULES.items():
        part = part_of(name)
        for item in imports_of(path):
            if not item.target.startswith("photonlib") or part_of(item.target) == part or part not in ALLOWED:
                continue
            if part_of(item.target) not in ALLOWED[part]:
                breaks.append(f"{path.relative_to(REPOSITORY)}:{item.line}: {part} imports {item.target}")
    assert not breaks, "imports against the layering:\n" + "\n".join(breaks)


def test_the_model_never_imports_serving_training_or_the_command_line():
    # Stated on its own because it is the rule people break first.
    for name, path in MODULES.items():
        if part_of(name) == "model":
            targets = {part_of(item.target) for item in imports_of(path) if item.target.startswith("photonlib.")}
            assert not targets & {"serving", "training", "cli", "inference", "evaluation", "benchmarks"}, name


def test_geometry_and_errors_import_nothing_of_photonlib():
    for name in ("photonlib.geometry", "photonlib.errors", "photonlib.answers"):
        own = [item.target for item in imports_of(MODULES[name]) if item.target.startswith("photonlib")]
        assert own == [], f"{name} imports {own}"


def test_no_import_cycles_between_photonlib_modules():
    assert find_cycles(photonlib_graph()) == []


def test_the_cycle_finder_sees_a_cycle_hidden_in_a_function(tmp_path):
    # A lazy import that closes a cycle is the case this file exists for.
    package = tmp_path / "photonlib"
    (package / "part").mkdir(parents=True)
    (package / "part" / "first.py").write_text("from photonlib.part.second import b\n")
    (package / "part" / "second.py").write_text("def b():\n    from photonlib.part.first import a\n")
    known = {"photonlib.part.first": package / "part" / "first.py", "photonlib.part.second": package / "part" / "second.py"}
    graph = {name: {i.target for i in imports_of(path, known) if i.target in known} for name, path in known.items()}
    assert find_cycles(graph) == [["photonlib.part.first", "photonlib.part.second"]]
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []


@pytest.mark.parametrize("light", LIGHT_MODULES)
def test_light_modules_never_reach_pytorch(light):
    graph = photonlib_graph()
    reached = closure(light, graph)
    heavy = sorted(
        f"{name} imports {item.target}"
        for name in reached
        for item in imports_of(MODULES[name])
        if item.target.split(".")[0] in HEAVY_PACKAGES
    )
    assert not heavy, f"{light} reaches heavy packages: {heavy}"


def test_light_modules_load_without_pytorch_in_a_fresh_python():
    code = (
        "import sys\n"
        f"for name in {list(LIGHT_MODULES)!r}: __import__(name)\n"
        f"print(sorted(m for m in {list(HEAVY_PACKAGES)!r} if m in sys.modules))\n"
        "import photonlib.cli.main\n"  # `photon --help` stays quick: no PyTorch (SimpleITK is quick)
        "print(sorted(m for m in ('torch', 'transformers', 'accelerate') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["[]", "[]"]


def test_the_slicer_side_imports_only_light_photonlib_modules():
    slicer_files = sorted(SLICER_SIDE.rglob("*.py"))
    assert slicer_files
    graph = photonlib_graph()
    light = set().union(*(closure(name, graph) for name in LIGHT_MODULES))
    used = {}
    for path in slicer_files:
        for item in imports_of(path):
            root = item.target.split(".")[0]
            assert root not in HEAVY_PACKAGES, f"{path.relative_to(REPOSITORY)}:{item.line} imports {item.target}"
            if root == "photonlib":
                used[item.target] = f"{path.relative_to(REPOSITORY)}:{item.line}"
    heavy = {target: where for target, where in used.items() if target not in light | {"photonlib"}}
    assert not heavy, f"the Slicer side imports photonlib modules outside the light set: {heavy}"
