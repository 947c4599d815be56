"""Fine-tuning metrics from scikit-learn and seqeval — no home-made F1 — and a confusion image.

The competition scores macro-averaged F1, so that is what classification runs are selected on:
accuracy hides a model that ignores the small classes. Token tasks are scored at the entity level
(CoNLL: an entity counts only when its type and both ends are right), micro-averaged over
entities as seqeval and the CoNLL script do; per-type precision/recall/F1 come with it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw
from seqeval.metrics import classification_report as entity_report
from seqeval.metrics import f1_score as entity_f1
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
)


def classification_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, labels: list[str]
) -> dict[str, object]:
    """Accuracy, macro-F1, per-class P/R/F1/support and the confusion matrix (rows: truth).

    Macro-F1 averages over the classes present in the truth or the predictions, exactly as the
    competition's ``sklearn.metrics.f1_score(average="macro")`` does; the per-class table lists
    every class of the task.
    """
    idx = list(range(len(labels)))
    p, r, f, s = precision_recall_fscore_support(
        y_true, y_pred, labels=idx, average=None, zero_division=0
    )
    return {
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "per_class": per_class(labels, p, r, f, s),
        "confusion_matrix": confusion_matrix(y_true, y_pred, labels=idx).tolist(),
    }


def per_class(
    labels: list[str], p: np.ndarray, r: np.ndarray, f: np.ndarray, support: np.ndarray
) -> dict[str, dict[str, float]]:
    """sklearn's per-class arrays as ``{label: {precision, recall, f1, support}}``."""
    return {
        label: {
            "precision": float(p[i]),
            "recall": float(r[i]),
            "f1": float(f[i]),
            "support": int(support[i]),
        }
        for i, label in enumerate(labels)
    }


def token_metrics(
    true_tags: list[list[str]], pred_tags: list[list[str]], labels: list[str]
) -> dict[str, object]:
    """Entity-level F1 (micro over entities) and P/R/F1 per entity type; tag accuracy too.

    ``macro_f1`` here is the unweighted mean of the per-type entity F1s, reported alongside.
    """
    report = entity_report(true_tags, pred_tags, output_dict=True, zero_division=0)
    types = sorted({t[2:] for t in labels if t != "O"})
    per_type = {
        t: {
            "precision": float(report[t]["precision"]) if t in report else 0.0,
            "recall": float(report[t]["recall"]) if t in report else 0.0,
            "f1": float(report[t]["f1-score"]) if t in report else 0.0,
            "support": int(report[t]["support"]) if t in report else 0,
        }
        for t in types
    }
    flat_true = np.concatenate([np.asarray(x) for x in true_tags]) if true_tags else np.zeros(0)
    flat_pred = np.concatenate([np.asarray(x) for x in pred_tags]) if pred_tags else np.zeros(0)
    micro = report.get("micro avg", {"precision": 0.0, "recall": 0.0})
    index = {t: i for i, t in enumerate(labels)}
    return {
        "entity_f1": float(entity_f1(true_tags, pred_tags, zero_division=0)),
        "entity_precision": float(micro["precision"]),
        "entity_recall": float(micro["recall"]),
        "macro_f1": float(np.mean([v["f1"] for v in per_type.values()])) if per_type else 0.0,
        "tag_accuracy": float((flat_true == flat_pred).mean()) if len(flat_true) else 0.0,
        "per_type": per_type,
        "confusion_matrix": confusion_matrix(
            [index[t] for t in flat_true],
            [index[t] for t in flat_pred],
            labels=list(range(len(labels))),
        ).tolist(),
    }


def confusion_image(matrix: np.ndarray, labels: list[str], cell: int = 36) -> np.ndarray:
    """A row-normalised confusion matrix as an ``(3, H, W)`` uint8 image for TensorBoard.

    Rows are the true class, columns the prediction; the shade is the row's share (recall on the
    diagonal) and each cell prints its count. Drawn with PIL, since matplotlib is not installed.
    """
    matrix = np.asarray(matrix)
    n = len(labels)
    margin = 8 + 7 * min(max((len(label) for label in labels), default=1), 12)
    size = margin + n * cell
    image = Image.new("RGB", (size, size), "white")
    draw = ImageDraw.Draw(image)
    share = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    for i in range(n):
        draw.text((4, margin + i * cell + cell // 3), labels[i][:12], fill="black")
        draw.text((margin + i * cell + 4, 4), labels[i][:4], fill="black")
        for j in range(n):
            shade = int(255 * (1 - share[i, j]))
            x, y = margin + j * cell, margin + i * cell
            draw.rectangle([x, y, x + cell - 1, y + cell - 1], fill=(shade, shade, 255))
            draw.text(
                (x + 3, y + cell // 3),
                str(int(matrix[i, j])),
                fill="white" if share[i, j] > 0.5 else "black",
            )
    return np.asarray(image).transpose(2, 0, 1).copy()
