"""Figures (matplotlib, written as PNG and SVG).

Every function takes plain records (the JSON lines a run wrote) and an output
path stem; it writes ``stem.png`` and ``stem.svg`` and returns both paths.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from .care import SECONDS_PER_YEAR as _YEAR

__all__ = ["plot_lifetime", "plot_fleet_errors", "plot_energy_error", "plot_energy_breakdown"]


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
        if e["event"] == "distilled" and method in e.get("test_error", {}):
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


def plot_fleet_errors(records: Sequence[dict[str, Any]], stem: str | Path, method: str = "softmax",
                      labels: dict[int, str] | None = None) -> list[Path]:
    """Test error of every chip instance, one column of dots per sweep point: how unique chips differ."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise ValueError("no finished chips to plot")
    plt = _pyplot()
    points = sorted({r["point"] for r in ok})
    fig, ax = plt.subplots(figsize=(max(4.5, 1.2 * len(points) + 2), 4.0))
    for k, p in enumerate(points):
        mine = [r for r in ok if r["point"] == p and r["result"]["test_error"][method] is not None]
        errs = [100 * r["result"]["test_error"][method] for r in mine]
        chips = [r["chip"] for r in mine]
        jitter = [(c % 7 - 3) * 0.04 for c in chips]
        ax.scatter([k + j for j in jitter], errs, s=22, alpha=0.8)
        if errs:
            ax.hlines(sum(errs) / len(errs), k - 0.3, k + 0.3, color="k", lw=1.5)
    names = [(labels or {}).get(p, _point_label(ok, p)) for p in points]
    ax.set_xticks(range(len(points)), names, rotation=20 if len(points) > 3 else 0, ha="right" if len(points) > 3 else "center", fontsize=8)
    ax.set_ylabel(f"test error, {method} readout (%)")
    ax.set_title("Every chip is different: error across instances (bar: mean)")
    ax.grid(alpha=0.3, axis="y")
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def _point_label(records: Sequence[dict[str, Any]], point: int) -> str:
    params = next(r.get("params", {}) for r in records if r["point"] == point)
    if not params:
        return "fleet"
    return ", ".join(f"{k.split('.')[-1]}={v}" for k, v in params.items())


def plot_energy_error(summary: Sequence[dict[str, Any]], stem: str | Path, key: str = "train_energy_j",
                      digital_j: dict[str, float] | None = None, title: str | None = None) -> list[Path]:
    """Mean energy against mean test error per sweep point, the Pareto front marked; vertical
    dashed lines show ``digital_j`` references (label -> joules)."""
    rows = [r for r in summary if "error_mean" in r]
    if not rows:
        raise ValueError("no finished sweep points to plot")
    plt = _pyplot()
    flag = "pareto_train" if key == "train_energy_j" else "pareto_inference"
    fig, ax = plt.subplots(figsize=(7.0, 4.4))
    xs = [r[key] for r in rows]
    ys = [100 * r["error_mean"] for r in rows]
    ax.errorbar(xs, ys, yerr=[100 * r["error_std"] for r in rows], fmt="o", color="tab:blue", ms=5,
                alpha=0.8, label="sweep point (mean, std over chips)")
    front = sorted((r[key], 100 * r["error_mean"]) for r in rows if r.get(flag))
    if front:
        fx, fy = zip(*front)
        ax.step(fx, fy, where="post", color="tab:red", lw=1.5, label="Pareto front")
        ax.scatter(fx, fy, s=80, facecolors="none", edgecolors="tab:red")
    for r, x, y in zip(rows, xs, ys):
        ax.annotate(", ".join(f"{k.split('.')[-1]}={v}" for k, v in r["params"].items()) or "fleet",
                    (x, y), fontsize=6, xytext=(3, 3), textcoords="offset points")
    for label, joules in (digital_j or {}).items():
        ax.axvline(joules, color="0.4", ls="--", lw=1)
        ax.annotate(label, (joules, max(ys)), fontsize=7, rotation=90, va="top", ha="right")
    ax.set_xscale("log")
    what = "training run" if key == "train_energy_j" else "inference (per image)"
    ax.set_xlabel(f"energy per {what} (J)")
    ax.set_ylabel("test error (%)")
    ax.set_title(title or f"Energy against error, per {what}")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    paths = _save(fig, stem)
    plt.close(fig)
    return paths


def plot_energy_breakdown(records: Sequence[dict[str, Any]], stem: str | Path) -> list[Path]:
    """Training energy by ledger category, mean over the chips of each sweep point (stacked);
    the right panel leaves out the controller's digital work, which usually dominates."""
    ok = [r for r in records if r.get("status") == "ok"]
    if not ok:
        raise ValueError("no finished chips to plot")
    plt = _pyplot()
    points = sorted({r["point"] for r in ok})
    cats = sorted({c for r in ok for c in r["result"]["train_energy_j"]})
    colors = dict(zip(cats, plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3))
    width = max(4.5, 1.2 * len(points) + 2.5)
    fig, axes = plt.subplots(1, 2, figsize=(2 * width, 4.0))
    names = [_point_label(ok, p) for p in points]
    for ax, shown, title in ((axes[0], cats, "all categories"),
                             (axes[1], [c for c in cats if c != "digital"], "on the chip (without digital)")):
        bottom = [0.0] * len(points)
        for c in shown:
            vals = []
            for p in points:
                rs = [r["result"]["train_energy_j"].get(c, 0.0) for r in ok if r["point"] == p]
                vals.append(sum(rs) / len(rs))
            if not any(vals):
                continue
            ax.bar(range(len(points)), vals, bottom=bottom, label=c, color=colors[c])
            bottom = [b + v for b, v in zip(bottom, vals)]
        ax.set_xticks(range(len(points)), names, fontsize=8, rotation=20 if len(points) > 3 else 0,
                      ha="right" if len(points) > 3 else "center")
        ax.set_ylabel("training energy per chip (J)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle("Where the energy goes")
    paths = _save(fig, stem)
    plt.close(fig)
    return paths
