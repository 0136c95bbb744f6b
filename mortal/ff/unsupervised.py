"""The unsupervised mode: examples against their hybrids, no label in the chip.

Per batch: the positive pass is the examples themselves (no label input exists: the chip's
input width is the data width); its normalized activities feed the softmax head, which takes
one step toward the batch's targets (the labels, or soft targets); the negative pass is the
examples' hybrids (:mod:`mortal.ff.hybrid`: each example cut with another example of the
training set along a blurred random mask); then every layer is updated from the two passes
by :func:`mortal.ff.train.update_layer` (any update policy).  The labels train only the head.

The head reads the normalized activities of the top ``unsupervised.head_last`` hidden layers
(all of them if the chip has fewer, or if it is None: the measured default; Hinton's recipe reads
the top three).  There is no per-label goodness readout in this mode.
"""

from __future__ import annotations

import numpy as np

from ..chip import Chip
from ..errors import InputError
from .config import FFConfig
from .hybrid import hybrid_ops, hybrid_partners, hybrids
from .readout import controller_pass, head_logits, update_head
from .state import ControllerState
from .targets import NegativeSampler, Targets
from .train import update_layers

__all__ = ["train_batch_unsupervised", "unsupervised_roles"]


def unsupervised_roles(cfg: FFConfig, n_layers: int) -> tuple[list[int], list[int]]:
    """No goodness readout; the head reads the top ``head_last`` hidden layers (0-based), or
    every hidden layer if ``head_last`` is None."""
    head_last = cfg.unsupervised.head_last
    last = n_layers if head_last is None else min(head_last, n_layers)
    return [], list(range(n_layers - last, n_layers))


def train_batch_unsupervised(cfg: FFConfig, st: ControllerState, chip: Chip, x: np.ndarray, idx: np.ndarray,
                             targets: Targets, sampler: NegativeSampler, gain: float, rng: np.random.Generator,
                             update_rng: np.random.Generator | None = None) -> np.ndarray:
    """One batch (rows ``idx`` of ``x``) of the unsupervised mode; returns [loss+, loss-, online
    errors of the head, examples].  ``sampler`` is not used (the hybrids are the negatives);
    ``rng`` draws the partners and the masks; ``update_rng``: policy ``analog``'s stream."""
    if st.example_shape is None:
        raise InputError("mode 'unsupervised' needs the examples' shape (H, W) or (H, W, C)")
    u = cfg.unsupervised
    xb = x[idx]
    batch = xb.shape[0]
    lay = st.layout
    pos = controller_pass(cfg, st, chip, lay.embed(xb, None))
    logits, feats = head_logits(st, chip, pos)
    labels = targets.labels[idx]
    online_err = float(np.count_nonzero(logits.argmax(axis=1) != labels))
    update_head(cfg, st, chip, feats, logits, targets.target_matrix(idx, labels), gain,
                cfg.optimizer.weight_cost_head)
    partner = hybrid_partners(idx, x.shape[0], rng)
    neg_x = hybrids(xb, x[partner], st.example_shape, u.mask_blurs, u.mask_threshold, rng)
    chip.ledger.charge_digital(hybrid_ops(batch, st.example_shape, u.mask_blurs))
    neg = controller_pass(cfg, st, chip, lay.embed(neg_x, None))
    loss = update_layers(cfg, st, chip, pos, neg, gain, None, update_rng)
    return np.array([loss[0], loss[1], online_err, batch])
