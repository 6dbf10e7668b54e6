"""The GLUE metrics on hand-worked examples: F1 of the positive class (MRPC, QQP), Matthews correlation (CoLA),
Pearson and Spearman of the first logit (STS-B), accuracy; labels in the tasks' GLUE order."""
import math

import numpy as np
import pytest

from textdistill.data.tasks import get_task
from textdistill.evaluate import compute_metrics


def _logits(preds, classes=2):
    """Logits whose argmax is ``preds``."""
    out = np.zeros((len(preds), classes))
    out[np.arange(len(preds)), preds] = 1.0
    return out


def test_f1_is_of_the_positive_class():
    # labels 1 1 1 0 0 0, predictions 1 1 0 1 0 0: TP 2, FP 1, FN 1 -> F1 2/3 (of class 1); of class 0 it would also
    # be 2/3, so a second case tells them apart: TP 3, FP 2, FN 0 -> 6/8 (class 0's F1: TP 1, FN 2 -> 0.5)
    got = compute_metrics(get_task("mrpc"), _logits([1, 1, 0, 1, 0, 0]), [1, 1, 1, 0, 0, 0])
    assert got["f1"] == pytest.approx(2 / 3) and got["accuracy"] == pytest.approx(4 / 6)
    got = compute_metrics(get_task("qqp"), _logits([1, 1, 1, 1, 1, 0]), [1, 1, 1, 0, 0, 0])
    assert got["f1"] == pytest.approx(2 * 3 / (2 * 3 + 2 + 0))


def test_matthews_correlation_by_hand():
    preds, labels = [1, 1, 0, 1, 0, 0, 1, 0], [1, 0, 0, 1, 0, 1, 1, 0]
    tp, tn, fp, fn = 3, 3, 1, 1
    want = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert compute_metrics(get_task("cola"), _logits(preds), labels)["mcc"] == pytest.approx(want)
    assert compute_metrics(get_task("cola"), _logits([1] * 8), labels)["mcc"] == 0.0  # a constant answer


def test_pearson_and_spearman_of_the_first_logit():
    scores = np.array([[0.5, 9.0], [1.0, 9.0], [2.0, 9.0], [4.0, 9.0]])  # only column 0 counts
    labels = [1.0, 2.0, 3.0, 3.5]
    x, y = scores[:, 0], np.array(labels)
    pearson = ((x - x.mean()) * (y - y.mean())).sum() / math.sqrt(((x - x.mean()) ** 2).sum() * ((y - y.mean()) ** 2).sum())
    got = compute_metrics(get_task("stsb"), scores, labels)
    assert got["pearson"] == pytest.approx(pearson) and got["spearman"] == pytest.approx(1.0)  # same order


def test_label_order_of_mnli():
    # GLUE's order: contradiction, entailment, neutral -- a prediction of class 1 is "entailment"
    assert get_task("mnli").labels == ("contradiction", "entailment", "neutral")
    got = compute_metrics(get_task("mnli"), _logits([0, 1, 2, 1], 3), [0, 1, 2, 2])
    assert got["accuracy"] == pytest.approx(0.75)
