"""Multi-label metrics from torchmetrics: P/R/F1/F2 (micro, macro, sample-averaged) and AP.

torchmetrics has no sample averaging; the sample-averaged figures are its macro average over the
transposed matrices (patches taken as labels), which is the definition of sample averaging.
Conventions, checked against scikit-learn in ``tests/test_metrics.py``:

- a score above the threshold (``> 0.5``) is a positive prediction;
- ``zero_division=0``: a class or patch without predictions (or targets) counts as 0 in the
  averages, as in scikit-learn;
- average precision of a class without positives is undefined (NaN) and left out of the macro
  average (torchmetrics would count it as 0).
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from torchmetrics.functional.classification import (
    binary_average_precision,
    multilabel_average_precision,
    multilabel_fbeta_score,
    multilabel_precision,
    multilabel_recall,
)

AVERAGES = ("micro", "macro", "samples")


def _tensors(y_true: np.ndarray, scores: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.as_tensor(np.asarray(scores, np.float64)), torch.as_tensor(
        np.asarray(y_true).astype(np.int64)
    )


def _scores(
    s: torch.Tensor, t: torch.Tensor, avg: str, threshold: float
) -> dict[str, torch.Tensor]:
    """Precision, recall, F1 and F2 from torchmetrics for one averaging (``none``: per class)."""
    if avg == "samples":
        s, t, avg = s.T.contiguous(), t.T.contiguous(), "macro"
    kw = {"num_labels": s.shape[1], "threshold": threshold, "average": avg, "zero_division": 0}
    return {
        "precision": multilabel_precision(s, t, **kw),  # type: ignore[arg-type]
        "recall": multilabel_recall(s, t, **kw),  # type: ignore[arg-type]
        "f1": multilabel_fbeta_score(s, t, beta=1.0, **kw),  # type: ignore[arg-type]
        "f2": multilabel_fbeta_score(s, t, beta=2.0, **kw),  # type: ignore[arg-type]
    }


def threshold_metrics(
    y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5
) -> dict[str, float]:
    """Precision, recall, F1 and F2, each micro-, macro- and sample-averaged.

    Args:
        y_true: (n, classes) 0/1 targets.
        scores: (n, classes) scores in [0, 1]; ``> threshold`` is a positive prediction.
        threshold: Decision threshold.
    """
    s, t = _tensors(y_true, scores)
    out: dict[str, float] = {}
    for avg in AVERAGES:
        for name, value in _scores(s, t, avg, threshold).items():
            out[f"{name}_{avg}"] = float(value)
    return out


def per_class_ap(y_true: np.ndarray, scores: np.ndarray) -> np.ndarray:
    """Average precision of each class; NaN for a class without positives."""
    s, t = _tensors(y_true, scores)
    with warnings.catch_warnings():  # "no positive samples": such classes are set to NaN below
        warnings.simplefilter("ignore", UserWarning)
        if s.shape[1] == 1:
            ap = binary_average_precision(s[:, 0], t[:, 0])
        else:
            ap = multilabel_average_precision(s, t, num_labels=s.shape[1], average="none")
    out = np.asarray(ap, dtype=float).reshape(-1)
    out[np.asarray(y_true).sum(axis=0) == 0] = np.nan
    return out


def average_precision(y_true: np.ndarray, scores: np.ndarray) -> float:
    """Average precision of one ranking (all entries pooled); NaN without positives."""
    y = np.asarray(y_true).reshape(-1, 1)
    return float(per_class_ap(y, np.asarray(scores, dtype=float).reshape(-1, 1))[0])


def ranking_metrics(y_true: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    """Macro AP (mean over classes with at least one positive) and micro AP."""
    per_class = per_class_ap(y_true, scores)
    valid = per_class[~np.isnan(per_class)]
    return {
        "average_precision_macro": float(valid.mean()) if valid.size else float("nan"),
        "average_precision_micro": average_precision(y_true, scores),
    }


def per_class_table(
    y_true: np.ndarray, scores: np.ndarray, names: list[str], threshold: float = 0.5
) -> list[dict[str, float | str | int]]:
    """Per-class support, precision, recall, F1, F2 and AP."""
    s, t = _tensors(y_true, scores)
    per = {
        k: np.asarray(v, dtype=float).reshape(-1)
        for k, v in _scores(s, t, "none", threshold).items()
    }
    ap = per_class_ap(y_true, scores)
    return [
        {
            "class": name,
            "support": int(np.asarray(y_true)[:, c].sum()),
            "precision": float(per["precision"][c]),
            "recall": float(per["recall"][c]),
            "f1": float(per["f1"][c]),
            "f2": float(per["f2"][c]),
            "average_precision": float(ap[c]),
        }
        for c, name in enumerate(names)
    ]


def all_metrics(y_true: np.ndarray, scores: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Every metric of the results table."""
    return {**threshold_metrics(y_true, scores, threshold), **ranking_metrics(y_true, scores)}
