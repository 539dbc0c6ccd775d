"""Topics on a flood of real feed items: flag rates per topic and language, and precision and recall
on the part of it that carries labels (``newsflow eval topics --flood``).

A real feed stream is thousands of items a day of which a handful are on a watched topic, so a topic
model is judged by what it flags there. The flag rate is measured on the whole pool (or a seeded
sample); precision and recall on its labelled part; and when the labels say how they were drawn
(``drawn``: ``scan`` for items a broad multilingual keyword scan found, ``random`` for a uniform
sample of the rest), the pool's true rate of each topic is estimated as the scan's positives plus the
random sample's rate times the unscanned remainder, so the flag rate can be held against it.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from models.taxonomy import OTHER

if TYPE_CHECKING:
    from models.topic_labeller import TopicLabeller

#: Items labelled per call (bounded memory on a 50k pool).
CHUNK = 256


@dataclass
class TopicCounts:
    """Per-topic counts of a multi-label evaluation on a flood: gold, flagged, right."""

    gold: int = 0
    flagged: int = 0
    right: int = 0

    @property
    def precision(self) -> float:
        return self.right / self.flagged if self.flagged else 0.0

    @property
    def recall(self) -> float:
        return self.right / self.gold if self.gold else 0.0


@dataclass
class FloodReport:
    """Precision and recall per topic on labelled flood items, overall and per language."""

    topics: list[str]
    items: int = 0
    overall: dict[str, TopicCounts] = field(default_factory=dict)
    by_language: dict[str, dict[str, TopicCounts]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)

    def add(self, language: str | None, gold: set[str], predicted: set[str]) -> None:
        lang_key = language or "?"
        self.items += 1
        self.sizes[lang_key] = self.sizes.get(lang_key, 0) + 1
        for topic in self.topics:
            for table in (self.overall, self.by_language.setdefault(lang_key, {})):
                counts = table.setdefault(topic, TopicCounts())
                counts.gold += topic in gold
                counts.flagged += topic in predicted
                counts.right += topic in gold and topic in predicted

    def format(self) -> str:
        lines = [f"{'':<22}  {'gold':>5}  {'flagged':>7}  {'right':>5}  precision  recall"]
        for topic in self.topics:
            c = self.overall.get(topic, TopicCounts())
            lines.append(
                f"{topic:<22}  {c.gold:>5}  {c.flagged:>7}  {c.right:>5}  "
                f"{c.precision:>9.3f}  {c.recall:>6.3f}"
            )
        lines.append(f"{self.items} labelled items; per language (items: topic right/flagged/gold):")
        for language in sorted(self.by_language, key=lambda k: -self.sizes[k]):
            cells = ", ".join(
                f"{t} {c.right}/{c.flagged}/{c.gold}"
                for t, c in self.by_language[language].items()
                if c.gold or c.flagged
            )
            lines.append(
                f"  {language:<4} {self.sizes[language]:>5}: {cells or 'nothing flagged, nothing to find'}"
            )
        return "\n".join(lines)


@dataclass
class FloodEvaluation:
    """What ``eval topics --flood`` prints and writes."""

    topics: list[str]
    pool: int
    scored: int
    flagged: dict[str, int] = field(default_factory=dict)
    by_language: dict[str, dict[str, int]] = field(default_factory=dict)
    sizes: dict[str, int] = field(default_factory=dict)
    methods: dict[str, int] = field(default_factory=dict)
    labelled: FloodReport | None = None
    labelled_sure: FloodReport | None = None
    true_rate: dict[str, tuple[float, float, float]] = field(default_factory=dict)
    lines: list[dict[str, Any]] = field(default_factory=list)

    def rate(self, topic: str) -> float:
        return self.flagged.get(topic, 0) / self.scored if self.scored else 0.0

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "pool": self.pool,
            "scored": self.scored,
            "flagged": self.flagged,
            "flag_rate": {t: round(self.rate(t), 5) for t in self.topics},
            "flagged_by_language": self.by_language,
            "items_by_language": self.sizes,
            "methods": self.methods,
            "estimated_true_rate": {t: [round(x, 5) for x in r] for t, r in self.true_rate.items()},
        }
        for name, report in (("labelled", self.labelled), ("labelled_sure", self.labelled_sure)):
            if report is not None:
                data[name] = {
                    t: {
                        "gold": c.gold,
                        "flagged": c.flagged,
                        "right": c.right,
                        "precision": round(c.precision, 4),
                        "recall": round(c.recall, 4),
                    }
                    for t, c in report.overall.items()
                }
        return data

    def format(self) -> str:
        lines = [f"flood: {self.scored} of {self.pool} items scored; methods {self.methods}"]
        for topic in self.topics:
            line = f"  {topic:<22} flagged {self.flagged.get(topic, 0):>6} ({self.rate(topic):.2%})"
            if topic in self.true_rate:
                estimate, low, high = self.true_rate[topic]
                ratio = self.rate(topic) / estimate if estimate else float("inf")
                line += (
                    f"; estimated true rate {estimate:.2%} (95% interval {low:.2%}-{high:.2%}); "
                    f"flag rate {ratio:.2f}x the estimate"
                )
            lines.append(line)
        lines.append("  flag rate per language (items: topic flagged):")
        for language in sorted(self.sizes, key=lambda k: -self.sizes[k]):
            n = self.sizes[language]
            cells = ", ".join(
                f"{t} {k} ({k / n:.1%})" for t, k in self.by_language.get(language, {}).items() if k
            )
            lines.append(f"    {language:<4} {n:>6}: {cells or 'none flagged'}")
        if self.labelled is not None:
            lines.append("labelled part:")
            lines.append(self.labelled.format())
        if self.labelled_sure is not None:
            lines.append("labelled part, items the labellers were sure of:")
            lines.append(self.labelled_sure.format().splitlines()[0])
            lines.extend(self.labelled_sure.format().splitlines()[1 : 1 + len(self.topics)])
        return "\n".join(lines)


def read_jsonl(path: Path | str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def evaluate_flood(
    labeller: TopicLabeller,
    items: Path | str,
    labels: Path | str | None = None,
    sample: int | None = None,
    seed: int = 13,
    on_progress: Callable[[int, int], Any] | None = None,
) -> FloodEvaluation:
    """Label a pool of feed items (all of it, or a seeded ``sample`` plus every labelled item) and count.

    ``items`` lines: ``{"id", "title", "text", "language"}``; ``labels`` lines: ``{"id", "labels",
    "drawn", "sure"}``. ``on_progress(done, total)`` is called after each chunk of items.
    """
    from models.topic_labeller import ArticleText

    pool = read_jsonl(items)
    gold = {str(row["id"]): row for row in read_jsonl(labels)} if labels else {}
    chosen = pool
    if sample is not None and sample < len(pool):
        rng = random.Random(seed)
        chosen = [row for row in pool if str(row.get("id")) in gold]
        rest = [row for row in pool if str(row.get("id")) not in gold]
        chosen += rng.sample(rest, max(0, sample - len(chosen)))
    topics = list(labeller.watched)
    result = FloodEvaluation(topics, len(pool), len(chosen))
    for start in range(0, len(chosen), CHUNK):
        rows = chosen[start : start + CHUNK]
        texts = [ArticleText(r.get("title") or "", r.get("text") or "", r.get("language")) for r in rows]
        for row, labelled in zip(rows, labeller.label(texts), strict=True):
            language = row.get("language") or labelled.language or "?"
            predicted = [t for t, _ in labelled.topics if t != OTHER]
            result.sizes[language] = result.sizes.get(language, 0) + 1
            result.methods[labelled.method] = result.methods.get(labelled.method, 0) + 1
            for topic in predicted:
                result.flagged[topic] = result.flagged.get(topic, 0) + 1
                per = result.by_language.setdefault(language, {})
                per[topic] = per.get(topic, 0) + 1
            result.lines.append(
                {
                    "id": row.get("id"),
                    "language": language,
                    "method": labelled.method,
                    "topics": predicted,
                    "evidence": labelled.evidence,
                }
            )
        if on_progress is not None:
            on_progress(min(start + CHUNK, len(chosen)), len(chosen))
    if gold:
        predicted_by_id = {str(line["id"]): set(line["topics"]) for line in result.lines}
        result.labelled, result.labelled_sure = FloodReport(topics), FloodReport(topics)
        for item_id, row in gold.items():
            if item_id not in predicted_by_id:
                continue
            item_gold = set(row["labels"]) - {OTHER}
            language = next(line["language"] for line in result.lines if str(line["id"]) == item_id)
            result.labelled.add(language, item_gold, predicted_by_id[item_id])
            if row.get("sure", True):
                result.labelled_sure.add(language, item_gold, predicted_by_id[item_id])
        result.true_rate = estimate_true_rate(topics, list(gold.values()), len(pool))
    return result


def estimate_true_rate(
    topics: Sequence[str], labels: Sequence[dict[str, Any]], pool: int
) -> dict[str, tuple[float, float, float]]:
    """Each topic's share of the pool: scan positives + the random sample's rate x the unscanned rest.

    Returns topic -> ``(estimate, low, high)``, the bounds from the 95% Wilson interval of the random
    sample's rate (a few positives in a sample of a thousand leave a wide interval). Needs labels that
    say how they were drawn (``drawn``: ``scan`` or ``random``); empty otherwise.
    """
    scan = [row for row in labels if row.get("drawn") == "scan"]
    drawn_at_random = [row for row in labels if row.get("drawn") == "random"]
    if not scan or not drawn_at_random:
        return {}
    rest = pool - len(scan)
    n = len(drawn_at_random)
    out = {}
    for topic in topics:
        in_scan = sum(topic in row["labels"] for row in scan)
        hits = sum(topic in row["labels"] for row in drawn_at_random)
        low, high = _wilson(hits, n)
        out[topic] = tuple((in_scan + rate * rest) / pool for rate in (hits / n, low, high))
    return out  # type: ignore[return-value]


def _wilson(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The 95% Wilson score interval of a binomial proportion."""
    p = hits / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
