"""``mortal distill``: it refuses an unfinished teacher, teaches from a finished one, and never
changes the teacher's folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

import devices
from cli_helpers import one_error_line, tree_digest
from mortal.cli import main
from mortal.config import chip_input_width
from mortal.data import load_dataset
from mortal.ff import FFConfig, FFLearner

TRAIN_SIZE = 300
TEACHER_EPOCHS = 3


class Interrupted(Exception):
    pass


@pytest.fixture(scope="module")
def unfinished_teacher(tmp_path_factory) -> Path:
    """A `mortal train --out` folder whose run (3 epochs) stopped after epoch 1, checkpointed every epoch.

    Made with mortal.ff directly: the log callback raises after the first epoch's checkpoint; the
    config.json is the one `mortal train` writes (the keys `mortal distill` reads)."""
    out = tmp_path_factory.mktemp("teacher") / "unfinished"
    data = load_dataset("mini").subset(TRAIN_SIZE)
    cfg = FFConfig(defaults="hinton", epochs=TEACHER_EPOCHS, seed=0)
    spec = devices.get_preset("ideal")
    chip = devices.make_chip(spec, (chip_input_width(spec, cfg, data), 20), 0)

    def stop(record: dict) -> None:
        raise Interrupted(record["epoch"])

    learner = FFLearner(cfg)
    with pytest.raises(Interrupted):
        learner.fit(chip, data.train_inputs, data.train_labels, n_classes=data.n_classes,
                    checkpoint_dir=out / "checkpoints", checkpoint_every=1, log=stop, progress=False)
    assert learner.epoch == 1
    (out / "config.json").write_text(json.dumps({
        "preset": chip.spec.name, "layer_sizes": list(chip.info.layer_sizes), "seed": cfg.seed,
        "data": {"source": "mini", "name": data.name, "train_size": data.n_train},
        "train": cfg.model_dump(mode="json")}, indent=2))
    return out


@pytest.fixture(scope="module")
def finished_teacher(unfinished_teacher, tmp_path_factory) -> Path:
    """The unfinished teacher, finished as the refusal says: `mortal train --resume --out`."""
    out = tmp_path_factory.mktemp("teacher") / "finished"
    shutil.copytree(unfinished_teacher, out)
    assert main(["train", "--resume", "--out", str(out), "--mini", "--train-size", str(TRAIN_SIZE), "--quiet"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == TEACHER_EPOCHS
    assert len((out / "epochs.jsonl").read_text().splitlines()) == TEACHER_EPOCHS
    return out


def test_an_unfinished_teacher_is_refused_and_left_alone(unfinished_teacher, tmp_path, capsys):
    before = tree_digest(unfinished_teacher)
    assert (unfinished_teacher / "checkpoints" / "LATEST").read_text().strip() == "epoch-0001"
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(unfinished_teacher), "--out", str(out), "--quiet"]) == 2
    line = one_error_line(capsys.readouterr().err)
    assert "unfinished" in line and f"1 of {TEACHER_EPOCHS}" in line and "--resume" in line
    assert tree_digest(unfinished_teacher) == before
    assert not out.exists()


def test_a_finished_teacher_is_distilled_and_left_alone(finished_teacher, tmp_path, capsys):
    before = tree_digest(finished_teacher)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(finished_teacher), "--out", str(out), "--quiet",
                 "--transfer-size", "200", "--baselines"]) == 0, capsys.readouterr().err
    assert tree_digest(finished_teacher) == before
    summary = json.loads((out / "summary.json").read_text())
    assert summary["teacher"] == str(finished_teacher) and summary["transfer_images"] == 200
    assert summary["epochs"] == 2 * TEACHER_EPOCHS  # the student's default: twice the teacher's
    assert summary["train"]["defaults"] == "hinton"  # derived from the teacher's settings
    assert [r["what"] for r in summary["rows"]] == ["teacher", "student, distilled", "weight copy (immortal)",
                                                    "student from labels"]
    for row in summary["rows"]:
        assert all(0.0 <= e <= 1.0 for e in row["test_error"].values())
    assert len((out / "epochs.jsonl").read_text().splitlines()) == 2 * TEACHER_EPOCHS


def test_distill_takes_student_settings(finished_teacher, tmp_path):
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(finished_teacher), "--out", str(out), "--quiet", "--epochs", "1",
                 "--transfer-size", "200", "--set", "distill.negatives=teacher", "--set", "train.lr=0.02"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["distill"]["negatives"] == "teacher"
    assert summary["train"]["optimizer"]["lr"] == 0.02


@pytest.mark.parametrize("args,needle", [
    (["--set", "distill.temperature=-1"], "distill.temperature: "),
    (["--set", "distill.negatves=own"], "did you mean distill.negatives?"),
    (["--set", "train.optimizer.lr=-1"], "train.optimizer.lr: "),
    (["--set", "train.polcy=direct"], "train.polcy: unknown key"),
    (["--set", "train.polcy=direct"], "did you mean train.policy?"),
    (["--set", "margin=0.1"], "train. or distill."),
    (["--epochs", "0"], "distill.student_epochs: "),
    (["--transfer-size", "0"], "--transfer-size"),
    (["--transfer-size", "100000"], "--transfer-size"),
    (["--transfer-size", "50"], "fewer than one student batch"),  # refused by distill() itself
])
def test_bad_distill_arguments_exit_2_and_change_nothing(finished_teacher, args, needle, tmp_path, capsys):
    before = tree_digest(finished_teacher)
    out = tmp_path / "student"
    assert main(["distill", "--teacher", str(finished_teacher), "--out", str(out), "--quiet"] + args) == 2
    assert needle in one_error_line(capsys.readouterr().err)
    assert tree_digest(finished_teacher) == before
    assert not out.exists()


def test_a_folder_that_is_no_teacher_exits_2(tmp_path, capsys):
    assert main(["distill", "--teacher", str(tmp_path), "--quiet"]) == 2
    assert str(tmp_path) in one_error_line(capsys.readouterr().err)
