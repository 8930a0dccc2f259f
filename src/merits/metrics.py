"""Evaluation: weighted F1 (the headline), accuracy, macro F1, per-class scores, confusion matrix; mean ± std.

The table's metric is selectable (:data:`METRICS`, optionally over a subset of the classes, as dialogue benchmarks
that score without their "others" class do): :func:`score` computes any of them from a stage's saved confusion
matrix, so changing the metric of a finished run needs no retraining.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score, precision_recall_fscore_support


def weighted_f1(y_true, y_pred) -> float:
    """Over the labelled utterances only (class ids >= 0; unlabelled context turns carry NO_LABEL = -100)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    known = y_true >= 0
    return float(f1_score(y_true[known], y_pred[known], average="weighted", zero_division=0)) if known.any() else 0.0


def classification_metrics(y_true, y_pred, label_names, macro_over_present: bool = False) -> dict:
    """All scores of one prediction set. ``y_*`` are class ids; ``label_names[i]`` names class i.

    macro_over_present: macro F1 over the classes with a gold example only (new data often lacks some: counting
    them as 0 would understate it), the absent ones named under ``absent_classes``."""
    ids = list(range(len(label_names)))
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    p, r, f, s = precision_recall_fscore_support(y_true, y_pred, labels=ids, zero_division=0)
    macro_ids = sorted(set(y_true.tolist())) if macro_over_present and len(y_true) else ids
    extra = {"absent_classes": [label_names[i] for i in ids if i not in macro_ids]} if macro_over_present else {}
    return {
        "weighted_f1": float(f1_score(y_true, y_pred, labels=ids, average="weighted", zero_division=0)),
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else 0.0,
        "macro_f1": float(f1_score(y_true, y_pred, labels=macro_ids, average="macro", zero_division=0)),
        **extra,
        "n": int(len(y_true)),
        "per_class": {name: {"precision": float(p[i]), "recall": float(r[i]), "f1": float(f[i]), "support": int(s[i])}
                      for i, name in enumerate(label_names)},
        "labels": list(label_names),
        "confusion": confusion_matrix(y_true, y_pred, labels=ids).tolist(),  # rows: true class, columns: predicted
    }


# name -> what the table's caption calls it
METRICS = {"weighted_f1": "weighted F1", "macro_f1": "macro F1", "micro_f1": "micro F1", "accuracy": "accuracy"}


def check_metric(name: str, classes, labels=None) -> None:
    """A ConfigError-free check: ValueError naming what is wrong (the callers turn it into their own error)."""
    if name not in METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {list(METRICS)}")
    if classes and name == "accuracy":
        raise ValueError("accuracy counts every class; a subset of classes applies to the F1 metrics")
    if classes and labels is not None:
        unknown = [c for c in classes if c not in labels]
        if unknown:
            raise ValueError(f"metric classes {unknown} are not among the run's classes {list(labels)}")


def metric_title(name: str, classes=()) -> str:
    """ "weighted F1", "micro F1 over anger, joy" """
    return METRICS[name] + (f" over {', '.join(classes)}" if classes else "")


def score(metrics: dict, name: str = "weighted_f1", classes=()) -> float:
    """One metric from a prediction set's confusion matrix (``classification_metrics``' ``confusion`` and ``labels``).

    classes: the classes averaged over (default all). micro F1 over a subset counts a prediction of a class outside
    it as a miss only when the true class is inside (the DailyDialog convention: 'others' is neither scored nor
    rewarded); with every class it equals accuracy.
    """
    cm = np.asarray(metrics["confusion"], dtype=float)  # (classes, classes): rows true, columns predicted
    labels = list(metrics["labels"])
    keep = [labels.index(c) for c in classes] if classes else list(range(len(labels)))
    if name == "accuracy":
        return float(np.trace(cm) / cm.sum()) if cm.sum() else 0.0
    tp, true, predicted = np.diag(cm)[keep], cm.sum(axis=1)[keep], cm.sum(axis=0)[keep]
    if name == "micro_f1":
        denominator = true.sum() + predicted.sum()
        return float(2 * tp.sum() / denominator) if denominator else 0.0
    f1 = np.divide(2 * tp, true + predicted, out=np.zeros_like(tp), where=(true + predicted) > 0)
    if name == "macro_f1":
        return float(f1.mean()) if len(f1) else 0.0
    return float((f1 * true).sum() / true.sum()) if true.sum() else 0.0  # weighted by support


def mean_std(values) -> dict:
    """Mean and sample standard deviation (0 for a single value) of per-seed scores."""
    v = [float(x) for x in values]
    if not v:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    std = float(np.std(v, ddof=1)) if len(v) > 1 else 0.0
    return {"mean": float(np.mean(v)), "std": std, "n": len(v), "values": v}


def plot_confusion(metrics: dict, path: str | Path, title: str = "") -> Path:
    """Row-normalised confusion matrix as a PNG, with the counts written in each cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cm = np.asarray(metrics["confusion"], dtype=float)
    names = metrics["labels"]
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    size = 1.0 + 0.7 * len(names)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(len(names)):
        for j in range(len(names)):
            ax.text(j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if norm[i, j] > 0.5 else "black")
    ax.set_title(title or f"weighted F1 {metrics['weighted_f1']:.3f}")
    fig.colorbar(im, ax=ax, fraction=0.046)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
