"""The ``pcm`` preset against IBM's PCM statistical model, quantity by quantity.

    python benchmarks/bench_pcm_fidelity.py [--reference tests/data/pcm-reference-stats.json] [--rows 400]

Deploys weights of 2.5 and 20 uS by ``program_verify``, waits, reads (``devices.fidelity``), and
prints each measured quantity beside the reference statistics of aihwkit 1.2.0's
``PCMLikeNoiseModel`` (200,000 devices per conductance) as a markdown table.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from devices.fidelity import pcm_fidelity

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reference", default=str(ROOT / "tests" / "data" / "pcm-reference-stats.json"))
    ap.add_argument("--preset", default="pcm")
    ap.add_argument("--rows", type=int, default=400, help="pairs per conductance: rows x rows")
    ap.add_argument("--reads", type=int, default=8)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rows = pcm_fidelity(args.reference, args.preset, rows=args.rows, cols=args.rows, reads=args.reads, seed=args.seed)
    print(f"# {args.preset}: {args.rows} x {args.rows} pairs per conductance, {args.reads} reads, seed {args.seed}")
    print("| G (uS) | quantity | after | measured (uS or 1) | IBM reference | ratio |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['g_us']:g} | {r['quantity']} | {r['time']} | {r['measured']:.4f} | {r['reference']:.4f} | "
              f"{r['ratio']:.3f} |")
    worst = max(rows, key=lambda r: abs(r["ratio"] - 1.0))
    print(f"\nlargest deviation: {worst['quantity']} at {worst['g_us']:g} uS, {worst['time']}: "
          f"{abs(worst['ratio'] - 1.0):.1%}")


if __name__ == "__main__":
    main()
