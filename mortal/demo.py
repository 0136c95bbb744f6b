"""``mortal demo``: the tour of the tool on the bundled MNIST subset.

1. a fleet of ``pcm`` chips (default 4) is trained in parallel, each a unique
   instance, and their errors and energies are tabulated;
2. chip 0 ages for a simulated year; its error is measured after a day, a month
   and a year, without and with per-column drift compensation;
3. the aged chip teaches a freshly fabricated chip from unlabelled images
   (distillation); a weight copy onto a second copy of that same fresh chip (same seed) is
   shown beside it;
4. figures and tables are written to the output folder.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import devices

from .care import SECONDS_PER_DAY as DAY, DriftCompensator
from .config import config_from_dict, load_data
from .distill import DistillConfig, distill
from .errors import InputError
from .options import format_validation_error
from .ff import CHIP_FILE, FFLearner, latest_checkpoint, load_learner
from .fleet import check_chips, chip_seed, learner_seed, run_fleet
from .lifetime import SECONDS_PER_YEAR, weight_copy
from .report import write_report
from .runfolder import check_out, claim, run_kind

__all__ = ["run_demo"]


_HINT = "choose another --out (the demo replaces only an earlier demo folder)"


def _earlier_demo(out: Path) -> bool:
    """Whether ``out`` holds an earlier demo: its marker, or (made before markers) a ``demo.json``."""
    kind = run_kind(out)
    return out.is_dir() and (kind == "demo" or (kind is None and (out / "demo.json").is_file()))


def run_demo(out: str | os.PathLike, chips: int = 4, workers: int | None = None, layers: tuple[int, ...] = (300, 300),
             epochs: int = 5, seed: int = 0, quiet: bool = False, train: dict[str, Any] | None = None,
             distill_settings: dict[str, Any] | None = None) -> int:
    """Run the demo into ``out``; returns an exit code.

    ``out`` must be absent, empty or an earlier demo folder (which is replaced, once every
    setting has been checked); any other folder, or one another run is writing into, is refused
    with InputError and nothing written.  ``train``: ``FFConfig`` settings of every chip (nested
    plain data, e.g. from ``--set train.*``; ``epochs`` is the demo's own);
    ``distill_settings``: ``DistillConfig`` settings of the transfer (the student trains
    ``epochs`` epochs unless they say otherwise).
    """
    if chips < 1 or epochs < 1 or (workers is not None and workers < 1):
        raise InputError("chips, epochs and workers must be positive")
    say = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    t0 = time.perf_counter()
    # Every setting is checked before the output folder is touched.
    cfg = config_from_dict({
        "name": "demo", "seed": seed, "chips": chips,
        "chip": {"preset": "pcm", "layers": list(layers)},
        "train": {**(train or {}), "epochs": epochs},
        "data": {"source": "mini"},
    }, "demo")
    try:
        dcfg = DistillConfig(**{"student_epochs": epochs, **(distill_settings or {})})
    except ValidationError as exc:
        raise InputError(format_validation_error(exc, "distill", model=DistillConfig)) from None
    check_chips(cfg, load_data(cfg.data))  # chips too large for this machine's memory
    text = os.fspath(out)
    earlier = bool(text.strip()) and _earlier_demo(Path(text))
    folder = check_out(text, "demo", overwrite=earlier, hint=_HINT)
    assert folder is not None
    with claim(folder, "demo", overwrite=earlier, resume=False, hint=_HINT):  # replaces an earlier demo
        return _tour(folder, cfg, dcfg, chips, workers, layers, epochs, seed, quiet, say, t0)


def _tour(out: Path, cfg: Any, dcfg: DistillConfig, chips: int, workers: int | None, layers: tuple[int, ...],
          epochs: int, seed: int, quiet: bool, say: Any, t0: float) -> int:
    """The demo's three steps, into the claimed folder ``out``."""
    fleet_dir = out / "fleet"
    say(f"[1/3] training {chips} unique pcm chips ({'x'.join(map(str, layers))}, {epochs} epochs, "
        f"bundled MNIST subset) in parallel ...")
    bars = not quiet and sys.stderr.isatty()
    res = run_fleet(cfg, fleet_dir, workers=workers, save_chips=True, progress=bars)
    summary = write_report(fleet_dir, quiet=quiet)
    if res.failed:
        say(f"{len(res.failed)} chips failed; see {fleet_dir / 'records.jsonl'}")
        return 1

    data = load_data(cfg.data)
    xtr, xte, yte = data.train_inputs, data.test_inputs, data.test_labels
    key = res.records[0]["key"]
    ckdir = fleet_dir / "chips" / key
    teacher = devices.load_chip(latest_checkpoint(ckdir) / CHIP_FILE)
    tl = load_learner(ckdir, teacher)  # the trained learner, bound to the chip saved with it
    sizes = tuple(int(n) for n in teacher.info.layer_sizes)

    say("[2/3] chip 0 ages for a simulated year (softmax test error) ...")
    comp = DriftCompensator(xtr[:200], mode="column")
    comp.calibrate(teacher, tl)
    fresh = tl.evaluate(teacher, xte, yte, "softmax").errors["softmax"]
    events: list[dict[str, Any]] = [{"event": "trained", "generation": 0, "time_s": 0.0, "age_s": teacher.clock_s,
                                     "test_error": {"softmax": fresh}}]
    ageing = [{"age": "fresh", "error": fresh, "compensated": fresh}]
    t_trained = teacher.clock_s
    for label, age in (("1 day", DAY), ("1 month", 30 * DAY), ("1 year", SECONDS_PER_YEAR)):
        teacher.wait(t_trained + age - teacher.clock_s)
        tl.state.correction = None
        raw = tl.evaluate(teacher, xte, yte, "softmax").errors["softmax"]
        comp.update(teacher, tl)
        fixed = tl.evaluate(teacher, xte, yte, "softmax").errors["softmax"]
        ageing.append({"age": label, "error": raw, "compensated": fixed})
        events.append({"event": "check", "generation": 0, "time_s": teacher.clock_s - t_trained,
                       "age_s": teacher.clock_s, "test_error": {"softmax": fixed}})
        say(f"    {label:>8}: {100 * raw:5.2f} %   with drift compensation {100 * fixed:5.2f} %")

    say("[3/3] the aged chip teaches a fresh chip from unlabelled images ...")
    born = teacher.clock_s - t_trained
    student = devices.make_chip("pcm", sizes, chip_seed(seed, chips))
    # The student's settings are the teacher's (DistillConfig.student_config), trained as long as
    # the teacher was, to keep the demo quick.
    sl = FFLearner(dcfg.student_config(tl.config, learner_seed(seed, chips)))
    dres = distill(teacher, student, tl, sl, xtr, dcfg, progress=bars)
    s_err = sl.evaluate(student, xte, yte, "softmax").errors["softmax"]
    events.append({"event": "distilled", "generation": 1, "time_s": born + student.clock_s, "age_s": student.clock_s,
                   "test_error": {"softmax": s_err}})
    copy_chip = devices.make_chip("pcm", sizes, chip_seed(seed, chips))
    tl.state.correction = None
    cl = weight_copy(teacher, copy_chip, tl)
    c_err = cl.evaluate(copy_chip, xte, yte, "softmax").errors["softmax"]

    from .plots import plot_lifetime

    figs = plot_lifetime(events, out / "ageing_and_distillation")
    table = [
        ("teacher, fresh", fresh, None),
        ("teacher, 1 year, compensated", ageing[-1]["compensated"], None),
        ("student, distilled (no labels)", s_err, dres.total_energy_j),
        ("weight copy (immortal reference)", c_err, None),
    ]
    say(f"{'':<34} {'test error':>10} {'transfer energy':>16}")
    for name, err, e in table:
        say(f"{name:<34} {100 * err:>9.2f}% {'' if e is None else f'{e:.3g} J':>16}")
    result = {
        "fleet": {"dir": str(fleet_dir), "points": summary["points"]},
        "ageing": ageing,
        "distillation": {"student_error": s_err, **dres.summary()},
        "weight_copy_error": c_err,
        "figures": [str(f) for f in summary["figures"] + figs],
        "wall_s": time.perf_counter() - t0,
    }
    (out / "demo.json").write_text(json.dumps(result, indent=2))
    say(f"figures and tables in {out} ({result['wall_s']:.0f} s)")
    return 0
