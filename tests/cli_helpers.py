"""Helpers shared by the command-line tests: a folder's content digest and the one-line error."""

from __future__ import annotations

import hashlib
from pathlib import Path


def tree_digest(root: Path) -> dict[str, str]:
    """sha256 of every file under ``root`` (relative path -> digest): the folder's whole content."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def one_error_line(err: str) -> str:
    """The single ``mortal: error: ...`` line of ``err``; fails on tracebacks or several lines."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got:\n{err}"
    assert lines[0].startswith("mortal: error: "), err
    return lines[0]
