"""The learner's settings: one tree of frozen pydantic models.

``FFConfig`` holds the training length and seed at its top and one group per concern:
``recipe`` (what is learned: goodness threshold, negatives, readouts), ``labels`` (how a
label enters the input), ``optimizer``, ``measurement`` (how the chip is read) and
``refit`` (the softmax head fitted anew at the end of training).  Run-time settings
(evaluation and checkpoint cadence, progress output) are arguments of ``fit``, not settings,
so a run can be resumed under other ones.

Defaults are the best settings measured (``defaults="measured"``: the softmax head reads
every hidden layer and is refitted for 30 epochs at weight cost 0 after training, chosen on
held-out images; see ``benchmarks/RESULTS.md``).  ``defaults="hinton"`` gives Hinton's plain
supervised recipe (head over the readout layers, no refit), so that his figures stay
reproducible.  Fields given explicitly win over either table.

For convenience a field may be given by its own name when that name is unique in the tree:
``FFConfig(lr=0.02)`` is ``FFConfig(optimizer={"lr": 0.02})``.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, model_validator

__all__ = ["FFConfig", "RecipeConfig", "LabelConfig", "OptimizerConfig", "MeasurementConfig", "RefitConfig",
           "UnsupervisedConfig", "RecurrentConfig", "MODES", "DEFAULTS"]

#: What the layers learn from (``FFConfig.mode``): examples with their label written in
#: (Hinton's supervised recipe), real against hybrid images with no label in the input (his
#: unsupervised recipe; the labels train only the softmax head), or the image held still while
#: every hidden layer also hears the layer above, the label on top (his recurrent recipe).
MODES = ("supervised", "unsupervised", "recurrent")


class _Group(BaseModel):
    # allow_inf_nan=False: every float setting must be a finite number (NaN would otherwise
    # be reported as breaking a bound, e.g. "lr: should be <= 10").
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)


class RecipeConfig(_Group):
    """What the layers learn and how the chip is read out."""

    threshold_per_unit: float = Field(1.0, gt=0.0)
    """Goodness threshold per unit: theta = threshold_per_unit * layer width."""
    goodness_temperature: float = Field(1.0, gt=0.0)
    """Temperature of the logistic loss on goodness: p = sigmoid((G - theta) / T)."""
    negatives: Literal["own", "uniform"] = "own"
    """Negative labels when training from labels: drawn from the softmax head's predictions of the
    wrong labels (hard negatives) or uniformly among them."""
    skip_first_layer: bool = True
    """Leave the first hidden layer out of the per-label goodness readout (needs two or more layers)."""
    head_layers: Literal["readout", "all"] = "all"
    """The hidden layers whose normalized activities the softmax head reads: those of the goodness
    readout (skip_first_layer applies; Hinton's recipe) or all of them."""


class LabelConfig(_Group):
    """How a label is written into the input."""

    strength: float = Field(1.0, gt=0.0, le=10.0)
    """Value of the hot input of a one-hot label."""
    copies: Optional[int] = Field(None, ge=1, le=1000)
    """Copies of the one-hot label (more copies let bounded weights carry it). None: 1 on chips
    with unbounded weights (Hinton's recipe), 8 otherwise."""
    neutral_level: float = Field(0.1, ge=0.0, le=1.0)
    """Value of every label input when no label is given (the neutral pass of the softmax head)."""
    placement: Literal["auto", "first", "append"] = "auto"
    """Where the k * copies label inputs go: over the first inputs of each example (the blank top
    rows of MNIST) or appended after them; auto: whichever the chip's input width fits (the
    commands and configs build the chip appended unless those first inputs are nearly blank)."""


class OptimizerConfig(_Group):
    """The controller's update arithmetic."""

    lr: float = Field(0.01, gt=0.0, le=10.0)
    """Learning rate of the layers."""
    lr_head: float = Field(0.1, gt=0.0, le=10.0)
    """Learning rate of the softmax head."""
    momentum: float = Field(0.9, ge=0.0, lt=1.0)
    """Gradient smoothing: g <- momentum g + (1 - momentum) grad."""
    weight_cost: float = Field(0.001, ge=0.0, le=1.0)
    """Weight cost of the layers (on the sum of requested changes: the chip's weights are hidden)."""
    weight_cost_head: float = Field(0.003, ge=0.0, le=1.0)
    """Weight cost of the softmax head while it trains alongside the layers."""
    peer_strength: float = Field(0.03, ge=0.0, le=1.0)
    """Peer normalization: pulls every unit's mean activity to the layer mean."""


class MeasurementConfig(_Group):
    """How the controller reads the chip."""

    input_clip_rms: float = Field(4.0, gt=0.0)
    """Normalized inputs beyond this many RMS are clipped by the chip's DAC."""
    reads: int = Field(1, ge=1, le=64)
    """Reads averaged for every measurement of a layer (less read noise, more read energy)."""
    estimator: Literal["nominal", "perturbed"] = "nominal"
    """Neuron slope in the update: the nominal ReLU slope, or measured by extra reads once per epoch."""
    slope_bins: int = Field(16, ge=2, le=256)
    """Output bins of a perturbed slope table."""
    slope_probes: int = Field(256, ge=1, le=4096)
    """Training examples swept to measure the perturbed slope tables."""
    slope_levels: int = Field(8, ge=4, le=1024)
    """Amplitudes of each probe sweep."""


class RefitConfig(_Group):
    """The softmax head fitted anew over the frozen layers when training ends."""

    epochs: int = Field(30, ge=0, le=1000)
    """Epochs of the refit, to the labels (fit) or soft targets (fit_soft) trained on; 0: no refit."""
    weight_cost: float = Field(0.0, ge=0.0, le=1.0)
    """The head's weight cost during the refit."""
    settle_s: float = Field(0.0, ge=0.0, le=1e9)
    """Idle chip seconds before the refit (a head fitted on a settled chip holds longer)."""


class UnsupervisedConfig(_Group):
    """Mode ``unsupervised``: positives are the examples, negatives hybrid images of two examples
    cut along a blurred random mask; no label enters the chip."""

    mask_blurs: int = Field(6, ge=1, le=64)
    """Passes of the [1/4, 1/2, 1/4] filter, along both axes, over the random bit image that
    becomes the mask (more passes: larger regions of each image)."""
    mask_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    """The blurred bit image is 1 where it exceeds this level (the mask), else 0."""
    head_last: Optional[int] = Field(None, ge=1, le=1000)
    """The softmax head reads the normalized activities of this many top hidden layers (all of
    them if the chip has fewer); None: every hidden layer (measured on held-out images: 1.73 %
    over all four of 4 x 1000 against 1.82 % over the top three; Hinton's recipe, and
    ``defaults="hinton"``, read the top three)."""


class RecurrentConfig(_Group):
    """Mode ``recurrent``: the example is held for ``iterations`` synchronous steps; every hidden
    layer's new state is computed from the normalized layer below and the normalized layer above
    (the label, one-hot, above the top layer) at the step before, then damped."""

    iterations: int = Field(8, ge=1, le=64)
    """Synchronous steps after the first bottom-up pass that training runs with
    ``train_steps="all"``; otherwise only an upper bound on score_to (the readout and the
    ``scored`` training stop at score_to)."""
    damping: float = Field(0.3, ge=0.0, lt=1.0)
    """Share of a layer's old state kept at each step: new = damping * old + (1 - damping) * computed."""
    score_from: int = Field(3, ge=1, le=64)
    """First step (counted from 1) whose goodness the per-label readout averages."""
    score_to: int = Field(5, ge=1, le=64)
    """Last step (counted from 1) whose goodness the per-label readout averages."""
    train_steps: Literal["scored", "all"] = "scored"
    """The steps whose measurements update the layers (each one more set of examples, averaged):
    those the readout scores (score_from..score_to; the run stops at score_to) or every step
    (1..iterations)."""


#: The two default tables: dotted field -> value where they differ from the field defaults.
DEFAULTS: dict[str, dict[str, Any]] = {
    "measured": {},
    "hinton": {"recipe.head_layers": "readout", "refit.epochs": 0, "unsupervised.head_last": 3},
}

_GROUPS = {"recipe": RecipeConfig, "labels": LabelConfig, "optimizer": OptimizerConfig,
           "measurement": MeasurementConfig, "refit": RefitConfig, "unsupervised": UnsupervisedConfig,
           "recurrent": RecurrentConfig}


class FFConfig(BaseModel):
    """Settings of the Forward-Forward learner (see the module docstring)."""

    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True, allow_inf_nan=False)

    defaults: Literal["measured", "hinton"] = "measured"
    """The default table: the best settings measured, or Hinton's plain recipe."""
    mode: Literal["supervised", "unsupervised", "recurrent"] = "supervised"
    """What the layers learn from (``MODES``): the label written into the input, real against
    hybrid images with no label (the labels train only the softmax head), or the recurrent
    network with the label as its top layer."""
    epochs: int = Field(10, ge=1, le=100_000)
    """Training epochs."""
    batch_size: int = Field(100, ge=2, le=100_000)
    """Examples per update."""
    policy: Literal["direct", "mixed", "analog"] = "mixed"
    """How a wanted change reaches the devices: every batch as requested, accumulated in the
    controller and programmed in whole pulses, or applied by the array itself as coincidences of
    stochastic pulse trains (no momentum or weight cost there; mortal.updates)."""
    bit_length: int = Field(10, ge=1, le=4096)
    """Policy analog: pulse slots per sample (BL); longer trains average more and send more pulses."""
    seed: int = Field(0, ge=0)
    """Seeds every random choice of the learner."""
    recipe: RecipeConfig = Field(default_factory=RecipeConfig)
    labels: LabelConfig = Field(default_factory=LabelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    measurement: MeasurementConfig = Field(default_factory=MeasurementConfig)
    refit: RefitConfig = Field(default_factory=RefitConfig)
    unsupervised: UnsupervisedConfig = Field(default_factory=UnsupervisedConfig)
    recurrent: RecurrentConfig = Field(default_factory=RecurrentConfig)

    @model_validator(mode="before")
    @classmethod
    def _route_and_default(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        for key in [k for k in data if k not in cls.model_fields]:
            owners = [g for g, model in _GROUPS.items() if key in model.model_fields]
            if len(owners) > 1:
                raise ValueError(f"{key!r} is ambiguous; give it as one of "
                                 + ", ".join(f"{g}.{key}" for g in owners))
            if owners:
                group = data.get(owners[0], {})
                if isinstance(group, BaseModel):
                    group = group.model_dump(exclude_unset=True)
                if not isinstance(group, dict):
                    continue  # validation reports the malformed group
                group = dict(group)
                if key in group:
                    raise ValueError(f"{key!r} is given twice (also as {owners[0]}.{key})")
                group[key] = data.pop(key)
                data[owners[0]] = group
        table = DEFAULTS.get(data.get("defaults", "measured"), {})
        for dotted, value in table.items():
            group_name, field = dotted.split(".")
            group = data.get(group_name, {})
            if isinstance(group, BaseModel):
                group = group.model_dump(exclude_unset=True)
            if not isinstance(group, dict):
                continue  # validation reports the malformed group
            group = dict(group)
            group.setdefault(field, value)
            data[group_name] = group
        return data

    @model_validator(mode="after")
    def _settle_needs_refit(self) -> "FFConfig":
        if self.refit.settle_s > 0 and self.refit.epochs == 0:
            raise ValueError("refit.settle_s needs refit.epochs > 0: the chip idles only before a refit")
        r = self.recurrent
        if not r.score_from <= r.score_to <= r.iterations:
            raise ValueError(f"recurrent: the scored steps {r.score_from}..{r.score_to} must lie within "
                             f"1..iterations ({r.iterations}) with score_from <= score_to")
        return self

    def layer_roles(self, n_layers: int) -> tuple[list[int], list[int]]:
        """The hidden layers (0-based) of a chip with ``n_layers`` layers that the goodness readout
        sums, and those whose normalized activities the softmax head reads."""
        readout = list(range(1, n_layers)) if self.recipe.skip_first_layer and n_layers >= 2 \
            else list(range(n_layers))
        head = list(range(n_layers)) if self.recipe.head_layers == "all" else readout
        return readout, head

    def label_copies(self, bounded_weights: bool) -> int:
        """Copies of the one-hot label: ``labels.copies``, else 8 on chips with bounded weights
        and 1 on chips with unbounded (exact) weights."""
        if self.labels.copies is not None:
            return self.labels.copies
        return 8 if bounded_weights else 1

    def changed(self, **changes: Any) -> "FFConfig":
        """A re-validated copy with ``changes`` (dotted keys as ``"optimizer.lr"`` or unique names).

        ``defaults`` cannot be changed here (the copy holds every value explicitly, so another
        table would not apply): build a new ``FFConfig(defaults=...)`` instead.
        """
        if "defaults" in changes and changes.pop("defaults") != self.defaults:
            raise ValueError(f"defaults: these settings were built from the {self.defaults!r} table, which cannot "
                             "be switched afterwards (the other table would not apply); start anew with it")
        data = self.model_dump()
        flat: dict[str, Any] = {}
        for key, value in changes.items():
            if "." in key:
                group, field = key.split(".", 1)
                if group in _GROUPS:
                    data[group] = {**data[group], field: value}
                else:
                    data[key] = value  # refused by validation with the key named
            elif key in _GROUPS and isinstance(value, dict):
                data[key] = {**data[key], **value}  # a group given as a dict changes only its own fields
            else:
                flat[key] = value
        for key, value in flat.items():
            if key in type(self).model_fields:
                data[key] = value
            else:
                owners = [g for g, model in _GROUPS.items() if key in model.model_fields]
                if len(owners) == 1:
                    data[owners[0]] = {**data[owners[0]], key: value}
                else:
                    data[key] = value  # refused by validation with the field named
        return FFConfig(**data)
