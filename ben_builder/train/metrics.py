"""Multi-label metrics in numpy (no PyTorch needed): P/R/F1/F2 and average precision.

Definitions follow scikit-learn's (``precision_recall_fscore_support`` with
``zero_division=0``; ``average_precision_score``), which the tests check against.
"""

from __future__ import annotations

import numpy as np

AVERAGES = ("micro", "macro", "samples")


def _fbeta(p: np.ndarray, r: np.ndarray, beta: float) -> np.ndarray:
    b2 = beta * beta
    denom = b2 * p + r
    return np.divide((1 + b2) * p * r, denom, out=np.zeros_like(p, dtype=float), where=denom > 0)


def _prf(tp: np.ndarray, fp: np.ndarray, fn: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    tp, fp, fn = (np.asarray(a, dtype=float) for a in (tp, fp, fn))
    p = np.divide(tp, tp + fp, out=np.zeros_like(tp), where=(tp + fp) > 0)
    r = np.divide(tp, tp + fn, out=np.zeros_like(tp), where=(tp + fn) > 0)
    return p, r


def threshold_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Precision, recall, F1 and F2, each micro-, macro- and sample-averaged.

    Args:
        y_true: (n, classes) 0/1 targets.
        y_pred: (n, classes) 0/1 predictions.
    """
    t, p = y_true.astype(bool), y_pred.astype(bool)
    out: dict[str, float] = {}
    for avg in AVERAGES:
        axis = {"micro": None, "macro": 0, "samples": 1}[avg]
        tp = (t & p).sum(axis=axis)
        fp = (~t & p).sum(axis=axis)
        fn = (t & ~p).sum(axis=axis)
        prec, rec = _prf(tp, fp, fn)
        f1, f2 = _fbeta(prec, rec, 1.0), _fbeta(prec, rec, 2.0)
        for name, v in (("precision", prec), ("recall", rec), ("f1", f1), ("f2", f2)):
            out[f"{name}_{avg}"] = float(np.mean(v))
    return out


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one ranking (step-wise, as scikit-learn); NaN without positives."""
    y = np.asarray(y_true, dtype=float).ravel()
    s = np.asarray(scores, dtype=float).ravel()
    if y.sum() == 0:
        return float("nan")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    last = np.r_[np.flatnonzero(np.diff(s)), y.size - 1]
    tps = np.cumsum(y)[last]
    fps = last + 1 - tps
    precision = tps / (tps + fps)
    recall = tps / tps[-1]
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def ranking_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Macro AP (mean over classes with at least one positive) and micro AP."""
    per_class = [average_precision(y_true[:, c], scores[:, c]) for c in range(y_true.shape[1])]
    valid = [v for v in per_class if not np.isnan(v)]
    return {
        "average_precision_macro": float(np.mean(valid)) if valid else float("nan"),
        "average_precision_micro": average_precision(y_true, scores),
    }


def per_class_table(y_true: np.ndarray, scores: np.ndarray, names: list[str],
                    threshold: float = 0.5) -> list[dict[str, float | str | int]]:  # fmt: skip
    """Per-class support, precision, recall, F1, F2 and AP."""
    pred = scores >= threshold
    rows: list[dict[str, float | str | int]] = []
    for c, name in enumerate(names):
        t, p = y_true[:, c].astype(bool), pred[:, c]
        prec, rec = _prf(np.array([(t & p).sum()]), np.array([(~t & p).sum()]),
                         np.array([(t & ~p).sum()]))  # fmt: skip
        rows.append({"class": name, "support": int(t.sum()), "precision": float(prec[0]),
                     "recall": float(rec[0]), "f1": float(_fbeta(prec, rec, 1.0)[0]),
                     "f2": float(_fbeta(prec, rec, 2.0)[0]),
                     "average_precision": average_precision(t, scores[:, c])})  # fmt: skip
    return rows


def all_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Every metric of the results table."""
    return {**threshold_metrics(y_true, scores >= threshold), **ranking_metrics(y_true, scores)}
