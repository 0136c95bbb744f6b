"""The learner's arithmetic is pinned: Hinton's plain recipe on small chips gives the recorded
figures (errors, energies by category, simulated time, reads, conversions, pulses, digital
operations).

``tests/pinned/ff_hinton_recipe.json`` was first written by the pre-restructuring learner (commit
40d5f12) and reproduced bit for bit by the package.  It was written again, with one BLAS thread,
when the device layer moved to its compact state and to the physics of the devices it cites
(saved chips of format ``mortal-chip/3``: SET-only PCM with refresh, IBM's read-noise law,
program-and-verify, IR drop), which changes every noisy chip's random stream and behaviour, and
again when the ledger's verify reads and their time were corrected (a pair refresh that
writes nothing back reads once; verify reads take a row at a time), and when the pulses after a
pair refresh took their drift draw from the refresh stream, and when the programming kernel
came to work on a row's requested entries only (their noise normals numbered by request, not by
column).  The
``ideal_uniform`` entry, whose chip has no noise, was the same before and after to the last digit
compared: the learner's arithmetic did not change with it.  The comparison allows 1e-9 relative
on floats and 1e-5 relative on counts, which only covers last-bit differences of vectorized math
on other CPUs; any change to the arithmetic, the operation counts or the random streams moves
these figures by far more.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

import devices
from mortal.care import DriftCompensator
from mortal.data import load_mnist_mini
from mortal.distill import DistillConfig, distill
from mortal.ff import FFConfig, FFLearner

PINNED = Path(__file__).parent / "pinned" / "ff_hinton_recipe.json"


def _chip_figures(chip) -> dict:
    led = chip.ledger
    return {"energy_j": {k: float(v) for k, v in led.energy_j.items()}, "time_s": float(led.total_time_s),
            "counts": {k: int(v) for k, v in led.counts.items()}}


def _run() -> dict:
    d = load_mnist_mini()
    x, y = d.train_images[:1000], d.train_labels[:1000]
    xt, yt = d.test_images[:400], d.test_labels[:400]
    out: dict = {}
    runs = {
        "pcm_mixed": ("pcm", (784, 48, 32), dict(epochs=2, policy="mixed")),
        "pcm_direct_perturbed": ("pcm", (784, 40, 30), dict(
            epochs=2, policy="direct", estimator="perturbed", reads=2, head_layers="all",
            refit={"epochs": 2, "settle_s": 10.0, "weight_cost": 0.0}, slope_probes=64)),
        "ideal_uniform": ("ideal", (784, 40, 30), dict(epochs=2, negatives="uniform", skip_first_layer=False)),
        "wild_mixed": ("wild", (784, 50), dict(epochs=2, policy="mixed", batch_size=50)),
    }
    fitted = {}
    for name, (preset, sizes, kw) in runs.items():
        chip = devices.make_chip(preset, sizes, seed=11)
        learner = FFLearner(FFConfig(defaults="hinton", seed=3, **kw))
        learner.fit(chip, x, y, eval_every=0, progress=False)
        ev = learner.evaluate(chip, xt, yt, "both")
        out[name] = {"errors": ev.errors, "chip": _chip_figures(chip),
                     "history": [{k: r[k] for k in ("loss_pos", "loss_neg", "train_error_online")}
                                 for r in learner.history]}
        fitted[name] = (chip, learner)
    teacher, tl = fitted["pcm_mixed"]
    variants = {
        "default": (DistillConfig(negatives="teacher"), {}),
        "own_head": (DistillConfig(negatives="own"), {"epochs": 2, "weight_cost": 0.0}),
        "mixed_sample_conf": (DistillConfig(negatives="mixed", positives="sample", weighting="confidence",
                                            min_confidence=0.3, teacher_readout="combined", temperature=2.0), {}),
    }
    for name, (dc, refit) in variants.items():
        student = devices.make_chip("pcm", (784, 48, 32), seed=12)
        sl = FFLearner(FFConfig(defaults="hinton", seed=5, epochs=2, policy="mixed", refit=refit))
        res = distill(teacher, student, tl, sl, d.train_images[1000:2000], dc, progress=False)
        ev = sl.evaluate(student, xt, yt, "both")
        out["distill_" + name] = {"errors": ev.errors, "student": _chip_figures(student),
                                  "teacher": _chip_figures(teacher), "agreement": res.agreement}
    comp = DriftCompensator(x[:100], mode="column")
    comp.calibrate(teacher, tl)
    teacher.wait(86400.0 * 30)
    comp.update(teacher, tl)
    out["compensated"] = {"errors": tl.evaluate(teacher, xt, yt, "softmax").errors, "chip": _chip_figures(teacher)}
    chip, learner = fitted["wild_mixed"]
    learner.refit_head(chip, x, y, epochs=3, batch_size=250, weight_cost=0.0)
    out["refit"] = {"errors": learner.evaluate(chip, xt, yt, "softmax").errors, "chip": _chip_figures(chip)}
    return out


def _compare(got, want, path: str, problems: list[str]) -> None:
    if isinstance(want, dict):
        if set(got) != set(want):
            problems.append(f"{path}: keys {sorted(got)} != {sorted(want)}")
        for k in set(got) & set(want):
            _compare(got[k], want[k], f"{path}/{k}", problems)
    elif isinstance(want, list):
        if len(got) != len(want):
            problems.append(f"{path}: {len(got)} entries != {len(want)}")
        for i, (g, w) in enumerate(zip(got, want)):
            _compare(g, w, f"{path}[{i}]", problems)
    elif isinstance(want, int) and not isinstance(want, bool):
        if abs(got - want) > 1e-5 * abs(want):
            problems.append(f"{path}: {got} != {want}")
    elif not np.isclose(got, want, rtol=1e-9, atol=0.0):
        problems.append(f"{path}: {got!r} != {want!r}")


def test_hinton_recipe_figures_are_those_recorded_before_the_restructuring():
    want = json.loads(PINNED.read_text())
    problems: list[str] = []
    _compare(_run(), want, "", problems)
    assert not problems, "the learner's figures moved:\n" + "\n".join(problems[:20])


def test_the_comparison_can_fail():
    want = json.loads(PINNED.read_text())
    problems: list[str] = []
    moved = json.loads(json.dumps(want))
    moved["pcm_mixed"]["chip"]["counts"]["pulses"] += 10
    moved["refit"]["errors"]["softmax"] *= 1.0 + 1e-8
    _compare(moved, want, "", problems)
    assert len(problems) == 2

