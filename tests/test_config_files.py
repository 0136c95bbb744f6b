"""Experiment config files that are not text: refused in one line (issue 15, item 13)."""

from __future__ import annotations

from cli_helpers import one_error_line
from mortal.cli import main


def test_a_config_that_is_not_utf8_is_one_clear_line(tmp_path, capsys):
    # Before: a UnicodeDecodeError traceback from reading the file.
    path = tmp_path / "latin1.toml"
    path.write_bytes('name = "caf\u00e9"\nchips = 1\n'.encode("latin-1"))
    out = tmp_path / "out"
    for command in ("fleet", "sweep"):
        assert main([command, str(path), "--out", str(out), "--quiet"]) == 2
        line = one_error_line(capsys.readouterr().err)
        assert str(path) in line and "UTF-8" in line
    assert not out.exists()
