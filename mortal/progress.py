"""Progress bars on stderr, drawn by tqdm behind a small fixed interface."""

from __future__ import annotations

import sys

from tqdm import tqdm


class _Bar(tqdm):
    # No monitor thread: the fleet forks its process pool while a bar is open, and forking
    # a multi-threaded process is unsafe (and warns from Python 3.12 on).
    monitor_interval = 0


class Progress:
    """``Progress(total, desc)``; call ``update(done)`` with the absolute count, then ``close()``.

    Prints nothing if not ``enabled``.  ``leave=False`` erases the bar when it is closed.
    """

    def __init__(self, total: int, desc: str, enabled: bool = True, *, leave: bool = True) -> None:
        self.total = int(total)
        self.desc = desc
        self.enabled = bool(enabled)
        self._bar: tqdm | None = None
        if self.enabled:
            self._bar = _Bar(total=self.total, desc=desc, leave=leave, file=sys.stderr, dynamic_ncols=True)

    def update(self, done: int) -> None:
        """Show ``done`` of ``total`` done (redrawn at most every 0.1 s)."""
        if self._bar is not None and done != self._bar.n:
            self._bar.update(done - self._bar.n)

    def close(self) -> None:
        """Draw the last count and end the bar's line; idempotent."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
