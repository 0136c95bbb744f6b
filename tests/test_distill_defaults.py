"""The defaults of a transfer are the measured ones: the student draws its negatives from its own
head, trains twice the teacher's epochs with the teacher's settings otherwise (its head refit
included), and ends close to its teacher."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

import devices
from mortal.data import load_mnist_mini, mnist_dataset
from mortal.distill import DistillConfig, distill
from mortal.ff import FFConfig, FFLearner


@pytest.fixture(scope="module")
def data():
    return mnist_dataset(load_mnist_mini()).subset(3000)


def test_distill_config_defaults_are_the_measured_ones():
    cfg = DistillConfig()
    assert cfg.negatives == "own"  # was "teacher"
    assert cfg.student_epochs is None  # twice the teacher's, via student_config
    assert cfg.model_dump() == {"temperature": 1.0, "teacher_readout": "softmax", "positives": "argmax",
                                "negatives": "own", "weighting": "none", "min_confidence": 0.0,
                                "student_epochs": None, "query_batch": 1000}
    assert "head_epochs" not in cfg.model_dump() and "head_weight_cost" not in cfg.model_dump()


TEACHER = FFConfig(defaults="hinton", epochs=7, batch_size=50, policy="direct", seed=3, lr=0.02, lr_head=0.05,
                   reads=2, estimator="perturbed", copies=4, placement="append", strength=2.0,
                   negatives="uniform", skip_first_layer=False,
                   refit={"epochs": 5, "weight_cost": 0.01, "settle_s": 10.0})


@pytest.mark.parametrize("teacher", [TEACHER, FFConfig(), FFConfig(defaults="hinton", epochs=1)],
                         ids=["custom", "measured", "hinton"])
def test_student_config_keeps_the_teachers_settings_but_epochs_and_seed(teacher):
    before = teacher.model_dump()
    student = DistillConfig().student_config(teacher, seed=11)
    assert student.epochs == 2 * teacher.epochs and student.seed == 11
    assert student.model_dump(exclude={"epochs", "seed"}) == teacher.model_dump(exclude={"epochs", "seed"})
    assert student.refit == teacher.refit and student.defaults == teacher.defaults
    assert teacher.model_dump() == before  # the teacher's settings are not touched
    fixed = DistillConfig(student_epochs=3).student_config(teacher, seed=0)
    assert fixed.epochs == 3 and fixed.seed == 0
    assert fixed.model_dump(exclude={"epochs", "seed"}) == teacher.model_dump(exclude={"epochs", "seed"})


def test_student_config_rejects_bad_settings():
    for bad in (0, -1, 1.5, 100_001):
        with pytest.raises(ValidationError, match="student_epochs"):
            DistillConfig(student_epochs=bad)
    with pytest.raises(ValidationError, match="seed"):
        DistillConfig().student_config(TEACHER, seed=-1)


@pytest.mark.parametrize("config, sampler", [(None, "own"), (DistillConfig(), "own"),
                                             (DistillConfig(negatives="teacher"), "targets"),
                                             (DistillConfig(negatives="mixed"), "mixed")])
def test_the_transfer_settings_reach_the_students_training(data, config, sampler):
    teacher = devices.make_chip("pcm", (784, 20), seed=1)
    tl = FFLearner(FFConfig(defaults="hinton", epochs=1)).fit(teacher, data.train_inputs[:300],
                                                               data.train_labels[:300])
    sl = FFLearner(FFConfig(defaults="hinton", epochs=1))
    seen = {}

    class Called(Exception):
        pass

    def fit_soft(chip, inputs, targets, **kw):  # only the call is checked here
        seen.update(kw, chip=chip, n=inputs.shape[0])
        raise Called

    sl.fit_soft = fit_soft
    student = devices.make_chip("pcm", (784, 20), seed=2)
    with pytest.raises(Called):
        distill(teacher, student, tl, sl, data.train_inputs[:300], config)
    assert seen["chip"] is student and seen["n"] == 300
    assert seen["negatives"] == sampler and seen["positives"] == "argmax"
    assert seen["weighting"] == "none" and seen["min_confidence"] == 0.0


def test_a_distill_with_the_defaults_ends_close_to_its_teacher(data):
    """pcm 784-100-100 trained 2 epochs (measured defaults) on 3000 images; the student learns
    from the same images, unlabelled, with every transfer default.  Measured over four seeds:
    teacher 11.3-12.5 %, student 11.75-12.45 % (within -0.1..+0.65 points), agreement 0.94."""
    teacher_cfg = FFConfig(epochs=2)
    teacher = devices.make_chip("pcm", (784, 100, 100), seed=1)
    tl = FFLearner(teacher_cfg).fit(teacher, data.train_inputs, data.train_labels)
    t_err = tl.evaluate(teacher, data.test_inputs, data.test_labels, "softmax").errors["softmax"]

    cfg = DistillConfig()
    student = devices.make_chip("pcm", (784, 100, 100), seed=2)
    sl = FFLearner(cfg.student_config(teacher_cfg, seed=1))
    res = distill(teacher, student, tl, sl, data.train_inputs)  # the defaults; no labels
    s_err = sl.evaluate(student, data.test_inputs, data.test_labels, "softmax").errors["softmax"]

    assert t_err < 0.16  # measured 12.05 %
    assert s_err < t_err + 0.03  # generous: measured +0.25 points
    assert res.agreement > 0.9  # measured 0.941
    # twice the teacher's epochs, ending with the teacher's refit (to the soft targets)
    assert [r["epoch"] for r in res.history] == [1, 2, 3, 4] and "refit_wall_s" in res.history[-1]
    assert sum(res.student_energy_j.values()) > sum(res.teacher_energy_j.values()) > 0
    np.testing.assert_allclose(res.teacher_probs.sum(axis=1), 1.0, rtol=1e-5)


def test_distill_refuses_a_student_trained_other_than_student_epochs(data):
    from mortal.errors import InputError

    teacher = devices.make_chip("pcm", (784, 20), seed=1)
    tl = FFLearner(FFConfig(defaults="hinton", epochs=1)).fit(teacher, data.train_inputs[:300],
                                                               data.train_labels[:300])
    student = devices.make_chip("pcm", (784, 20), seed=2)
    before = student.ledger.total_energy_j
    sl = FFLearner(FFConfig(defaults="hinton", epochs=1))
    with pytest.raises(InputError, match="student_epochs"):
        distill(teacher, student, tl, sl, data.train_inputs[:300], DistillConfig(student_epochs=3))
    assert student.ledger.total_energy_j == before and not sl.fitted
