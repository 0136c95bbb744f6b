"""Figures (matplotlib, written as PNG and SVG).

Every function takes plain records (the JSON lines a run wrote) and an output
path stem; it writes ``stem.png`` and ``stem.svg`` and returns both paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

__all__ = ["plot_lifetime"]

_YEAR = 365.25 * 86400.0


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, stem: str | Path) -> list[Path]:
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".png"), stem.with_suffix(".svg")]
    fig.savefig(paths[0], dpi=130, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    return paths


def plot_lifetime(events: Sequence[dict[str, Any]], stem: str | Path, method: str = "softmax") -> list[Path]:
    """Test error against simulated time across generations, distillations marked."""
    if not events:
        raise ValueError("no lifetime events to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    gens = sorted({int(e["generation"]) for e in events if "generation" in e})
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for g in gens:
        pts = [(e["time_s"] / _YEAR, e["test_error"][method]) for e in events
               if e.get("generation") == g and e["event"] in ("trained", "distilled", "check")
               and method in e.get("test_error", {})]
        if pts:
            xs, ys = zip(*pts)
            ax.plot(xs, [100 * y for y in ys], "-o", ms=3, color=colors[g % len(colors)], label=f"generation {g}")
    first = True
    for e in events:
        if e["event"] == "distilled":
            t = e["time_s"] / _YEAR
            ax.axvline(t, color="0.5", ls="--", lw=0.8)
            ax.plot([t], [100 * e["test_error"][method]], "*", ms=12, color="k",
                    label="distilled into a fresh chip" if first else None)
            first = False
    ax.set_xlabel("simulated time (years)")
    ax.set_ylabel(f"test error, {method} readout (%)")
    ax.set_title("A lineage of mortal chips")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths
