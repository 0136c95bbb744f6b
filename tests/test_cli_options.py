"""``mortal options``, ``docs/config.md`` and ``--set KEY=VALUE`` on every command.

No test here trains: every ``--set`` case fails validation (or parsing) before data is loaded.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import re
from pathlib import Path

import pytest

from cli_helpers import one_error_line
from mortal.cli import _parser, main
from mortal.commands import SET_PREFIXES, flatten, reference
from mortal.config import ExperimentConfig, config_from_dict
from mortal.distill import DistillConfig
from mortal.ff import FFConfig
from mortal.lifetime import LifetimeConfig
from mortal.options import field_rows, parse_assignments

REPO = Path(__file__).resolve().parents[1]
SET_COMMANDS = ("train", "distill", "lifetime", "fleet", "sweep")


def printed_rows(section: str) -> list[tuple[str, str]]:
    """``(key, default)`` of every line ``mortal options SECTION`` prints."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(["options", section]) == 0
    lines = buf.getvalue().splitlines()
    assert lines[0] == f"[{section}]"
    rows = []
    for line in lines[1:]:
        assert line.startswith("  ") and " = " in line, line
        key, rest = line[2:].split(" = ", 1)
        default, _ = rest.split("  (", 1)
        rows.append((key, default))
    return rows


def subparsers() -> dict[str, argparse.ArgumentParser]:
    p = _parser()
    action = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return dict(action.choices)


def long_options(command: str) -> list[str]:
    """Every long option of ``mortal COMMAND --help`` (``--help`` itself left out)."""
    return [o for a in subparsers()[command]._actions for o in a.option_strings
            if o.startswith("--") and o != "--help"]


# --- the reference ------------------------------------------------------------------------------------------

def test_docs_config_md_is_the_generated_reference():
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    assert text == reference(), "docs/config.md is stale: regenerate it with `mortal options --markdown > docs/config.md`"


def test_options_markdown_prints_the_reference(capsys):
    assert main(["options", "--markdown"]) == 0
    assert capsys.readouterr().out == reference()


def test_the_reference_lists_every_train_key_once():
    text = reference()
    for row in field_rows(FFConfig, "train"):
        assert text.count(f"| `{row.key}` |") == 1, row.key


@pytest.mark.parametrize("section,model,prefix", [
    ("train", FFConfig, "train"), ("distill", DistillConfig, "distill"), ("lifetime", LifetimeConfig, ""),
    ("experiment", ExperimentConfig, ""),
])
def test_options_prints_every_field_of_its_section(section, model, prefix):
    """Every field once; the train.* and distill.* groups of lifetime/experiment only in their own sections."""
    own = [r.key for r in field_rows(model, prefix) if prefix or not r.key.startswith(("train.", "distill."))]
    assert [k for k, _ in printed_rows(section)] == own


@pytest.mark.parametrize("section", ["lifetime", "experiment"])
def test_options_of_a_command_section_prints_no_train_or_distill_rows(section):
    assert not [k for k, _ in printed_rows(section) if k.startswith(("train.", "distill."))]


def test_the_reference_lists_train_and_distill_keys_only_in_their_sections():
    text = reference()
    for row in field_rows(DistillConfig, "distill"):
        assert text.count(f"| `{row.key}` |") == 1, row.key


def test_options_without_a_section_prints_all_sections(capsys):
    assert main(["options"]) == 0
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if line.startswith("[")] == [
        "[train]", "[distill]", "[lifetime]", "[experiment]"]


def test_options_of_an_unknown_section_exits_2(capsys):
    assert main(["options", "nope"]) == 2
    assert "nope" in capsys.readouterr().err


# --- every printed key, set to its printed default, is accepted ------------------------------------------

TRAIN_ROWS = printed_rows("train")
DISTILL_ROWS = printed_rows("distill")
LIFETIME_ROWS = printed_rows("lifetime")
EXPERIMENT_ROWS = printed_rows("experiment")


@pytest.mark.parametrize("key,default", TRAIN_ROWS, ids=[k for k, _ in TRAIN_ROWS])
def test_every_train_key_at_its_default_gives_the_default_settings(key, default):
    tree = parse_assignments([f"{key}={default}"])
    assert set(tree) == {"train"}
    assert FFConfig(**tree["train"]) == FFConfig()  # as `mortal train` builds it
    assert FFConfig().changed(**flatten(tree["train"])) == FFConfig()  # as `mortal train --resume` does


@pytest.mark.parametrize("key,default", TRAIN_ROWS, ids=[k for k, _ in TRAIN_ROWS])
def test_mortal_train_accepts_every_key_at_its_default(key, default, tmp_path, capsys):
    """The printed key and default pass `mortal train`'s validation: with one bad companion setting,
    only the companion is reported."""
    bad_key, bad = ("train.epochs", "0") if key == "train.batch_size" else ("train.batch_size", "1")
    out = tmp_path / "out"
    code = main(["train", "--mini", "--layers", "10", "--quiet", "--out", str(out),
                 "--set", f"{key}={default}", "--set", f"{bad_key}={bad}"])
    line = one_error_line(capsys.readouterr().err)
    assert code == 2
    assert line.startswith(f"mortal: error: {bad_key}: ") and ";" not in line, line
    assert not out.exists()


@pytest.mark.parametrize("key,default", DISTILL_ROWS, ids=[k for k, _ in DISTILL_ROWS])
def test_every_distill_key_at_its_default_gives_the_default_settings(key, default):
    tree = parse_assignments([f"{key}={default}"])
    assert DistillConfig(**tree["distill"]) == DistillConfig()


@pytest.mark.parametrize("key,default", LIFETIME_ROWS, ids=[k for k, _ in LIFETIME_ROWS])
def test_mortal_lifetime_accepts_every_key_at_its_default(key, default, tmp_path, capsys):
    assert LifetimeConfig(**parse_assignments([f"{key}={default}"])) == LifetimeConfig()
    bad_key, bad = ("generations", "0") if key == "margin" else ("margin", "2")
    out = tmp_path / "out"
    assert main(["lifetime", "--mini", "--quiet", "--out", str(out),
                 "--set", f"{key}={default}", "--set", f"{bad_key}={bad}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"mortal: error: {bad_key}: ") and ";" not in line, line
    assert not out.exists()


@pytest.mark.parametrize("key,default", EXPERIMENT_ROWS, ids=[k for k, _ in EXPERIMENT_ROWS])
def test_mortal_fleet_accepts_every_key_at_its_default(key, default, tmp_path, capsys):
    assert config_from_dict(parse_assignments([f"{key}={default}"])) == ExperimentConfig()
    config = tmp_path / "c.toml"
    config.write_text("")  # every field at its default
    bad_key, bad = ("seed", "-1") if key == "chips" else ("chips", "0")
    out = tmp_path / "out"
    assert main(["fleet", str(config), "--quiet", "--out", str(out),
                 "--set", f"{key}={default}", "--set", f"{bad_key}={bad}"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"mortal: error: {config}: {bad_key}: ") and ";" not in line, line
    assert not out.exists()


def test_the_fleets_train_defaults_are_ffconfigs():
    """A fleet trains with FFConfig's defaults (the epochs `mortal options train` prints), with or without
    a [train] key."""
    assert ExperimentConfig().train == FFConfig()
    assert dict(TRAIN_ROWS)["train.epochs"] == str(FFConfig().epochs)
    got = config_from_dict({"train": {"policy": "mixed"}}).train
    assert got == FFConfig(policy="mixed") and got.epochs == FFConfig().epochs


# --- --set errors ----------------------------------------------------------------------------------------

@pytest.fixture
def fleet_config(tmp_path):
    """A small valid fleet config, and the same with a [sweep] table."""
    body = 'name = "t"\nchips = 1\n[chip]\npreset = "ideal"\nlayers = [10]\n[train]\nepochs = 1\n' \
           '[data]\nsource = "mini"\ntrain_size = 200\n'
    fleet, sweep = tmp_path / "fleet.toml", tmp_path / "sweep.toml"
    fleet.write_text(body)
    sweep.write_text(body + '[sweep]\n"train.optimizer.lr" = [0.01, 0.02]\n')
    return {"fleet": fleet, "sweep": sweep}


def command_line(command: str, out: Path, fleet_config: dict) -> list[str]:
    """A command line of ``command`` that would run (for distill: that fails only after its --set check)."""
    if command == "train":
        return ["train", "--mini", "--layers", "10", "--epochs", "1", "--train-size", "200", "--quiet",
                "--out", str(out)]
    if command == "lifetime":
        return ["lifetime", "--mini", "--layers", "10", "--quiet", "--out", str(out)]
    if command == "distill":
        return ["distill", "--teacher", str(out.parent / "no-teacher"), "--quiet", "--out", str(out)]
    return [command, str(fleet_config[command]), "--quiet", "--out", str(out)]


UNKNOWN = [
    ("train", "train.optimizer.lrr=1", "train.optimizer.lrr", "train.optimizer.lr"),
    ("train", "train.polcy=direct", "train.polcy", "train.policy"),
    ("train", "train.recipe.head_layer=all", "train.recipe.head_layer", "train.recipe.head_layers"),
    ("lifetime", "margn=0.1", "margn", "margin"),
    ("lifetime", "train.polcy=direct", "train.polcy", "train.policy"),
    ("lifetime", "distill.negatves=own", "distill.negatves", "distill.negatives"),
    ("fleet", "train.polcy=direct", "train.polcy", "train.policy"),
    ("sweep", "chps=2", "chps", "chips"),  # not chipz: as close to the group `chip` as to `chips`
    ("sweep", "train.optimizer.lrr=1", "train.optimizer.lrr", "train.optimizer.lr"),
]


@pytest.mark.parametrize("command,item,key,guess", UNKNOWN)
def test_an_unknown_key_is_named_with_a_suggestion(command, item, key, guess, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config) + ["--set", item]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert f"{key}: unknown key" in line
    assert f"did you mean {guess}?" in line
    assert not out.exists()


@pytest.mark.parametrize("command", ["fleet", "sweep"])
def test_fleet_names_an_unknown_key(command, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config) + ["--set", "train.polcy=direct"]) == 2
    assert "train.polcy: unknown key" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


BAD_VALUES = [
    ("train", "train.optimizer.lr=-1", "train.optimizer.lr"),
    ("train", "train.lr=-1", "train.optimizer.lr"),  # routed: the error names the field's full key
    ("train", "train.labels.copies=0", "train.labels.copies"),
    ("train", "train.policy=sometimes", "train.policy"),
    ("train", "train.refit.settle_s=inf", "train.refit.settle_s"),
    ("train", "train.refit=3", "train.refit"),
    ("train", "train.recipe=[1]", "train.recipe"),
    ("lifetime", "margin=2", "margin"),
    ("lifetime", "generations=0", "generations"),
    ("lifetime", "train.measurement.reads=0", "train.measurement.reads"),
    ("lifetime", "distill.temperature=-1", "distill.temperature"),
    ("fleet", "chips=0", "chips"),
    ("fleet", "train.optimizer.lr=-1", "train.optimizer.lr"),
    ("sweep", "data.source=nowhere", "data.source"),
]


@pytest.mark.parametrize("command,item,key", BAD_VALUES)
def test_a_bad_value_names_the_dotted_key(command, item, key, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config) + ["--set", item]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert re.search(rf"(^|[ :]){re.escape(key)}: ", line), line
    assert not out.exists()


@pytest.mark.parametrize("items,key", [
    (["train.defaults=hinton", "train.refit=3"], "train.refit"),
    (["train.defaults=hinton", "train.recipe=null"], "train.recipe"),
    (["train.defaults=measured", "train.refit=3"], "train.refit"),
    (["train.recipe=null"], "train.recipe"),
])
def test_a_group_set_to_a_scalar_is_named(items, key, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    args = command_line("train", out, fleet_config)
    for item in items:
        args += ["--set", item]
    assert main(args) == 2
    assert f"{key}: " in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("command,item", [
    ("train", "distill.negatives=own"),
    ("train", "epochs=3"),
    ("train", "margin=0.1"),
    ("distill", "margin=0.1"),
    ("distill", "epochs=3"),
])
def test_a_key_outside_the_commands_prefixes_is_refused(command, item, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config) + ["--set", item]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert item.split("=")[0].split(".")[0] in line
    assert all(prefix in line for prefix in SET_PREFIXES[command])
    assert not out.exists()


@pytest.mark.parametrize("command", SET_COMMANDS)
@pytest.mark.parametrize("item,needle", [
    ("train.epochs", "no '='"),
    ("=3", "empty key"),
    ("train..epochs=3", "empty segment"),
])
def test_a_malformed_assignment_is_refused(command, item, needle, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config) + ["--set", item]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert needle in line and item in line
    assert not out.exists()


@pytest.mark.parametrize("command", SET_COMMANDS)
def test_a_key_given_twice_is_refused(command, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config)
                + ["--set", "train.optimizer.lr=0.01", "--set", "train.optimizer.lr=0.02"]) == 2
    assert "given twice" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


@pytest.mark.parametrize("command", ["train", "lifetime"])
def test_a_key_and_its_sub_key_are_refused(command, tmp_path, fleet_config, capsys):
    out = tmp_path / "out"
    assert main(command_line(command, out, fleet_config)
                + ["--set", "train.refit={}", "--set", "train.refit.epochs=2"]) == 2
    assert "sub-keys" in one_error_line(capsys.readouterr().err)
    assert not out.exists()


def test_set_values_are_json_or_plain_text():
    tree = parse_assignments(["train.policy=direct", "train.lr=0.02", "train.labels.copies=null",
                              "train.recipe.skip_first_layer=false", "train.policy_x= mixed "])
    assert tree == {"train": {"policy": "direct", "lr": 0.02, "labels": {"copies": None},
                              "recipe": {"skip_first_layer": False}, "policy_x": "mixed"}}


# --- help and README -------------------------------------------------------------------------------------

@pytest.mark.parametrize("command", SET_COMMANDS)
def test_help_mentions_set(command, capsys):
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "--set" in out and "KEY=VALUE" in out


def _mentioned(option: str, text: str) -> bool:
    return re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", text) is not None


def test_readme_mentions_every_train_option():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    missing = [o for o in long_options("train") if not _mentioned(o, readme)]
    assert not missing, f"README.md does not mention these options of `mortal train`: {', '.join(missing)}"


def _readme_command_lines(readme: str) -> list[tuple[str, str]]:
    """``(command, text)`` of every ``mortal COMMAND ...`` in README code spans and code blocks."""
    found = []
    blocks = re.findall(r"```[^\n]*\n(.*?)```", readme, flags=re.S)
    text = re.sub(r"```.*?```", "", readme, flags=re.S)
    pieces = [line for block in blocks for line in block.replace("\\\n", " ").splitlines()]
    pieces += re.findall(r"`([^`]+)`", text)
    for piece in pieces:
        for m in re.finditer(r"\bmortal (\w+)([^#|]*)", piece.replace("\n", " ")):
            found.append((m.group(1), m.group(0)))
    return found


def test_readme_names_no_option_a_command_lacks():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    commands = subparsers()
    stale = []
    for command, text in _readme_command_lines(readme):
        if command not in commands:
            continue
        known = set(long_options(command)) | {"--help"}
        stale += [f"`{text.strip()}`: {o}" for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", text) if o not in known]
    paragraph = re.search(r"`train` options:(.*?)\n\n", readme, flags=re.S)
    if paragraph:
        known = set(long_options("train"))
        stale += [f"`train` options paragraph: {o}" for o in re.findall(r"(?<![\w-])--[a-z][\w-]*", paragraph.group(1))
                  if o not in known]
    assert not stale, "README.md names options that do not exist:\n" + "\n".join(sorted(set(stale)))
