"""TensorBoard logging from rank 0 only, with hyperparameters in the same run.

``SummaryWriter.add_hparams`` writes to a new sub-run, which splits one run in two in the UI;
writing the hparams session summaries into the run's own event file keeps one row per run in
the HParams tab, with its scalars beside it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams


class TensorBoard:
    def __init__(self, log_dir: Path | None) -> None:
        self.writer = SummaryWriter(str(log_dir)) if log_dir is not None else None

    def scalars(self, step: int, values: dict[str, float]) -> None:
        if self.writer is None:
            return
        for tag, value in values.items():
            self.writer.add_scalar(tag, value, step)

    def hparams(self, params: dict[str, Any], metrics: dict[str, float]) -> None:
        """Record hyperparameters and final metrics (metric tags are prefixed ``hparam/``)."""
        if self.writer is None:
            return
        clean = {
            k: v if isinstance(v, int | float | str | bool) else str(v) for k, v in params.items()
        }
        tagged = {f"hparam/{k}": float(v) for k, v in metrics.items()}
        _experiment, start, end = hparams(clean, tagged)
        # No experiment summary: TensorBoard takes the HParams columns from the first run that has
        # one (hiding other runs' keys, marking none as differing); from the session summaries
        # alone it builds the table over every run.
        for summary in (start, end):
            self.writer.file_writer.add_summary(summary)
        for tag, value in tagged.items():
            self.writer.add_scalar(tag, value)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()
