"""Mortality on full MNIST: drift compensation, and transfer from a teacher chip to a fresh one.

    python benchmarks/bench_mortality.py --preset pcm --layers 1000,1000,1000 --epochs 10 --out runs/mortality-pcm

Steps, all on chips of the same preset and layer sizes (chip ``k`` fabricated
from ``SeedSequence(seed, spawn_key=(k,))``):

1. the teacher (chip 0) is trained from labels for ``--epochs``;
2. drift: copies of the trained teacher (saved and reloaded) wait one day,
   one month and one year; test error without compensation and with the
   global and per-column output compensation (``mortal.care``);
3. distillation: a fresh student (chip 1, or chip K with ``--student-chip K``)
   learns for ``--distill-epochs`` from the teacher's soft labels on the
   60,000 training images *without* labels;
4. weight copy: another instance of the student chip is programmed with the teacher's
   effective weights (``devices.inspect``: the immortal reference);
5. scratch: another instance of the student chip is trained from the true labels, its
   softmax test error measured after every epoch, to find the energy it needs
   to reach the distilled student's error.

``--holdout N`` keeps the last N training images out of everything (teacher,
transfer set, scratch) and reports errors on them instead of the test set: the
split on which the transfer's settings are chosen, so the test set is used
only for the final figures.  ``--teacher-dir DIR`` saves the trained teacher
(chip and learner) there, or reuses the one already there, so that several
transfer settings can be compared against the same teacher.

Every learner's settings are Hinton's recipe (``FFConfig(defaults="hinton")``: head over
the readout layers, no refit) with the ``--policy`` given (default ``mixed``), plus the
options below: the settings of the figures in ``benchmarks/RESULTS.md``.

``--refit-epochs K`` ends every learner's training with a refit of its softmax
head over its frozen layers (``FFConfig`` ``refit.epochs``, weight cost
``--refit-weight-cost``: ``refit.weight_cost``): the teacher's and the scratch chip's to the labels,
the student's to the teacher's soft targets.  The teacher is saved before its
refit (so one saved teacher serves runs with and without it); its test error
before the refit is reported too.  ``--head-layers`` sets ``recipe.head_layers``.

``--head-epochs K`` (with ``--head-weight-cost W``, default the learner's
``optimizer.weight_cost_head``) refits the student's head to the teacher's soft
targets for K epochs at the end of the transfer: the student's own ``refit`` settings
(``refit.epochs = K``, ``refit.weight_cost = W``), which then take the place of
``--refit-epochs`` for the student.

``--refit-head K`` is a diagnostic that uses labels: after the transfer, the
softmax heads of copies of the teacher's and the student's controllers are
refitted from zero for K epochs on the true labels over their frozen layers
(``FFLearner.refit_head``), and the test errors of the refitted heads are
reported; so is the student's head refitted to the teacher's soft targets (no
labels).  It tells whether the student's remaining gap lies in its head or in
its layers.  The figures from true labels are not the transfer's: a chip without
labels cannot do this.

Writes ``OUT/result.json`` and prints the figures.  Runs single-threaded
(one BLAS and numba thread) so that two presets can run side by side.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np  # noqa: E402

import devices  # noqa: E402
from _common import MNIST_CLASSES, ff_config, machine_line, split_holdout  # noqa: E402
from mortal.care import SECONDS_PER_DAY as DAY, DriftCompensator  # noqa: E402
from mortal.data import load_mnist  # noqa: E402
from mortal.distill import DistillConfig, distill  # noqa: E402
from mortal.ff import CHIP_FILE, FFConfig, FFLearner, energy_since, ledger_snapshot, save_checkpoint  # noqa: E402
from mortal.lifetime import SECONDS_PER_YEAR, weight_copy  # noqa: E402


def shift_one_pixel(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image moved one pixel up, down, left or right (drawn from ``rng``), zeros shifted in."""
    out = np.zeros_like(x)
    way = rng.integers(0, 4, x.shape[0])
    out[way == 0, :-1, :] = x[way == 0, 1:, :]
    out[way == 1, 1:, :] = x[way == 1, :-1, :]
    out[way == 2, :, :-1] = x[way == 2, :, 1:]
    out[way == 3, :, 1:] = x[way == 3, :, :-1]
    return out


def refit_error(learner: FFLearner, chip, images, targets, xte, yte, epochs: int) -> float:
    """Diagnostic: softmax test error after a copy of ``learner`` refits its head over the chip's
    frozen layers to ``targets`` (``FFLearner.refit_head``, at the learner's head weight cost
    ``optimizer.weight_cost_head``, as these figures were first made); ``learner`` is left unchanged."""
    probe = learner.copy_controller(chip)
    probe.refit_head(chip, images, targets, epochs, weight_cost=learner.config.optimizer.weight_cost_head)
    return probe.evaluate(chip, xte, yte, "softmax").errors["softmax"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="pcm")
    ap.add_argument("--layers", default="1000,1000,1000")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--distill-epochs", type=int, default=None)
    ap.add_argument("--policy", choices=("direct", "mixed"), default="mixed")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--data", default=None)
    ap.add_argument("--teacher-readout", default="softmax")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--positives", default="argmax")
    ap.add_argument("--min-confidence", type=float, default=0.0)
    ap.add_argument("--negatives", default="teacher", choices=("teacher", "own", "mixed"),
                    help="the student's negative labels (DistillConfig.negatives)")
    ap.add_argument("--weighting", default="none", choices=("none", "confidence"),
                    help="weight each transfer image's layer update by the teacher's probability of its label")
    ap.add_argument("--head-epochs", type=int, default=0,
                    help="after the transfer, refit the student's head to the teacher's targets (K epochs; "
                         "the student's FFConfig refit.epochs, in place of --refit-epochs)")
    ap.add_argument("--head-weight-cost", type=float, default=None,
                    help="the head's weight cost in that refit (the student's refit.weight_cost; default: the "
                         "learner's optimizer.weight_cost_head)")
    ap.add_argument("--refit-epochs", type=int, default=0,
                    help="every learner ends by refitting its head over frozen layers for K epochs "
                         "(FFConfig refit.epochs): teacher and scratch to the labels, student to the teacher's targets")
    ap.add_argument("--refit-weight-cost", type=float, default=0.0,
                    help="the head's weight cost in that refit (refit.weight_cost)")
    ap.add_argument("--head-layers", choices=("readout", "all"), default="readout",
                    help="with --refit-epochs: the hidden layers every learner's head reads (FFConfig "
                         "recipe.head_layers); the teacher is trained with the readout head and its copy "
                         "refitted with this one")
    ap.add_argument("--holdout", type=int, default=0,
                    help="hold out the last N training images and report errors on them, not on the test set")
    ap.add_argument("--teacher-dir", default=None,
                    help="save the trained teacher here, or reuse the teacher already saved here")
    ap.add_argument("--skip-drift", action="store_true")
    ap.add_argument("--student-chip", type=int, default=1, metavar="K",
                    help="student, weight-copy and scratch chips are instance K >= 1 (learner seed: seed + K)")
    ap.add_argument("--student-dir", default=None, help="save the distilled student (chip and learner) there")
    ap.add_argument("--refit-head", type=int, default=0, metavar="K",
                    help="diagnostic with labels: refit teacher's and student's heads for K epochs on frozen layers")
    ap.add_argument("--transfer-shifts", type=int, default=0,
                    help="add K copies of the transfer images, each image moved one pixel in a random direction")
    ap.add_argument("--teacher-only", action="store_true", help="train (or reuse) the teacher and stop")
    ap.add_argument("--skip-baselines", action="store_true", help="no weight copy and no training from labels")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = (784,) + tuple(int(s) for s in args.layers.split(","))
    d_epochs = args.distill_epochs or args.epochs
    if args.head_layers != "readout" and not args.refit_epochs:
        ap.error("--head-layers needs --refit-epochs (the saved teacher's head reads the readout layers)")
    if args.transfer_shifts < 0:
        ap.error("--transfer-shifts must be >= 0")
    if args.student_chip < 1:
        ap.error("--student-chip must be >= 1 (chip 0 is the teacher)")
    if args.refit_head < 0:
        ap.error("--refit-head must be >= 0")
    if args.head_epochs < 0 or args.refit_epochs < 0:
        ap.error("--head-epochs and --refit-epochs must be >= 0")
    print(machine_line(), flush=True)
    result: dict = {"preset": args.preset, "layers": list(sizes), "epochs": args.epochs,
                    "distill_epochs": d_epochs, "student_chip": args.student_chip,
                    "policy": args.policy, "seed": args.seed,
                    "teacher_readout": args.teacher_readout, "temperature": args.temperature,
                    "positives": args.positives, "min_confidence": args.min_confidence,
                    "negatives": args.negatives, "weighting": args.weighting,
                    "head_epochs": args.head_epochs, "head_weight_cost": args.head_weight_cost,
                    "refit_epochs": args.refit_epochs, "refit_weight_cost": args.refit_weight_cost,
                    "head_layers": args.head_layers,
                    "transfer_shifts": args.transfer_shifts,
                    "errors_on": f"last {args.holdout} training images" if args.holdout else "test set",
                    "command": " ".join(sys.argv)}

    def save() -> None:
        (out / "result.json").write_text(json.dumps(result, indent=2))

    def fab(k: int) -> devices.AnalogChip:
        return devices.make_chip(args.preset, sizes, np.random.SeedSequence(args.seed, spawn_key=(k,)))

    def cfg(epochs: int, seed: int, refit: bool = True, **changes) -> FFConfig:
        """Hinton's recipe with ``--policy``; ``refit``: with the head refit and head layers of the
        options (else none and the readout head, so that the saved teacher's settings do not
        depend on the refit options); ``changes``: settings that differ."""
        settings = dict(policy=args.policy, refit_epochs=args.refit_epochs if refit else 0,
                        refit_weight_cost=args.refit_weight_cost if refit else None,
                        head_layers=args.head_layers if refit else "readout", epochs=epochs, seed=seed)
        return ff_config("hinton", **{**settings, **changes})

    head_refit = {}
    if args.head_epochs:  # the student's refit to the teacher's targets
        wc = args.head_weight_cost
        head_refit = {"refit_epochs": args.head_epochs,
                      "refit_weight_cost": wc if wc is not None else
                      cfg(d_epochs, args.seed).optimizer.weight_cost_head}
    try:  # every learner's settings, validated before the data are loaded
        cfg(args.epochs, args.seed, refit=False)
        cfg(args.epochs, args.seed)
        cfg(d_epochs, args.seed + args.student_chip, **head_refit)
    except ValueError as exc:
        ap.error(str(exc))
    data = load_mnist(args.data)
    try:
        xtr, ytr, xte, yte = split_holdout(data.train_images, data.train_labels, data.test_images,
                                           data.test_labels, args.holdout)
    except ValueError as exc:
        ap.error(str(exc))

    def line(tag: str):
        def show(rec: dict) -> None:
            print(f"[{args.preset} {tag}] epoch {rec['epoch']} train {rec['train_wall_s']:.1f}s "
                  f"online-err {rec['train_error_online']:.4f} test {rec.get('test_error', {})}", flush=True)
        return show

    # 1. teacher
    t = time.perf_counter()
    teacher = fab(0)
    # Saving the teacher (checkpoint after its last epoch) does not change its training.  It is
    # trained and saved without the head refit, which follows below, so that one saved teacher
    # serves runs with and without it.
    tl = FFLearner(cfg(args.epochs, args.seed, refit=False))
    saved = Path(args.teacher_dir) / f"epoch-{args.epochs:04d}" if args.teacher_dir else None
    if saved is not None and saved.is_dir():
        teacher = devices.load_chip(saved / CHIP_FILE)
        # Resuming a finished run restores the learner and checks that the settings and the
        # training data are those the teacher was trained with; it trains no further.
        tl.fit(teacher, xtr, ytr, n_classes=MNIST_CLASSES, resume=saved.parent, progress=False)
        print(f"teacher reused from {saved}", flush=True)
    else:
        tl.fit(teacher, xtr, ytr, n_classes=MNIST_CLASSES, checkpoint_dir=args.teacher_dir, log=line("teacher"))
    res = tl.evaluate(teacher, xte, yte, "both")
    result["teacher"] = {"test_error": res.errors}
    if args.refit_epochs:
        result["teacher"]["test_error_before_refit"] = res.errors
        if args.head_layers != tl.config.recipe.head_layers:
            tl = tl.copy_controller(teacher, head_layers=args.head_layers)
        tl.refit_head(teacher, xtr, ytr, args.refit_epochs, weight_cost=args.refit_weight_cost)
        result["teacher"]["test_error"] = tl.evaluate(teacher, xte, yte, "both").errors
    result["teacher"].update(train_energy_j=teacher.ledger.total_energy_j, wall_s=time.perf_counter() - t)
    print("teacher", result["teacher"], flush=True)
    save()
    if args.teacher_only:
        return
    with tempfile.TemporaryDirectory() as tmp:
        snap = teacher.save(Path(tmp) / "teacher.npz")

        # 2. drift, with and without compensation
        if not args.skip_drift:
            result["drift"] = {}
            for label, age in (("1 day", DAY), ("1 month", 30 * DAY), ("1 year", SECONDS_PER_YEAR)):
                chip = devices.load_chip(snap)
                learner = tl.copy_controller(chip)
                comps = {m: DriftCompensator(xtr[:200], mode=m) for m in ("global", "column")}
                for c in comps.values():
                    c.calibrate(chip, learner)
                chip.wait(age)
                row = {"none": learner.evaluate(chip, xte, yte, "both").errors}
                for m, c in comps.items():
                    c.update(chip, learner)
                    row[m] = learner.evaluate(chip, xte, yte, "both").errors
                learner.state.correction = None
                result["drift"][label] = row
                print("drift", label, row, flush=True)
                save()

        # 3. distillation from unlabelled training images
        t = time.perf_counter()
        student = fab(args.student_chip)
        sl = FFLearner(cfg(d_epochs, args.seed + args.student_chip, **head_refit))
        transfer = xtr
        if args.transfer_shifts:
            transfer = np.concatenate([xtr] + [shift_one_pixel(xtr, np.random.default_rng([args.seed, k]))
                                               for k in range(args.transfer_shifts)])
        r = distill(teacher, student, tl, sl, transfer,
                    DistillConfig(temperature=args.temperature, teacher_readout=args.teacher_readout,
                                  positives=args.positives, min_confidence=args.min_confidence,
                                  negatives=args.negatives, weighting=args.weighting),
                    log=line("distill"))
        res = sl.evaluate(student, xte, yte, "both")
        result["distilled"] = {"test_error": res.errors, **r.summary(), "wall_s": time.perf_counter() - t,
                               "teacher_label_error_on_transfer":
                                   float(np.mean(r.teacher_probs[: len(ytr)].argmax(1) != ytr))}
        print("distilled", result["distilled"], flush=True)
        save()
        if args.student_dir:
            save_checkpoint(sl.config, sl.state, student, Path(args.student_dir), "distilled student")
        if args.refit_head:
            k = args.refit_head
            result["refit_head"] = {
                "epochs": k,
                "teacher, true labels": refit_error(tl, teacher, xtr, ytr, xte, yte, k),
                "student, true labels": refit_error(sl, student, xtr, ytr, xte, yte, k),
                "student, teacher's targets": refit_error(sl, student, transfer, r.teacher_probs, xte, yte, k),
            }
            print("refit head (diagnostic, uses labels)", result["refit_head"], flush=True)
            save()

        if args.skip_baselines:
            return
        # 4. weight copy (immortal reference) onto another instance of the student chip
        teacher_now = devices.load_chip(snap)
        copy_chip = fab(args.student_chip)
        cl = weight_copy(teacher_now, copy_chip, tl.copy_controller(teacher_now))
        res = cl.evaluate(copy_chip, xte, yte, "both")
        result["weight_copy"] = {"test_error": res.errors, "energy_j": copy_chip.ledger.total_energy_j}
        print("weight copy", result["weight_copy"], flush=True)
        save()

    # 5. scratch from labels, softmax error after each epoch.  Only the softmax readout is
    # evaluated (fit's own evaluation reads both), after each epoch's training and, in the last
    # epoch, before the head refit as well as after it, as these figures were first made; the
    # last epoch's training energy includes the refit and the evaluation before it.
    t = time.perf_counter()
    scratch = fab(args.student_chip)
    sc = FFLearner(cfg(d_epochs, args.seed + args.student_chip, refit_epochs=0))
    show = line("scratch")

    def evaluate_softmax(rec: dict) -> None:
        res = sc.evaluate(scratch, xte, yte, "softmax")
        rec["test_error"], rec["eval_energy_j"] = res.errors, res.total_energy_j
        if rec["epoch"] == d_epochs and args.refit_epochs:
            rec["test_error_before_refit"] = res.errors
            before = ledger_snapshot(scratch)
            t_refit = time.perf_counter()
            sc.refit_head(scratch, xtr, ytr, args.refit_epochs, weight_cost=args.refit_weight_cost)
            rec["refit_wall_s"] = time.perf_counter() - t_refit
            spent, _ = energy_since(scratch, before)
            rec["train_energy_j"] = {c: rec["train_energy_j"].get(c, 0.0) + res.energy_j.get(c, 0.0)
                                     + spent.get(c, 0.0) for c in spent}
            res = sc.evaluate(scratch, xte, yte, "softmax")
            rec["test_error"], rec["eval_energy_j"] = res.errors, res.total_energy_j
        show(rec)

    sc.fit(scratch, xtr, ytr, n_classes=MNIST_CLASSES, log=evaluate_softmax)
    curve = []
    energy = 0.0
    for rec in sc.history:
        energy += sum(rec["train_energy_j"].values())
        curve.append({"epoch": rec["epoch"], "softmax_error": rec["test_error"]["softmax"], "train_energy_j": energy})
    res = sc.evaluate(scratch, xte, yte, "both")
    target = result["distilled"]["test_error"]["softmax"]
    reach = next((c for c in curve if c["softmax_error"] <= target), None)
    result["scratch"] = {"test_error": res.errors, "curve": curve, "wall_s": time.perf_counter() - t,
                         "epochs_to_distilled_error": reach["epoch"] if reach else None,
                         "energy_to_distilled_error_j": reach["train_energy_j"] if reach else None}
    print("scratch", {k: v for k, v in result["scratch"].items() if k != "curve"}, flush=True)
    save()


if __name__ == "__main__":
    main()
