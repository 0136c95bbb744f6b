"""``FFLearner``: the Forward-Forward learner bound to one chip, and :func:`load_learner`.

The learner holds its settings (:class:`~mortal.ff.config.FFConfig`) and, once fitted, its
controller state (:class:`~mortal.ff.state.ControllerState`) and the chip it is bound to.
Its methods validate input once and call the loop (:mod:`mortal.ff.train`) and the readouts
(:mod:`mortal.ff.readout`).
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable, Literal, Optional

import numpy as np

from ..chip import Chip, check_chip
from ..errors import InputError
from ..updates import policy_memory
from ..validate import as_inputs, as_labels, as_targets, both_or_neither, nonneg_int, positive_int, real_in
from . import readout as R
from .checkpoint import CHIP_FILE, check_checkpoint, latest_checkpoint, save_checkpoint
from .config import FFConfig
from .hybrid import example_shape_from
from .measure import Pass
from .modes import around_fixed_layers, mode_layout, mode_recipe, mode_top_down, same_layout, settle_shape
from .recurrent import bottom_up
from .state import ControllerState
from .targets import Targets, negative_sampler
from .train import train_epoch

__all__ = ["FFLearner", "load_learner", "EvalResult"]

EvalResult = R.EvalResult
Log = Callable[[dict[str, Any]], None] | str | Path | None


class FFLearner:
    """Forward-Forward learner for any object that satisfies ``mortal.chip.Chip``.

    Parameters
    ----------
    config : FFConfig
        Settings; ``config.seed`` seeds every random choice of the learner.
    """

    def __init__(self, config: FFConfig | None = None) -> None:
        self.config = config if config is not None else FFConfig()
        if not isinstance(self.config, FFConfig):
            raise InputError(f"config must be an FFConfig, got {type(self.config).__name__}")
        self.state: Optional[ControllerState] = None
        self._chip: Optional[Chip] = None

    # -- binding ----------------------------------------------------------------------------------
    @property
    def chip(self) -> Optional[Chip]:
        """The chip this learner is bound to (None before the first fit)."""
        return self._chip

    @property
    def fitted(self) -> bool:
        return self.state is not None

    @property
    def epoch(self) -> int:
        return 0 if self.state is None else self.state.epoch

    @property
    def history(self) -> list[dict[str, Any]]:
        return [] if self.state is None else self.state.history

    @property
    def n_classes(self) -> int:
        return self._need_state().n_classes

    def _need_state(self) -> ControllerState:
        if self.state is None:
            raise InputError("the learner has not been fitted yet (call fit first)")
        return self.state

    def check_bound(self, chip: Any) -> ControllerState:
        """The controller state, if this learner is fitted and bound to ``chip``; else InputError."""
        st = self._need_state()
        check_chip(chip)
        if chip is not self._chip:
            raise InputError("this learner is bound to another chip (the one it was fitted on or loaded with)")
        return st

    def new_state(self, chip: Any, n_data: int, n_classes: int) -> ControllerState:
        """Fresh controller state for ``chip`` with data of ``n_data`` values and ``n_classes``
        classes (the label layout is resolved against the chip's input width)."""
        check_chip(chip)  # TypeError if it is not a Chip at all
        sizes = tuple(int(s) for s in chip.info.layer_sizes)
        if len(sizes) < 2 or min(sizes) < 1:
            raise InputError(f"the chip needs an input and at least one non-empty layer, got sizes {sizes}")
        if n_classes < 2:
            raise InputError(f"training needs at least 2 classes, got {n_classes}")
        mode = mode_recipe(self.config)
        layout = mode_layout(mode, self.config, chip, n_data, n_classes)
        readout, head = around_fixed_layers(*mode.layer_roles(self.config, len(sizes) - 1), chip.info.trainable)
        down = mode_top_down(mode, self.config, chip, n_classes)
        return ControllerState.fresh(sizes, layout, readout, head, policy_memory(self.config.policy, chip), down)

    def bind(self, chip: Chip, state: ControllerState) -> "FFLearner":
        """Bind this (unfitted) learner to ``chip`` with ``state`` (sizes and top-down inputs must match)."""
        check_chip(chip)
        same_layout(chip, state.sizes, state.top_down)
        self._chip, self.state = chip, state
        return self

    def copy_controller(self, chip: Chip, **changes: Any) -> "FFLearner":
        """A new learner bound to ``chip`` (same layer sizes) holding a copy of this learner's
        controller state.  Only what lives in the digital controller is copied, not the chip's
        weights (see ``mortal.lifetime.weight_copy``).  ``changes``: settings the copy uses
        instead (``FFConfig.changed``); if they change the head's input, its head starts from
        zero, to be fitted with :meth:`refit_head`.
        """
        st = self._need_state()
        check_chip(chip)
        sizes = tuple(int(s) for s in chip.info.layer_sizes)
        if sizes != st.sizes:
            raise InputError(f"the chip has layer sizes {sizes}, this learner {st.sizes}")
        config = self.config.changed(**changes) if changes else self.config
        if config.mode != self.config.mode:
            raise InputError(f"a copy keeps the controller of mode {self.config.mode!r}; it cannot change the mode")
        new = FFLearner(config)
        fresh = new.new_state(chip, st.layout.n_data, st.n_classes)
        copied = st.copy()
        copied.readout_layers, copied.head_layers = fresh.readout_layers, fresh.head_layers
        copied.accumulators = fresh.accumulators if len(fresh.accumulators) != len(st.accumulators) \
            else copied.accumulators
        if fresh.head.shape != st.head.shape:
            copied.head, copied.head_smooth = fresh.head, fresh.head_smooth
        return new.bind(chip, copied)

    # -- measurement ------------------------------------------------------------------------------
    def embed(self, inputs: Any, labels: Any = None) -> np.ndarray:
        """Inputs (n, n_data) with ``labels`` (an int, int array (n,), or None: neutral) written in."""
        st = self._need_state()
        x = as_inputs(inputs, "inputs", st.layout.n_data)
        if labels is not None and not isinstance(labels, (int, np.integer)):
            labels = as_labels(labels, x.shape[0], st.n_classes)
        return st.layout.embed(x, labels)

    def forward(self, chip: Chip, x: np.ndarray, n_layers: int | None = None,
                correction: list[np.ndarray] | None | Literal["state"] = "state") -> Pass:
        """Measure embedded inputs ``x`` (B, n_0) through ``chip`` with this learner's measurement
        settings; ``correction``: the state's drift correction, or the factors given (None: none)."""
        st = self.check_bound(chip)
        corr = st.correction if isinstance(correction, str) else correction
        if st.top_down:  # a chip with top-down inputs: its bottom-up pass (mortal.ff.recurrent)
            return bottom_up(self.config, st, chip, x, n_layers, corr)
        return R.controller_pass(self.config, st, chip, x, n_layers, corr)

    # -- training ---------------------------------------------------------------------------------
    def fit(self, chip: Chip, inputs: Any, labels: Any, *, n_classes: int | None = None, test_inputs: Any = None,
            test_labels: Any = None, eval_every: int = 1, eval_method: str = "both",
            checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0, resume: str | Path | None = None,
            log: Log = None, progress: bool | None = None, example_shape: Any = None) -> "FFLearner":
        """Train ``chip`` in situ on ``inputs`` ((n, d) or (n, ...) examples, uint8 or float in
        [0, 1]) and integer ``labels``.

        Parameters
        ----------
        n_classes : int, optional
            Classes ``k`` (default: the largest label + 1, at least 2).
        test_inputs, test_labels : optional
            Evaluated every ``eval_every`` epochs (0: only at the end) and at the end, by
            ``eval_method`` (``goodness``, ``softmax`` or ``both``).
        checkpoint_dir, checkpoint_every : optional
            Save learner and chip every ``checkpoint_every`` epochs and at the end (the chip
            must have ``save(path)``).
        resume : path, optional
            A checkpoint directory to continue from; ``chip`` must be the chip saved there
            (``devices.load_chip(dir / "chip.npz")``).  ``config.epochs`` may be raised.
        log : callable or path, optional
            Receives one dict per epoch; a path appends one JSON line per epoch.
        progress : bool, optional
            A progress bar on stderr (default: when stderr is a terminal).
        example_shape : tuple of int, optional
            One example's shape ``(H, W)`` or ``(H, W, C)`` when ``inputs`` are flat (n, d);
            inputs of shape (n, H, W) or (n, H, W, C) carry it.  Mode ``unsupervised`` needs it
            (its hybrid masks are images); it is kept in the state and its checkpoints.
        """
        shape = example_shape_from(inputs, example_shape)
        x = as_inputs(inputs)
        y = np.asarray(labels)
        if y.dtype.kind not in "iu":
            raise InputError(f"labels have dtype {y.dtype}, expected integers 0..k-1")
        if n_classes is None:
            n_classes = max(int(y.max()) + 1 if y.size else 2, 2)
        n_classes = positive_int(n_classes, "n_classes")
        targets = Targets(as_labels(y, x.shape[0], n_classes), n_classes)
        return self._run(chip, x, targets, self.config.recipe.negatives, test_inputs, test_labels, eval_every,
                         eval_method, checkpoint_dir, checkpoint_every, resume, log, progress, shape)

    def fit_soft(self, chip: Chip, inputs: Any, targets: Any, *, positives: str = "argmax",
                 negatives: str = "targets", weighting: str = "none", min_confidence: float = 0.0,
                 test_inputs: Any = None, test_labels: Any = None, eval_every: int = 1, eval_method: str = "both",
                 checkpoint_dir: str | Path | None = None, checkpoint_every: int = 0,
                 resume: str | Path | None = None, log: Log = None, progress: bool | None = None,
                 example_shape: Any = None) -> "FFLearner":
        """Train ``chip`` from soft targets (float (n, k) probabilities per example), e.g. a teacher's.

        ``positives``: each example's positive label is its most likely label (``argmax``) or a
        draw from its target every batch (``sample``).  ``negatives``: the negative sampler
        (``targets``, ``own``, ``mixed``; see :mod:`mortal.ff.targets`).  ``weighting="confidence"``
        weights each example's update of the layers by its target's probability of the positive
        label; examples whose largest probability is below ``min_confidence`` train only the
        head.  The head is fitted to the targets themselves.  Other arguments as in :meth:`fit`.

        In a mode whose labels never reach the layers (``unsupervised``: they learn examples
        against hybrids) the targets train only the head; ``negatives`` is then not used and
        ``positives``, ``weighting`` and ``min_confidence`` must keep their defaults.
        """
        shape = example_shape_from(inputs, example_shape)
        x = as_inputs(inputs)
        probs = as_targets(targets, x.shape[0])
        min_conf = real_in(min_confidence, "min_confidence", 0.0, 1.0, hi_open=True)
        if negatives not in ("targets", "own", "mixed"):
            raise InputError(f"negatives must be 'targets', 'own' or 'mixed', got {negatives!r}")
        tg = Targets(probs.argmax(axis=1).astype(np.int64), probs.shape[1], probs, positives, weighting, min_conf)
        mode_recipe(self.config).check_soft_rules(positives, weighting, min_conf)
        return self._run(chip, x, tg, negatives, test_inputs, test_labels, eval_every, eval_method, checkpoint_dir,
                         checkpoint_every, resume, log, progress, shape)

    def _run(self, chip: Chip, x: np.ndarray, targets: Targets, sampler_name: str, test_inputs: Any,
             test_labels: Any, eval_every: int, eval_method: str, checkpoint_dir: Any, checkpoint_every: int,
             resume: Any, log: Log, progress: bool | None,
             shape: tuple[int, ...] | None = None) -> "FFLearner":
        cfg = self.config
        mode = mode_recipe(cfg)
        sampler = negative_sampler(sampler_name)
        if x.shape[0] < cfg.batch_size:
            raise InputError(f"{x.shape[0]} training examples is fewer than one batch ({cfg.batch_size})")
        nonneg_int(eval_every, "eval_every")
        if eval_method not in ("goodness", "softmax", "both"):
            raise InputError(f"eval_method must be 'goodness', 'softmax' or 'both', got {eval_method!r}")
        mode.check_method(eval_method)
        nonneg_int(checkpoint_every, "checkpoint_every")
        if checkpoint_every and checkpoint_dir is None:
            raise InputError("checkpoint_every is set but no checkpoint_dir was given")
        if (checkpoint_dir is not None or resume is not None) and not callable(getattr(chip, "save", None)):
            raise InputError("checkpoints need a chip with a save(path) method")
        data_id = targets.fingerprint(x)
        if targets.soft:  # a run from soft targets resumes only with the same negative sampler
            data_id += f"/{sampler_name}"
        if resume is not None:
            check_chip(chip)
            state, _ = check_checkpoint(cfg, chip, data_id, Path(resume))
            if state.layout.n_data != x.shape[1] or state.n_classes != targets.n_classes:
                raise InputError("the checkpoint was trained on data of another width or number of classes")
        elif self.state is None:
            state = self.new_state(chip, x.shape[1], targets.n_classes)
        else:
            self.check_bound(chip)
            state = self.state
            if state.layout.n_data != x.shape[1] or state.n_classes != targets.n_classes:
                raise InputError(f"this learner was fitted on {state.layout.n_data} inputs and {state.n_classes} "
                                 f"classes, the data has {x.shape[1]} and {targets.n_classes}")
        shape = settle_shape(mode, shape, state.example_shape)
        has_test = both_or_neither(test_inputs, test_labels, "test_inputs and test_labels")
        if has_test:
            xt = as_inputs(test_inputs, "test_inputs", x.shape[1])
            yt = as_labels(test_labels, xt.shape[0], targets.n_classes, "test_labels")
        if checkpoint_dir is not None:
            try:
                Path(checkpoint_dir).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise InputError(f"cannot create checkpoint_dir {checkpoint_dir}: {exc}") from None
        sink = log_sink(log)
        state.example_shape = shape
        self._chip, self.state = chip, state
        show = sys.stderr.isatty() if progress is None else bool(progress)
        refit = cfg.refit

        def end_refit() -> dict[str, Any]:
            out: dict[str, Any] = {}
            if has_test:  # the head trained alongside the layers, for comparison
                out["test_error_before_refit"] = self.evaluate(chip, xt, yt, eval_method).errors
            if refit.settle_s:
                chip.wait(refit.settle_s)
            t0 = time.perf_counter()
            self._refit(chip, x, targets.labels, targets.probs, refit.epochs, 1000, refit.weight_cost)
            out["refit_wall_s"] = time.perf_counter() - t0
            return out

        while state.epoch < cfg.epochs:
            t_wall = time.perf_counter()
            last_epoch = state.epoch + 1 == cfg.epochs
            record = train_epoch(cfg, state, chip, x, targets, sampler, show,
                                 end_refit if last_epoch and refit.epochs else None, mode.train_batch)
            last = state.epoch == cfg.epochs
            if has_test and (last or (eval_every and state.epoch % eval_every == 0)):
                res = self.evaluate(chip, xt, yt, eval_method)
                record["test_error"] = res.errors
                record["eval_energy_j"] = res.total_energy_j
            record["energy_j"] = dict(R.ledger_snapshot(chip)[0])
            record["total_energy_j"] = float(sum(record["energy_j"].values()))
            record["wall_s"] = time.perf_counter() - t_wall
            state.history.append(record)
            # Checkpoint first: a log line then never runs ahead of the saved state.
            if checkpoint_dir is not None and (last or (checkpoint_every and state.epoch % checkpoint_every == 0)):
                save_checkpoint(cfg, state, chip, Path(checkpoint_dir), data_id)
            sink(record)
        return self

    # -- readouts ---------------------------------------------------------------------------------
    def _refit(self, chip: Chip, x: np.ndarray, labels: np.ndarray, probs: np.ndarray | None, epochs: int,
               batch_size: int, weight_cost: float) -> None:
        st = self.state
        assert st is not None
        feats = R.head_features(self.config, st, chip, x, batch_size, mode_recipe(self.config).head_pass)
        R.fit_head(self.config, st, chip, feats, labels, probs, epochs, weight_cost)

    def refit_head(self, chip: Chip, inputs: Any, targets: Any, epochs: int = 10, batch_size: int = 1000,
                   weight_cost: float | None = None) -> "FFLearner":
        """Fit the softmax head anew, from zero, over the chip's frozen layers.

        The head's input (the normalized activities of one neutral pass) is read through the
        chip once per example and kept by the controller; the head is then trained on it for
        ``epochs`` with the learner's head settings (``optimizer.lr_head``, ``momentum``, the
        learning-rate schedule, ``batch_size``).  ``targets``: labels (integers (n,)) or
        probabilities (float (n, k)).  No device is programmed; reads and the controller's work
        are charged.  ``batch_size``: examples per read.  ``weight_cost``: the head's weight
        cost (None: ``config.refit.weight_cost``).
        """
        st = self.check_bound(chip)
        epochs = positive_int(epochs, "epochs")
        batch_size = positive_int(batch_size, "batch_size")
        wc = real_in(weight_cost, "weight_cost", 0.0, 1.0, allow_none=True)
        wc = self.config.refit.weight_cost if wc is None else wc
        x = as_inputs(inputs, "inputs", st.layout.n_data)
        if np.asarray(targets).ndim == 2:
            probs = as_targets(targets, x.shape[0], st.n_classes)
            labels = probs.argmax(axis=1)
        else:
            probs, labels = None, as_labels(targets, x.shape[0], st.n_classes, "targets")
        if x.shape[0] < self.config.batch_size:
            raise InputError(f"{x.shape[0]} examples is fewer than one batch ({self.config.batch_size})")
        self._refit(chip, x, labels, probs, epochs, batch_size, wc)
        return self

    def _read_inputs(self, chip: Chip, inputs: Any, batch_size: int) -> tuple[ControllerState, np.ndarray]:
        st = self.check_bound(chip)
        positive_int(batch_size, "batch_size")
        return st, as_inputs(inputs, "inputs", st.layout.n_data)

    def predict(self, chip: Chip, inputs: Any, method: Literal["goodness", "softmax"] = "goodness",
                batch_size: int = 1000) -> np.ndarray:
        """Predicted labels (int64 (n,)) by per-label goodness (k passes) or the softmax head (1 pass)."""
        st, x = self._read_inputs(chip, inputs, batch_size)
        if method not in ("goodness", "softmax"):
            raise InputError(f"unknown method {method!r}; expected 'goodness' or 'softmax'")
        mode = mode_recipe(self.config)
        mode.check_method(method)
        return R.predict(self.config, st, chip, x, method, batch_size, mode.head_pass, mode.goodness_scores)

    def head_logits(self, chip: Chip, inputs: Any, batch_size: int = 1000) -> np.ndarray:
        """The softmax head's logits, float64 (n, k), from one neutral pass through the chip."""
        st, x = self._read_inputs(chip, inputs, batch_size)
        head_pass = mode_recipe(self.config).head_pass
        out = [R.head_logits(st, chip, head_pass(self.config, st, chip, x[s:s + batch_size]))[0]
               for s in range(0, x.shape[0], batch_size)]
        return np.concatenate(out, axis=0).astype(np.float64)

    def goodness_scores(self, chip: Chip, inputs: Any, batch_size: int = 1000) -> np.ndarray:
        """Per-label goodness, float64 (n, k): each label embedded in turn, goodness summed over
        the readout layers (k passes per example, read through the chip)."""
        st, x = self._read_inputs(chip, inputs, batch_size)
        mode = mode_recipe(self.config)
        mode.check_method("goodness")
        assert mode.goodness_scores is not None
        return np.concatenate([mode.goodness_scores(self.config, st, chip, x[s:s + batch_size])
                               for s in range(0, x.shape[0], batch_size)], axis=0)

    def evaluate(self, chip: Chip, inputs: Any, labels: Any,
                 method: Literal["goodness", "softmax", "both"] = "both") -> R.EvalResult:
        """Error rate(s) on ``inputs`` and the energy and chip time the evaluation cost.

        ``both``: every readout the mode has (the softmax head alone in a mode without the
        per-label goodness readout, such as ``unsupervised``)."""
        st = self.check_bound(chip)
        x = as_inputs(inputs, "inputs", st.layout.n_data)
        y = as_labels(labels, x.shape[0], st.n_classes)
        if method not in ("goodness", "softmax", "both"):
            raise InputError(f"unknown method {method!r}; expected 'goodness', 'softmax' or 'both'")
        mode = mode_recipe(self.config)
        mode.check_method(method)
        methods = list(mode.methods) if method == "both" else [method]
        before = R.ledger_snapshot(chip)
        errors = {m: float(np.mean(R.predict(self.config, st, chip, x, m, 1000, mode.head_pass,
                                             mode.goodness_scores) != y)) for m in methods}
        energy, chip_time = R.energy_since(chip, before)
        return R.EvalResult(errors=errors, n=int(x.shape[0]), energy_j=energy, chip_time_s=chip_time)


def load_learner(directory: str | Path, chip: Chip, config: FFConfig | None = None) -> FFLearner:
    """The learner saved in the newest checkpoint under ``directory``, bound to ``chip``.

    ``chip`` must be the chip saved with it (for the emulator:
    ``devices.load_chip(latest_checkpoint(directory) / CHIP_FILE)``); another chip is refused.
    ``config``: settings to continue with (default: the saved ones; only ``epochs`` may differ).
    The learner can predict, evaluate, ``refit_head``, ``copy_controller`` and continue
    training with ``fit(..., resume=directory)``.
    """
    from .checkpoint import saved_config

    cfg = saved_config(directory) if config is None else config
    check_chip(chip)
    state, _ = check_checkpoint(cfg, chip, None, directory)
    return FFLearner(cfg).bind(chip, state)


def log_sink(log: Log) -> Callable[[dict[str, Any]], None]:
    if log is None:
        return lambda record: None
    if callable(log):
        return log
    path = Path(log)
    try:  # fail now, not after an epoch of training
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a"):
            pass
    except OSError as exc:
        raise InputError(f"cannot write the log {path}: {exc}") from None

    def write(record: dict[str, Any]) -> None:
        with open(path, "a") as fh:
            fh.write(json.dumps(record) + "\n")

    return write


__all__ += ["CHIP_FILE", "latest_checkpoint", "log_sink"]
