"""The dependency direction of DESIGN.md, checked with ``ast`` over the sources.

``devices`` never imports ``mortal``; the learning modules of ``mortal`` see
hardware only through ``mortal.chip`` and never import ``devices``.  Only the
composition layer (configs, fleet, CLI) may build chips from ``devices``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LEARNING_MODULES = ("chip.py", "ff", "updates.py", "_kernels.py", "distill.py", "data.py", "data", "care.py",
                    "slopes.py", "validate.py", "ops.py", "errors.py", "progress.py")


def imported_packages(path: Path, root: Path = ROOT) -> set[str]:
    """Top-level names of every package ``path`` imports (absolute or relative).

    Relative imports are resolved against the file's own package under
    ``root``, so ``from .. import devices`` inside ``mortal`` counts as
    ``devices``; ``importlib.import_module("x")`` and ``__import__("x")`` with a
    literal name count too.
    """
    tree = ast.parse(path.read_text(), filename=str(path))
    package = path.parent.relative_to(root).parts
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                found.add((node.module or "").split(".")[0])
                continue
            base = list(package[: max(len(package) - (node.level - 1), 0)])
            parts = base + (node.module.split(".") if node.module else [])
            if parts:
                found.add(parts[0])
            else:
                found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.Call):
            name = getattr(node.func, "id", None) or getattr(node.func, "attr", None)
            arg = node.args[0] if node.args else None
            if name in ("import_module", "__import__") and isinstance(arg, ast.Constant) \
                    and isinstance(arg.value, str):
                found.add(arg.value.split(".")[0])
    return found


def test_import_scanner_sees_every_form(tmp_path):
    pkg = tmp_path / "devices"
    pkg.mkdir()
    src = pkg / "x.py"
    src.write_text(
        "import numpy as np\n"
        "import mortal.chip\n"
        "from .spec import ChipSpec\n"
        "def f():\n"
        "    import importlib\n"
        "    return importlib.import_module('scipy.stats')\n"
    )
    assert imported_packages(src, tmp_path) == {"numpy", "mortal", "devices", "importlib", "scipy"}
    src.write_text("from .. import mortal\nfrom mortal import ff\n")
    assert imported_packages(src, tmp_path) == {"mortal"}
    src.write_text("x = __import__('mortal')\n")
    assert imported_packages(src, tmp_path) == {"mortal"}


DEVICE_FILES = sorted((ROOT / "devices").rglob("*.py"))


@pytest.mark.parametrize("path", DEVICE_FILES, ids=lambda p: str(p.relative_to(ROOT)))
def test_devices_never_imports_mortal(path):
    assert "mortal" not in imported_packages(path)


def test_devices_sources_were_found():
    assert {p.name for p in DEVICE_FILES} >= {"__init__.py", "chip.py", "persistence.py", "archive.py", "_kernels.py",
                                              "spec.py"}


LEARNING_FILES = sorted(
    f for name in LEARNING_MODULES
    for f in ((ROOT / "mortal" / name).rglob("*.py") if (ROOT / "mortal" / name).is_dir()
              else [ROOT / "mortal" / name] if (ROOT / "mortal" / name).is_file() else []))


def test_learning_modules_never_import_devices():
    # One test over all files, not parametrized: an id containing "data" would be
    # deselected by the `-k "not data"` used to skip the data-loader tests.
    offenders = [str(p.relative_to(ROOT)) for p in LEARNING_FILES if "devices" in imported_packages(p)]
    assert not offenders, f"learning modules importing devices: {offenders}"


def test_the_chip_protocol_module_exists():
    assert ROOT / "mortal" / "chip.py" in LEARNING_FILES


# -- the learning package: no import cycles, no reaching into another module's private names --------

MORTAL = ROOT / "mortal"
MORTAL_FILES = sorted(MORTAL.rglob("*.py"))


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _runtime_imports(path: Path, files: list[Path], root: Path = ROOT) -> set[str]:
    """Dotted ``mortal`` modules among ``files`` that ``path`` imports at run time (imports inside
    ``if TYPE_CHECKING:`` blocks are annotations only and do not count)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.dump(node.test):
            skip.update(id(n) for b in node.body for n in ast.walk(b))
    me = _module_name(path, root).split(".")
    package = me if path.name == "__init__.py" else me[:-1]
    known = {_module_name(p, root) for p in files}
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = (package[: len(package) - (node.level - 1)] if node.level else [])
            mod = base + (node.module.split(".") if node.module else [])
            names = [".".join(mod)] + [".".join(mod + [a.name]) for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name and name.startswith("mortal"):
                found.add(name)
    found.discard(_module_name(path, root))
    return found


def import_cycles(files: list[Path], root: Path = ROOT) -> list[list[str]]:
    """Cycles in the run-time import graph of ``files`` (a package importing its own
    ``__init__`` re-exports does not count)."""
    graph = {_module_name(p, root): _runtime_imports(p, files, root) for p in files}
    cycles: list[list[str]] = []
    state: dict[str, int] = {}

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if nxt == node or (node.startswith(nxt + ".") and nxt != "mortal"):
                continue
            if state.get(nxt) == 1:
                cycles.append(stack[stack.index(nxt):] + [nxt] if nxt in stack else [node, nxt])
            elif not state.get(nxt):
                visit(nxt, stack + [nxt])
        state[node] = 2

    for mod in sorted(graph):
        if not state.get(mod):
            visit(mod, [mod])
    return cycles


def test_no_import_cycles_among_mortal_modules():
    cycles = import_cycles(MORTAL_FILES)
    assert not cycles, f"import cycles among mortal modules: {cycles}"


def test_the_cycle_check_sees_a_cycle(tmp_path):
    pkg = tmp_path / "mortal"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from . import b\n")
    (pkg / "b.py").write_text("from .c import x\n")
    (pkg / "c.py").write_text("import mortal.a\n")
    (pkg / "d.py").write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from . import a\n")
    files = sorted(pkg.rglob("*.py"))
    assert import_cycles(files, tmp_path) == [["mortal.a", "mortal.b", "mortal.c", "mortal.a"]]
    (pkg / "c.py").write_text("x = 1\n")
    assert import_cycles(files, tmp_path) == []


def _private_uses(path: Path) -> list[str]:
    """Names with one leading underscore that ``path`` takes from other modules: imported
    (``from .x import _y``) or read as attributes of anything but ``self``/``cls``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += [f"import {a.name} from {node.module}" for a in node.names
                    if a.name.startswith("_") and not a.name.startswith("__")
                    and a.name not in ("_kernels",)]
        elif isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            owner = node.value
            if isinstance(owner, ast.Name) and owner.id in ("self", "cls"):
                continue
            out.append(f"line {node.lineno}: .{node.attr}")
    return out


def test_no_mortal_module_uses_another_modules_private_names():
    offenders = {str(p.relative_to(ROOT)): u for p in MORTAL_FILES if (u := _private_uses(p))}
    assert not offenders, f"private names used across modules: {offenders}"


MAX_MODULE_LINES = 440  # "a few hundred lines with one concern each" (DESIGN.md), with some slack


def _long_modules(files: list[Path]) -> dict[str, int]:
    return {str(p.relative_to(ROOT)): n for p in files if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}


def test_mortal_modules_stay_small():
    long = _long_modules(MORTAL_FILES)
    assert not long, f"modules over ~400 lines (split them by concern): {long}"


def test_devices_modules_stay_small():
    long = _long_modules(DEVICE_FILES)
    assert not long, f"modules over ~400 lines (split them by concern): {long}"
