"""Metrics on hand-computed examples: FNC score, per-class F1, macro-F1, confusion, the PNG plot."""

from __future__ import annotations

from pathlib import Path

import pytest

from models.metrics import classification_report, fnc_score, plot_confusion


def test_fnc_score_hand_computed() -> None:
    gold = ["agree", "disagree", "discuss", "unrelated", "unrelated", "agree"]
    pred = ["agree", "discuss", "unrelated", "unrelated", "agree", "agree"]
    # agree ok 1.0; disagree->discuss 0.25 (related right); discuss->unrelated 0; unrelated ok 0.25;
    # unrelated->agree 0; agree ok 1.0
    score, best = fnc_score(gold, pred)
    assert score == pytest.approx(2.5)
    assert best == pytest.approx(1.0 + 1.0 + 1.0 + 0.25 + 0.25 + 1.0)


def test_fnc_score_perfect_and_empty() -> None:
    gold = ["unrelated", "discuss", "disagree"]
    assert fnc_score(gold, gold) == (2.25, 2.25)
    assert fnc_score([], []) == (0.0, 0.0)
    with pytest.raises(ValueError):
        fnc_score(["agree"], [])


def test_classification_report_hand_computed() -> None:
    gold = ["a", "a", "b", "b", "c"]
    pred = ["a", "b", "b", "b", "a"]
    report = classification_report(gold, pred, ["a", "b", "c"])
    assert report.confusion == [[1, 1, 0], [0, 2, 0], [1, 0, 0]]
    a, b, c = report.per_class
    assert (a.precision, a.recall, a.f1, a.support) == pytest.approx((0.5, 0.5, 0.5, 2))
    assert (b.precision, b.recall, b.f1, b.support) == pytest.approx((2 / 3, 1.0, 0.8, 2))
    assert (c.precision, c.recall, c.f1, c.support) == pytest.approx((0.0, 0.0, 0.0, 1))
    assert report.macro_f1 == pytest.approx((0.5 + 0.8 + 0.0) / 3)
    assert report.accuracy == pytest.approx(3 / 5)
    assert report.f1("b") == pytest.approx(0.8)
    assert report.n == 5
    text = report.format()
    for token in ("precision", "macro-F1", "accuracy", "confusion", "a", "b", "c"):
        assert token in text
    assert report.to_dict()["confusion"] == report.confusion


def test_classification_report_default_labels_and_unknown_prediction() -> None:
    report = classification_report(["x", "y"], ["x", "z"])
    assert report.labels == ["x", "y", "z"]
    report = classification_report(["x", "y"], ["x", "z"], ["x", "y"])  # z outside labels: an error only
    assert report.confusion == [[1, 0], [0, 0]]
    assert report.accuracy == pytest.approx(0.5)
    with pytest.raises(ValueError):
        classification_report(["x"], ["x", "y"])


def test_plot_confusion_writes_png(tmp_path: Path) -> None:
    path = plot_confusion([[5, 1], [0, 3]], ["syria_conflict", "other"], tmp_path / "sub" / "cm.png", "test")
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(data) > 1000
    with pytest.raises(ValueError):
        plot_confusion([[1, 2]], ["a", "b"], tmp_path / "bad.png")
