"""``mortal.options``: ``--set`` assignments, merging, the field reference and one-line validation errors.

The field reference lives in ``mortal.field_reference``; it is tested here through its
re-export from ``mortal.options``, the import path other code uses.

The models here are toys (frozen, ``extra="forbid"``), not the project's configs,
so that these tests pin the machinery and not the current settings.
"""

from __future__ import annotations

import re
from typing import Literal, Optional

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from mortal.errors import InputError
from mortal.options import (FieldRow, field_rows, format_validation_error, merge, parse_assignments,
                            reference_markdown, suggest)


class Optimizer(BaseModel):
    """Optimizer settings."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    lr: float = Field(0.01, gt=0.0, le=10.0)
    """Learning rate.  Second sentence
    on a second line."""
    steps: int = Field(10, ge=1)
    kind: Literal["sgd", "adam"] = "sgd"
    """Which update rule."""
    clip: Optional[float] = Field(None, gt=0)
    betas: list[float] = Field(default_factory=lambda: [0.9, 0.99])


class Warmup(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")  # no use_attribute_docstrings: no meaning shown

    epochs: int = Field(1, ge=0, lt=100)
    """Epochs of linear warmup."""


class Train(BaseModel):
    """Training settings."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)

    epochs: int = Field(ge=1, le=100)
    """Passes over the data."""
    optimizer: Optimizer = Field(default_factory=lambda: Optimizer(lr=0.5))
    policy: Literal["direct", "mixed"] = "direct"
    warmup: Optional[Warmup] = None
    """Warm the learning rate up first (null: no warmup)."""
    layers: tuple[int, ...] = (3, 2)
    spec: dict[str, dict[str, int]] = Field(default_factory=dict)
    name: str = Field("run | one", description="Run name (explicit description wins).")
    """Not this docstring."""

    @field_validator("layers")
    @classmethod
    def _positive(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(w < 1 for w in v):
            raise ValueError(f"needs positive widths, got {list(v)}")
        return v


class Top(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    seed: int = 0
    train: Train


# --- parse_assignments -------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, value", [
    ("3", 3), ("0.5", 0.5), ("-1e-3", -1e-3), ("true", True), ("false", False), ("null", None),
    ("[1, 2]", [1, 2]), ('"x"', "x"), ('"3"', "3"), ('{"bits": 6}', {"bits": 6}),
    ("mixed", "mixed"), ("a b", "a b"), ("[1,", "[1,"), ("", ""), (" 4 ", 4), ("x=y", "x=y"),
])
def test_values_are_json_else_raw_text(text, value):
    assert parse_assignments([f"k={text}"]) == {"k": value}


def test_dotted_keys_build_nested_dicts():
    got = parse_assignments(["a.b.c=1", "a.b.d=x", "a.e=[1]", "f=null", " g.h =2"])
    assert got == {"a": {"b": {"c": 1, "d": "x"}, "e": [1]}, "f": None, "g": {"h": 2}}
    assert parse_assignments([]) == {}


@pytest.mark.parametrize("items, fragment", [
    (["train.lr"], "assignment 'train.lr' has no '='"),
    (["=3"], "assignment '=3' has an empty key"),
    ([" =3"], "has an empty key"),
    (["a..b=1"], "assignment 'a..b=1' has an empty segment in its key 'a..b'"),
    ([".a=1"], "empty segment"),
    (["a.=1"], "empty segment"),
    (["a.b=1", "a.b=2"], "key 'a.b' is given twice ('a.b=1' and 'a.b=2')"),
    (["a=1", "a.b=2"], "key 'a' is given a value ('a=1') and also has sub-keys ('a.b=2')"),
    (["a.b.c=2", "a.b=1"], "key 'a.b' is given a value ('a.b=1') and also has sub-keys ('a.b.c=2')"),
    (['a={"b": 1}', "a.c=2"], "key 'a' is given a value"),
])
def test_bad_assignments_name_the_item(items, fragment):
    with pytest.raises(InputError) as info:
        parse_assignments(items)
    assert isinstance(info.value, ValueError)
    message = str(info.value)
    assert fragment in message
    assert "\n" not in message


def test_sibling_keys_and_shared_prefixes_are_fine():
    assert parse_assignments(["ab=1", "a.b=2"]) == {"ab": 1, "a": {"b": 2}}


# --- merge -------------------------------------------------------------------------------------------------

def test_merge_is_deep_and_returns_a_new_dict():
    base = {"train": {"lr": 0.1, "optimizer": {"kind": "sgd", "steps": 3}}, "seed": 1, "layers": [1, 2]}
    over = {"train": {"optimizer": {"kind": "adam"}}, "seed": 2, "new": {"x": 1}}
    got = merge(base, over)
    assert got == {"train": {"lr": 0.1, "optimizer": {"kind": "adam", "steps": 3}}, "seed": 2,
                   "layers": [1, 2], "new": {"x": 1}}
    assert base == {"train": {"lr": 0.1, "optimizer": {"kind": "sgd", "steps": 3}}, "seed": 1, "layers": [1, 2]}
    assert over == {"train": {"optimizer": {"kind": "adam"}}, "seed": 2, "new": {"x": 1}}
    got["layers"].append(3)
    got["new"]["x"] = 5
    assert base["layers"] == [1, 2] and over["new"] == {"x": 1}


def test_merge_override_replaces_non_dicts_both_ways():
    assert merge({"a": {"b": 1}}, {"a": 3}) == {"a": 3}
    assert merge({"a": 3}, {"a": {"b": 1}}) == {"a": {"b": 1}}
    assert merge({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge({}, {}) == {}


def test_assignments_merged_over_a_config_validate():
    base = {"train": {"epochs": 2, "optimizer": {"lr": 0.2}}}
    data = merge(base, parse_assignments(["train.policy=mixed", "train.optimizer.steps=5", "seed=7",
                                          "train.warmup.epochs=3"]))
    top = Top.model_validate(data)
    assert (top.seed, top.train.epochs, top.train.policy) == (7, 2, "mixed")
    assert (top.train.optimizer.lr, top.train.optimizer.steps) == (0.2, 5)
    assert top.train.warmup == Warmup(epochs=3)


# --- field_rows --------------------------------------------------------------------------------------------

def rows_by_key(model, prefix=""):
    return {row.key: row for row in field_rows(model, prefix)}


def test_field_rows_flatten_nested_models_in_definition_order():
    keys = [row.key for row in field_rows(Top)]
    assert keys == ["seed", "train.epochs", "train.optimizer.lr", "train.optimizer.steps", "train.optimizer.kind",
                    "train.optimizer.clip", "train.optimizer.betas", "train.policy", "train.warmup",
                    "train.warmup.epochs", "train.layers", "train.spec", "train.name"]
    assert [row.key for row in field_rows(Train, "cfg.train")][:2] == ["cfg.train.epochs", "cfg.train.optimizer.lr"]


def test_field_rows_types_with_constraints():
    types = {key: row.type for key, row in rows_by_key(Train).items()}
    assert types == {
        "epochs": "int in [1, 100]",
        "optimizer.lr": "float in (0, 10]",
        "optimizer.steps": "int >= 1",
        "optimizer.kind": '"sgd" | "adam"',
        "optimizer.clip": "float > 0 | None",
        "optimizer.betas": "list[float]",
        "policy": '"direct" | "mixed"',
        "warmup": "Warmup | None",
        "warmup.epochs": "int in [0, 100)",
        "layers": "tuple[int, ...]",
        "spec": "dict[str, dict[str, int]]",
        "name": "str",
    }


def test_field_rows_defaults():
    defaults = {key: row.default for key, row in rows_by_key(Top).items()}
    assert defaults["seed"] == "0"
    assert defaults["train.epochs"] == "required"
    # The parent's default factory, Optimizer(lr=0.5), not Optimizer's own default.
    assert defaults["train.optimizer.lr"] == "0.5"
    assert defaults["train.optimizer.steps"] == "10"
    assert defaults["train.optimizer.kind"] == '"sgd"'
    assert defaults["train.optimizer.clip"] == "null"
    assert defaults["train.optimizer.betas"] == "[0.9, 0.99]"
    assert defaults["train.warmup"] == "null"
    assert defaults["train.warmup.epochs"] == "1"   # applies once a warmup is given
    assert defaults["train.layers"] == "[3, 2]"
    assert defaults["train.spec"] == "{}"
    assert defaults["train.name"] == '"run | one"'
    assert rows_by_key(Optimizer)["lr"].default == "0.01"


def test_field_rows_docs():
    rows = rows_by_key(Train)
    assert rows["epochs"].doc == "Passes over the data."
    assert rows["optimizer.lr"].doc == "Learning rate. Second sentence on a second line."
    assert rows["optimizer.kind"].doc == "Which update rule."
    assert rows["optimizer.steps"].doc == ""
    assert rows["warmup"].doc == "Warm the learning rate up first (null: no warmup)."
    assert rows["warmup.epochs"].doc == ""  # a model without use_attribute_docstrings has no descriptions
    assert rows["name"].doc == "Run name (explicit description wins)."
    assert all(isinstance(row, FieldRow) for row in rows.values())
    with pytest.raises(AttributeError):
        rows["epochs"].doc = "x"  # frozen


def test_field_rows_stop_at_self_reference():
    class Node(BaseModel):
        model_config = ConfigDict(frozen=True, extra="forbid")

        value: int = 0
        child: Optional["Node"] = None

    Node.model_rebuild()
    assert [(row.key, row.type) for row in field_rows(Node)] == [("value", "int"), ("child", "Node | None")]


# --- reference_markdown ------------------------------------------------------------------------------------

def test_reference_markdown_content():
    text = reference_markdown([("Training", Train, "train"), ("Top", Top, "")], title="Configuration")
    lines = text.splitlines()
    assert lines[:8] == [
        "# Configuration",
        "",
        "## Training",
        "",
        "Training settings.",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    assert "| `train.epochs` | `int in [1, 100]` | `required` | Passes over the data. |" in lines
    assert '| `train.policy` | `"direct" \\| "mixed"` | `"direct"` |  |' in lines
    assert '| `train.name` | `str` | `"run \\| one"` | Run name (explicit description wins). |' in lines
    assert "## Top" in lines and "| `train.optimizer.lr` | `float in (0, 10]` | `0.5` | " \
        "Learning rate. Second sentence on a second line. |" in lines
    assert text.endswith("|\n") and not text.endswith("\n\n")
    rows = [line for line in lines if line.startswith("| `")]
    assert len(rows) == len(field_rows(Train)) + len(field_rows(Top))
    assert all(len(re.findall(r"(?<!\\)\|", line)) == 5 for line in rows)  # four cells, pipes escaped


def test_reference_markdown_is_deterministic():
    sections = [("Top", Top, ""), ("Optimizer alone", Optimizer, "opt")]
    assert reference_markdown(sections) == reference_markdown(list(sections))
    assert reference_markdown(sections).startswith("## Top\n\n| key |")  # no docstring, no title


# --- format_validation_error and suggest -------------------------------------------------------------------

def validation_error(model, data) -> ValidationError:
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return info.value


def test_nested_constraint_and_unknown_key_on_one_line():
    exc = validation_error(Top, {"train": {"epochs": 1, "optimizer": {"lr": 0}, "polcy": "mixed"}})
    assert format_validation_error(exc) == \
        "train.optimizer.lr: Input should be greater than 0; train.polcy: unknown key (typo?)"
    assert format_validation_error(exc, "cfg") == \
        "cfg.train.optimizer.lr: Input should be greater than 0; cfg.train.polcy: unknown key (typo?)"


def test_unknown_key_suggestion_with_the_model():
    exc = validation_error(Top, {"train": {"epochs": 1, "polcy": "mixed"}, "sede": 1})
    assert format_validation_error(exc, model=Top) == \
        "train.polcy: unknown key (did you mean train.policy?); sede: unknown key (did you mean seed?)"
    exc = validation_error(Train, {"epochs": 1, "zzzzzz": 1})
    assert format_validation_error(exc, "train", model=Train) == "train.zzzzzz: unknown key (typo?)"


def test_validator_messages_lists_missing_and_literals():
    exc = validation_error(Top, {"train": {"layers": [2, 0], "policy": "mixd", "optimizer": {"betas": [1, "x"]}}})
    message = format_validation_error(exc)
    assert message == ("train.epochs: Field required; "
                       "train.optimizer.betas[1]: Input should be a valid number, unable to parse string as a number; "
                       "train.policy: Input should be 'direct' or 'mixed'; "
                       "train.layers: needs positive widths, got [2, 0]")
    assert "\n" not in message


def test_suggest():
    known = ["train.policy", "train.epochs", "seed"]
    assert suggest("train.polcy", known) == "train.policy"
    assert suggest("train.epoch", known) == "train.epochs"
    assert suggest("sede", known) == "seed"
    assert suggest("nothing.alike", known) is None
    assert suggest("seed", []) is None


def test_field_reference_is_re_exported_from_options():
    from mortal import field_reference, options
    for name in ("FieldRow", "field_rows", "reference_markdown"):
        assert getattr(options, name) is getattr(field_reference, name)
    assert sorted(options.__all__) == sorted(["FieldRow", "parse_value", "parse_assignments", "merge",
                                              "field_rows", "reference_markdown",
                                              "format_validation_error", "suggest"])
