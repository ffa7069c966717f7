import numpy as np
import pytest
from sklearn.metrics import average_precision_score, fbeta_score, precision_recall_fscore_support

from ben_builder.train.metrics import all_metrics, average_precision, per_class_table


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_scikit_learn(seed):
    rng = np.random.default_rng(seed)
    y = (rng.random((300, 19)) < 0.2).astype(int)
    y[0] = 1  # every class has a positive
    y[np.arange(300), rng.integers(0, 19, 300)] = 1  # every patch has a label, as in BigEarthNet
    scores = np.clip(y * 0.35 + rng.random(y.shape) * 0.7, 0, 1)
    scores[5:20] = np.round(scores[5:20], 1)  # ties
    pred = (scores > 0.5).astype(int)  # torchmetrics: a score above the threshold is positive
    got = all_metrics(y, scores)
    for avg in ("micro", "macro", "samples"):
        p, r, f1, _ = precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        f2 = fbeta_score(y, pred, beta=2, average=avg, zero_division=0)
        assert got[f"precision_{avg}"] == pytest.approx(p)
        assert got[f"recall_{avg}"] == pytest.approx(r)
        assert got[f"f1_{avg}"] == pytest.approx(f1)
        assert got[f"f2_{avg}"] == pytest.approx(f2)
    assert got["average_precision_macro"] == pytest.approx(
        average_precision_score(y, scores, average="macro")
    )
    assert got["average_precision_micro"] == pytest.approx(
        average_precision_score(y, scores, average="micro")
    )
    table = per_class_table(y, scores, [f"c{i}" for i in range(19)])
    assert table[3]["average_precision"] == pytest.approx(
        average_precision_score(y[:, 3], scores[:, 3])
    )
    assert table[3]["support"] == y[:, 3].sum()


def test_ap_without_positives_is_nan_and_left_out_of_macro():
    y = np.array([[1, 0], [0, 0], [1, 0]])
    s = np.array([[0.9, 0.2], [0.1, 0.3], [0.8, 0.1]])
    assert np.isnan(average_precision(y[:, 1], s[:, 1]))
    assert all_metrics(y, s)["average_precision_macro"] == pytest.approx(1.0)


def test_class_absent_and_never_predicted_counts_as_zero_as_in_scikit_learn():
    y = np.array([[1, 0, 1], [0, 0, 1], [1, 0, 0]])
    s = np.array([[0.9, 0.2, 0.3], [0.1, 0.3, 0.6], [0.8, 0.1, 0.6]])
    got = all_metrics(y, s)
    p, r, f1, _ = precision_recall_fscore_support(y, s > 0.5, average="macro", zero_division=0)
    assert (got["precision_macro"], got["recall_macro"], got["f1_macro"]) == pytest.approx(
        (p, r, f1)
    )
    assert got["precision_macro"] == pytest.approx(0.5)  # (1 + 0 + 0.5) / 3
