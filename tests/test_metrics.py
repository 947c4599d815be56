"""Metrics: scikit-learn / seqeval numbers passed through faithfully, and the confusion image."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import f1_score

from ptm.tasks.metrics import classification_metrics, confusion_image, token_metrics


def test_classification_metrics_match_sklearn_and_list_every_class() -> None:
    y_true = np.array([0, 0, 0, 0, 1, 1, 2])
    y_pred = np.array([0, 0, 0, 1, 1, 0, 0])
    m = classification_metrics(y_true, y_pred, ["a", "b", "c"])
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["macro_f1"] == pytest.approx(f1_score(y_true, y_pred, average="macro"))
    assert m["per_class"]["c"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert m["per_class"]["a"]["recall"] == pytest.approx(0.75)
    assert m["confusion_matrix"] == [[3, 1, 0], [1, 1, 0], [1, 0, 0]]
    # Accuracy and macro-F1 disagree: predicting the majority class everywhere.
    majority = classification_metrics(y_true, np.zeros(7, int), ["a", "b", "c"])
    assert majority["accuracy"] > m["accuracy"] - 0.01 and majority["macro_f1"] < m["macro_f1"]


def test_token_metrics_are_entity_level() -> None:
    labels = ["O", "B-LOC", "B-PER", "I-PER"]
    truth = [["B-PER", "I-PER", "O", "B-LOC"], ["O", "B-PER"]]
    guess = [["B-PER", "O", "O", "B-LOC"], ["O", "B-PER"]]  # the first name's end is wrong
    m = token_metrics(truth, guess, labels)
    assert m["entity_precision"] == pytest.approx(2 / 3)
    assert m["entity_recall"] == pytest.approx(2 / 3)
    assert m["entity_f1"] == pytest.approx(2 / 3)
    assert m["tag_accuracy"] == pytest.approx(5 / 6)
    assert m["per_type"]["PER"]["f1"] == pytest.approx(0.5)
    assert m["per_type"]["LOC"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}


def test_confusion_image_is_an_rgb_tensor() -> None:
    image = confusion_image(np.array([[5, 1], [0, 4]]), ["neg", "pos"])
    assert image.dtype == np.uint8 and image.shape[0] == 3 and image.shape[1] == image.shape[2]
    assert image.min() < 100 < image.max()
