"""What a training run learns from: targets and negative samplers.

:class:`Targets` are labels, or soft probabilities (a teacher's) with the rules that turn
them into positive labels and per-example weights.  A negative sampler draws each
example's wrong label; four are defined:

``own``      in proportion to the learner's own one-pass softmax probabilities of the
             wrong labels (hard negatives, Hinton's recipe);
``uniform``  uniformly among the wrong labels;
``targets``  in proportion to the soft targets' probabilities of the wrong labels;
``mixed``    in proportion to the mean of ``targets`` and ``own``.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Callable, Literal, Optional

import numpy as np

from ..errors import InputError

__all__ = ["Targets", "NegativeSampler", "SAMPLERS", "negative_sampler", "sample_rows"]

#: ``sampler(logits, labels, probs, rng) -> wrong labels``: logits float32 (B, k) of the
#: learner's head, labels int64 (B,), probs float32 (B, k) soft targets or None.
NegativeSampler = Callable[[np.ndarray, np.ndarray, Optional[np.ndarray], np.random.Generator], np.ndarray]


@dataclass(frozen=True)
class Targets:
    """Training targets for ``n`` examples of ``n_classes`` classes.

    ``labels`` int64 (n,): the labels (for soft targets, each row's most likely label);
    ``probs`` float32 (n, k) rows summing to 1, or None for plain labels.
    ``positives``: the positive label of a soft example, its most likely label (``argmax``)
    or a draw from its probabilities anew every batch (``sample``).
    ``weighting``: ``confidence`` weights each example's update of the layers by its
    probability of the positive label.  ``min_confidence``: examples whose largest
    probability is below it train only the head.
    """

    labels: np.ndarray
    n_classes: int
    probs: Optional[np.ndarray] = None
    positives: Literal["argmax", "sample"] = "argmax"
    weighting: Literal["none", "confidence"] = "none"
    min_confidence: float = 0.0

    def __post_init__(self) -> None:
        if self.positives not in ("argmax", "sample"):
            raise InputError(f"positives must be 'argmax' or 'sample', got {self.positives!r}")
        if self.weighting not in ("none", "confidence"):
            raise InputError(f"weighting must be 'none' or 'confidence', got {self.weighting!r}")
        if self.probs is None and (self.positives != "argmax" or self.weighting != "none" or self.min_confidence):
            raise InputError("positives, weighting and min_confidence apply to soft targets only")

    @property
    def soft(self) -> bool:
        return self.probs is not None

    def fingerprint(self, x: np.ndarray) -> str:
        """A short digest of the examples, labels, probabilities and rules (to match checkpoints)."""
        h = hashlib.sha256()
        h.update(np.asarray(x.shape, np.int64).tobytes())
        h.update(np.ascontiguousarray(self.labels, np.int64).tobytes())
        h.update(np.ascontiguousarray(x[:: max(1, x.shape[0] // 256)]).tobytes())
        if self.probs is not None:
            h.update(np.ascontiguousarray(self.probs, np.float32).tobytes())
        out = h.hexdigest()[:16]
        if self.probs is not None:
            out += f"/{self.positives}/{self.min_confidence!r}/{self.weighting}"
        return out

    def target_matrix(self, idx: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """The head's target rows for batch ``idx``: the probabilities, or one-hot ``labels``, float32."""
        if self.probs is not None:
            return self.probs[idx]
        out = np.zeros((labels.shape[0], self.n_classes), np.float32)
        out[np.arange(labels.shape[0]), labels] = 1.0
        return out


def sample_rows(prob: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of a row-stochastic matrix, by inverse CDF."""
    u = rng.random(prob.shape[0])[:, None]
    return np.minimum((np.cumsum(prob, axis=1) < u).sum(axis=1), prob.shape[1] - 1)


def _wrong_label_probs(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Softmax of ``logits`` over every label but ``labels`` (which get probability 0), float64."""
    z = logits.astype(np.float64)
    z[np.arange(z.shape[0]), labels] = -np.inf
    z -= z.max(axis=1, keepdims=True)
    prob = np.exp(z)
    prob /= prob.sum(axis=1, keepdims=True)
    return prob


def _wrong_target_probs(soft: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """``soft`` with ``labels`` zeroed and rows renormalized, float64; a row with no mass left
    becomes uniform over the other labels."""
    prob = soft.astype(np.float64)
    prob[np.arange(prob.shape[0]), labels] = 0.0
    flat = prob.sum(axis=1) <= 0.0
    prob[flat] = 1.0
    prob[flat, labels[flat]] = 0.0
    prob /= prob.sum(axis=1, keepdims=True)
    return prob


def _draw(prob: np.ndarray, labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    wrong = sample_rows(prob, rng)
    return np.where(wrong == labels, (labels + 1) % prob.shape[1], wrong)


def _own(logits, labels, probs, rng):
    return _draw(_wrong_label_probs(logits, labels), labels, rng)


def _uniform(logits, labels, probs, rng):
    k = logits.shape[1]
    return (labels + rng.integers(1, k, labels.shape[0])) % k


def _targets(logits, labels, probs, rng):
    if probs is None:
        raise InputError("the 'targets' negative sampler needs soft targets")
    return _draw(_wrong_target_probs(probs, labels), labels, rng)


def _mixed(logits, labels, probs, rng):
    if probs is None:
        raise InputError("the 'mixed' negative sampler needs soft targets")
    prob = 0.5 * (_wrong_target_probs(probs, labels) + _wrong_label_probs(logits, labels))
    return _draw(prob, labels, rng)


SAMPLERS: dict[str, NegativeSampler] = {"own": _own, "uniform": _uniform, "targets": _targets, "mixed": _mixed}


def negative_sampler(name: str) -> NegativeSampler:
    """The sampler called ``name`` (see the module docstring)."""
    try:
        return SAMPLERS[name]
    except KeyError:
        raise InputError(f"unknown negative sampler {name!r}; expected one of {sorted(SAMPLERS)}") from None
