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
LEARNING_MODULES = ("chip.py", "ff.py", "updates.py", "_kernels.py", "distill.py", "data.py", "care.py",
                    "slopes.py", "checkpoint.py")


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
    assert {p.name for p in DEVICE_FILES} >= {"__init__.py", "chip.py", "_kernels.py", "spec.py"}


LEARNING_FILES = [ROOT / "mortal" / name for name in LEARNING_MODULES if (ROOT / "mortal" / name).is_file()]


def test_learning_modules_never_import_devices():
    # One test over all files, not parametrized: an id containing "data" would be
    # deselected by the `-k "not data"` used to skip the data-loader tests.
    offenders = [str(p.relative_to(ROOT)) for p in LEARNING_FILES if "devices" in imported_packages(p)]
    assert not offenders, f"learning modules importing devices: {offenders}"


def test_the_chip_protocol_module_exists():
    assert ROOT / "mortal" / "chip.py" in LEARNING_FILES
