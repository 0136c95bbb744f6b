"""A minimal progress bar on stderr (no dependency)."""

from __future__ import annotations

import sys
import time


class Progress:
    """``Progress(total, desc)``; call ``update(done)`` and ``close()``.  Silent if not enabled."""

    def __init__(self, total: int, desc: str, enabled: bool = True, width: int = 30) -> None:
        self.total = max(int(total), 1)
        self.desc = desc
        self.enabled = enabled
        self.width = width
        self.start = time.perf_counter()
        self._last = 0.0

    def update(self, done: int) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self._last < 0.2 and done < self.total:
            return
        self._last = now
        frac = min(done / self.total, 1.0)
        filled = int(frac * self.width)
        elapsed = now - self.start
        eta = elapsed / frac - elapsed if frac > 0 else 0.0
        sys.stderr.write(f"\r{self.desc} [{'#' * filled}{'.' * (self.width - filled)}] "
                         f"{done}/{self.total} {elapsed:5.1f}s eta {eta:5.1f}s")
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            self.update(self.total)
            sys.stderr.write("\n")
            sys.stderr.flush()
