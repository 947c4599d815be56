"""The label-efficiency plot: a panel per task, a line per model (the median over seeds) with its
min-max band, over the number of labelled training rows (log scale). The report draws it beside
``report.md`` and ``make docs`` from a report's record; both through `draw_curves`.

matplotlib is an optional dependency (``pip install 'ptm[report]'``): `matplotlib_or_none` says
whether it is there, and callers decide what its absence means.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

# task -> model name -> [[training rows, median, min, max], ...]
Curves = dict[str, dict[str, list[list[float]]]]


def matplotlib_or_none() -> Any:
    """``matplotlib.pyplot`` on the file-only Agg backend, or None when it is not installed."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def draw_curves(
    plt: Any, curves: Curves, ylabels: dict[str, str], path: Path, source: str | None = None
) -> Path:
    """The plot of ``curves`` at ``path`` (``ylabels``: each task's axis label). The PNG carries
    no version stamp (the same numbers give the same bytes) and, given ``source``, a text chunk
    saying what it shows, so a check can tell a stale picture without comparing pixels."""
    fig, axes = plt.subplots(1, len(curves), figsize=(5 * len(curves), 3.6), squeeze=False)
    for ax, (task, models) in zip(axes[0], curves.items(), strict=True):
        for model, points in models.items():
            xs, med, lo, hi = zip(*points, strict=True)
            line = ax.plot(xs, med, marker="o", label=model)[0]
            ax.fill_between(xs, lo, hi, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xscale("log")
        ax.set_xlabel("labelled training rows")
        ax.set_ylabel(ylabels[task])
        ax.set_title(task)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"Software": None, **({"Source": source} if source else {})}
    fig.savefig(path, dpi=100, metadata=metadata)
    plt.close(fig)
    return path
