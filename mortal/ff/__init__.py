"""Forward-Forward learning in situ, through the ``Chip`` protocol only.

The package, by concern:

``config``      the settings tree (:class:`FFConfig`);
``state``       the controller's memory (:class:`ControllerState`);
``measure``     the forward pass through a chip, input scaling, label layout;
``targets``     labels or soft targets, and the negative samplers;
``train``       the one training loop;
``modes``       the FF modes as recipes on that loop (:func:`~mortal.ff.modes.mode_recipe`);
``hybrid``      the unsupervised mode's negatives: two examples cut along a blurred random mask;
``unsupervised`` the unsupervised mode's batch step;
``readout``     per-label goodness, the softmax head, evaluation, head refits;
``checkpoint``  saving and restoring learner and chip together;
``learner``     :class:`FFLearner`, which ties them together, and :func:`load_learner`;
``analog``      in-array updates by pulse coincidence (policy ``analog``), kernels in ``_kernels``.
"""

from .checkpoint import CHIP_FILE, LEARNER_FILE, latest_checkpoint, read_history, save_checkpoint
from .config import DEFAULTS, FFConfig, LabelConfig, MeasurementConfig, OptimizerConfig, RecipeConfig, RefitConfig
from .learner import FFLearner, load_learner, log_sink
from .measure import LabelLayout, Pass, forward, input_scales
from .modes import MODE_RECIPES, Mode, mode_recipe
from .readout import EvalResult, ledger_snapshot, energy_since
from .state import ControllerState
from .targets import SAMPLERS, Targets, negative_sampler

__all__ = ["FFConfig", "RecipeConfig", "LabelConfig", "OptimizerConfig", "MeasurementConfig", "RefitConfig",
           "DEFAULTS", "FFLearner", "load_learner", "EvalResult", "ControllerState", "Pass", "LabelLayout",
           "forward", "input_scales", "Targets", "SAMPLERS", "negative_sampler", "CHIP_FILE", "LEARNER_FILE",
           "latest_checkpoint", "read_history", "save_checkpoint", "ledger_snapshot", "energy_since", "log_sink",
           "Mode", "MODE_RECIPES", "mode_recipe"]
