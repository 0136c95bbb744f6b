"""Exception types of the learning side."""

from __future__ import annotations

__all__ = ["InputError"]


class InputError(ValueError):
    """Bad input to the learner (images, labels, chip, checkpoint, paths), found before any chip state changed.

    A ``ValueError`` raised during training itself (for example a diverged update the chip
    refuses) is not an ``InputError``.
    """
