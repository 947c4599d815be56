"""The knob table of docs/RECIPES.md from the runs of docs/recipes/knobs.sh.

    python docs/recipes/knob_table.py [outputs/recipes/knobs]

One row per finished run, best held-out loss first: its wall time over the seed runs' (a rough
minutes-per-run ratio: only meaningful where every run had the same neighbours), the loss halfway
and at the end (fixed 15% token masking, the same 389 held-out segments for every run), MLM
accuracy, and the downstream probe at the end (names entity F1, sentiment macro-F1).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def row(run: Path) -> dict | None:
    metrics_file = run / "metrics.json"
    if run.is_symlink() or not metrics_file.is_file():  # `latest` points at a run listed anyway
        return None
    metrics = json.loads(metrics_file.read_text())
    probe = metrics["probe"]["history"][-1]
    curve = {
        e.step: e.value for e in EventAccumulator(str(run / "tb")).Reload().Scalars("eval/loss")
    }
    half = max(s for s in curve if s <= metrics["steps"] // 2)
    return {
        "run": run.name,
        "steps": metrics["steps"],
        "tokens (M)": metrics["tokens"] / 1e6,
        "wall_seconds": metrics["wall_seconds"],
        "loss, half-way": curve[half],
        "held-out loss": metrics["eval/loss"],
        "accuracy": metrics["eval/accuracy"],
        "names probe": probe["probe/names/entity_f1"],
        "sentiment probe": probe["probe/sentiment/macro_f1"],
    }


def main(folder: Path) -> None:
    rows = sorted(
        filter(None, map(row, sorted(folder.iterdir()))), key=lambda r: r["held-out loss"]
    )
    seeds = sorted(r["wall_seconds"] for r in rows if r["run"].startswith("seed_"))
    for r in rows:
        wall = r.pop("wall_seconds")
        r["time"] = f"{wall / seeds[len(seeds) // 2]:.2f}x" if seeds else "?"
    print("| " + " | ".join(rows[0]) + " |")
    print("|" + "---|" * len(rows[0]))
    for r in rows:
        cells = [f"{v:.3f}" if isinstance(v, float) else f"{v:,}" if isinstance(v, int) else v
                 for v in r.values()]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "outputs/recipes/knobs"))
