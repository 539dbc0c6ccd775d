"""Evaluation metrics shared by the topic and stance evaluations.

- :func:`fnc_score`: the official FNC-1 score (weighted accuracy), with its maximum for the gold labels.
- :func:`classification_report`: per-class precision/recall/F1/support, macro-F1, accuracy and the
  confusion matrix, for any string labels.
- :func:`plot_confusion`: the confusion matrix as an annotated PNG (matplotlib, Agg backend).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

FNC_RELATED = ("agree", "disagree", "discuss")
FNC_UNRELATED = "unrelated"


def fnc_score(gold: Sequence[str], pred: Sequence[str]) -> tuple[float, float]:
    """The FNC-1 score and its maximum, as the official scorer computes them.

    Per pair: +0.25 when related-vs-unrelated is right (``agree``/``disagree``/``discuss`` all count as
    related); +0.75 more when the gold label is related and the predicted label equals it. The maximum is
    the score of the gold labels themselves (0.25 per unrelated pair, 1.0 per related pair).

    Returns:
        ``(score, max_score)``; report ``score / max_score``.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    score = 0.0
    best = 0.0
    for g, p in zip(gold, pred, strict=True):
        g_related = g in FNC_RELATED
        p_related = p in FNC_RELATED
        if g == p:
            score += 0.25
            if g_related:
                score += 0.75
        elif g_related and p_related:
            score += 0.25
        best += 1.0 if g_related else 0.25
    return score, best


@dataclass
class ClassReport:
    """Precision, recall, F1 and support of one class."""

    label: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class ClassificationReport:
    """The result of :func:`classification_report`.

    Attributes:
        labels: Class labels, in the order used by ``per_class`` and ``confusion``.
        per_class: One :class:`ClassReport` per label.
        macro_f1: Unweighted mean of per-class F1 over ``labels``.
        accuracy: Fraction of exact matches over all items.
        confusion: ``confusion[i][j]`` = items with gold ``labels[i]`` predicted as ``labels[j]``.
        n: Number of items.
        extra: Free-form extra metrics (e.g. FNC score) that callers want printed alongside.
    """

    labels: list[str]
    per_class: list[ClassReport]
    macro_f1: float
    accuracy: float
    confusion: list[list[int]]
    n: int
    extra: dict[str, float] = field(default_factory=dict)

    def f1(self, label: str) -> float:
        """F1 of one class."""
        return self.per_class[self.labels.index(label)].f1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable dict."""
        return asdict(self)

    def format(self, digits: int = 3) -> str:
        """A readable text table: per-class metrics, macro-F1, accuracy and the confusion matrix."""
        width = max([len(lbl) for lbl in self.labels] + [9])
        lines = [f"{'':<{width}}  precision  recall      f1  support"]
        for c in self.per_class:
            lines.append(
                f"{c.label:<{width}}  {c.precision:>9.{digits}f}  {c.recall:>6.{digits}f}  "
                f"{c.f1:>6.{digits}f}  {c.support:>7d}"
            )
        lines.append(f"{'macro-F1':<{width}}  {'':>9}  {'':>6}  {self.macro_f1:>6.{digits}f}  {self.n:>7d}")
        lines.append(f"{'accuracy':<{width}}  {'':>9}  {'':>6}  {self.accuracy:>6.{digits}f}  {self.n:>7d}")
        for key, value in self.extra.items():
            lines.append(f"{key:<{width}}  {value:.{digits}f}")
        lines.append("")
        lines.append("confusion (rows = gold, columns = predicted)")
        cell = max(
            [len(lbl) for lbl in self.labels] + [len(str(v)) for row in self.confusion for v in row] + [5]
        )
        lines.append(f"{'':<{width}}  " + "  ".join(f"{lbl:>{cell}}" for lbl in self.labels))
        for lbl, row in zip(self.labels, self.confusion, strict=True):
            lines.append(f"{lbl:<{width}}  " + "  ".join(f"{v:>{cell}d}" for v in row))
        return "\n".join(lines)


def _safe_div(a: float, b: float) -> float:
    return a / b if b else 0.0


def classification_report(
    gold: Sequence[str], pred: Sequence[str], labels: Sequence[str] | None = None
) -> ClassificationReport:
    """Per-class precision/recall/F1, macro-F1, accuracy and confusion matrix.

    Args:
        gold: Gold labels.
        pred: Predicted labels, same length.
        labels: The classes to report, in order; defaults to the sorted union of gold and predicted
            labels. Predictions outside ``labels`` count as errors (they add to no column).

    Returns:
        A :class:`ClassificationReport`. Classes with no support and no predictions get F1 0.
    """
    if len(gold) != len(pred):
        raise ValueError(f"{len(gold)} gold labels but {len(pred)} predictions")
    labels = list(labels) if labels is not None else sorted(set(gold) | set(pred))
    index = {lbl: i for i, lbl in enumerate(labels)}
    k = len(labels)
    confusion = [[0] * k for _ in range(k)]
    correct = 0
    for g, p in zip(gold, pred, strict=True):
        if g == p:
            correct += 1
        if g in index and p in index:
            confusion[index[g]][index[p]] += 1
    per_class = []
    for i, lbl in enumerate(labels):
        tp = confusion[i][i]
        support = sum(1 for g in gold if g == lbl)
        predicted = sum(1 for p in pred if p == lbl)
        precision = _safe_div(tp, predicted)
        recall = _safe_div(tp, support)
        f1 = _safe_div(2 * precision * recall, precision + recall)
        per_class.append(ClassReport(lbl, precision, recall, f1, support))
    macro = _safe_div(sum(c.f1 for c in per_class), len(per_class))
    return ClassificationReport(
        labels=labels,
        per_class=per_class,
        macro_f1=macro,
        accuracy=_safe_div(correct, len(gold)),
        confusion=confusion,
        n=len(gold),
    )


def plot_confusion(
    matrix: Sequence[Sequence[int]], labels: Sequence[str], path: str | Path, title: str = "Confusion matrix"
) -> Path:
    """Write the confusion matrix as a PNG heatmap with the counts written in each cell.

    Rows are gold labels, columns predicted labels. Colours are normalised per row (recall), so rare
    classes stay readable; the numbers are raw counts.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    data = np.asarray(matrix, dtype=float)
    if data.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix shape {data.shape} does not match {len(labels)} labels")
    row_sums = data.sum(axis=1, keepdims=True)
    norm = np.divide(data, row_sums, out=np.zeros_like(data), where=row_sums > 0)
    size = max(4.0, 0.9 * len(labels) + 2.0)
    fig, ax = plt.subplots(figsize=(size + 1.0, size))
    try:
        image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
        ax.set_xticks(range(len(labels)), labels=list(labels), rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels=list(labels))
        ax.set_xlabel("predicted")
        ax.set_ylabel("gold")
        ax.set_title(title)
        for i in range(len(labels)):
            for j in range(len(labels)):
                ax.text(
                    j,
                    i,
                    f"{int(data[i, j])}",
                    ha="center",
                    va="center",
                    color="white" if norm[i, j] > 0.5 else "black",
                    fontsize=10,
                )
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="row fraction (recall)")
        fig.tight_layout()
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
    finally:
        plt.close(fig)
    return path
