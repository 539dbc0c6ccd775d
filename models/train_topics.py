"""Train and evaluate the topic head (``newsflow train topics`` / ``newsflow eval topics``).

Data: JSON Lines ``{"id", "title", "text", "label"}`` (or ``"labels": [...]`` for multi-label), for
example ``../shared/data/topics/dev.jsonl``. Each article is used in several *views* so the head
learns from what a feed really delivers: the full title + text, the title alone, and the title
with a short lead (a typical RSS summary). Features are the encoder embedding plus the similarity
to each taxonomy topic's prototypes (``models.topics``); the taxonomy's own examples stay
prototypes and are never training rows, so prototype features do not leak.

Recipe: one L2-regularised logistic regression per watched topic (class-balanced), thresholds
chosen on out-of-fold probabilities to maximise F-beta (beta < 1 favours precision: on a real feed
stream most items are unrelated), evaluation by k-fold cross-validation grouped by article.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from models import language as lang
from models.anchors import matcher_for
from models.encoder import Encoder
from models.flood_eval import FloodReport
from models.metrics import ClassificationReport, classification_report
from models.taxonomy import OTHER, Taxonomy
from models.text import article_lead
from models.topic_labeller import ArticleText, TopicLabeller
from models.topics import TopicClassifier, TopicHead, article_embeddings
from newsflow.errors import ConfigError

log = logging.getLogger(__name__)

SHORT_LEAD_CHARS = 300
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass(frozen=True)
class LabelledArticle:
    """A labelled article. ``group`` (the outlet) keeps related items in one cross-validation fold."""

    id: str
    title: str
    text: str
    labels: tuple[str, ...]
    language: str | None = None
    group: str | None = None
    drawn: str | None = None
    sure: bool = True


def read_labelled(path: Path | str) -> list[LabelledArticle]:
    rows = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ConfigError(f"{path}:{n}: not JSON ({exc})") from exc
            labels = data.get("labels") or ([data["label"]] if data.get("label") else [])
            if not labels:
                raise ConfigError(f"{path}:{n}: needs 'label' or 'labels'")
            rows.append(
                LabelledArticle(
                    str(data.get("id", n)),
                    data.get("title", ""),
                    data.get("text", ""),
                    tuple(labels),
                    language=data.get("language"),
                    group=data.get("outlet"),
                )
            )
    return rows


def read_flood(
    items: Path | str, labels: Path | str | None = None
) -> tuple[list[dict[str, Any]], list[LabelledArticle]]:
    """The flood pool (``items.jsonl`` lines) and its labelled part (``labels`` lines joined by id).

    Labels lines are ``{"id", "labels": [...], "drawn": "scan"|"random", "sure": bool}``
    (``models/data/flood_labels.jsonl``: how they were drawn and labelled is in ``models/data/README.md``).
    """
    pool = []
    with open(items, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if line.strip():
                try:
                    pool.append(json.loads(line))
                except json.JSONDecodeError as exc:
                    raise ConfigError(f"{items}:{n}: not JSON ({exc})") from exc
    if labels is None:
        return pool, []
    by_id = {str(row.get("id")): row for row in pool}
    labelled = []
    for n, line in enumerate(Path(labels).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        data = json.loads(line)
        row = by_id.get(str(data["id"]))
        if row is None:
            raise ConfigError(f"{labels}:{n}: id {data['id']} is not in {items}")
        labelled.append(
            LabelledArticle(
                str(data["id"]),
                row.get("title") or "",
                row.get("text") or "",
                tuple(data["labels"]),
                language=row.get("language"),
                group=row.get("outlet"),
                drawn=data.get("drawn"),
                sure=bool(data.get("sure", True)),
            )
        )
    return pool, labelled


def short_lead(text: str, limit: int = SHORT_LEAD_CHARS) -> str:
    """The first sentences of ``text`` up to about ``limit`` characters (an RSS-summary-sized lead)."""
    out = ""
    for sentence in _SENTENCE_END.split(text.strip()):
        if out and len(out) + len(sentence) > limit:
            break
        out = f"{out} {sentence}".strip()
    return out[: limit * 2]


#: Training views of an article, by index: what a feed or a page delivers, and a body passage.
VIEWS = ("full", "title", "title+lead", "lead")


def views(article: LabelledArticle) -> list[tuple[int, tuple[str, str]]]:
    """Training views of one article as ``(view index, (title, body))`` (see :data:`VIEWS`).

    The lead-only view (a run of body sentences without the title) is what the labeller scores when it
    reads the passages of a long body.
    """
    out = [(0, (article.title, article.text))]
    if article.title:
        out.append((1, (article.title, "")))
        out.append((2, (article.title, short_lead(article.text))))
    if article.title and article.text:
        out.append((3, ("", short_lead(article.text))))
    return out


def fit_head(
    features: np.ndarray,
    targets: np.ndarray,
    labels: Sequence[str],
    c: float,
) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.linear_model import LogisticRegression

    coefs, intercepts = [], []
    for j in range(len(labels)):
        model = LogisticRegression(C=c, class_weight="balanced", max_iter=2000)
        model.fit(features, targets[:, j])
        coefs.append(model.coef_[0])
        intercepts.append(model.intercept_[0])
    return np.asarray(coefs, dtype=np.float32), np.asarray(intercepts, dtype=np.float32)


def best_threshold(scores: np.ndarray, truth: np.ndarray, beta: float) -> float:
    """The threshold maximising F-beta on (scores, truth); ties go to the higher threshold."""
    best, best_f = 0.5, -1.0
    for t in np.linspace(0.05, 0.95, 91):
        pred = scores >= t
        tp = float((pred & truth).sum())
        fp = float((pred & ~truth).sum())
        fn = float((~pred & truth).sum())
        denom = (1 + beta**2) * tp + beta**2 * fn + fp
        f = (1 + beta**2) * tp / denom if denom else 0.0
        if f >= best_f:
            best, best_f = float(t), f
    return best


def _primary(scores: np.ndarray, thresholds: np.ndarray, watched: Sequence[str]) -> list[str]:
    out = []
    for row in scores:
        passing = [(s, w) for s, w, t in zip(row, watched, thresholds, strict=True) if s >= t]
        out.append(max(passing)[1] if passing else OTHER)
    return out


@dataclass
class TopicTrainingResult:
    head: TopicHead
    cv_full: ClassificationReport
    cv_short: ClassificationReport
    cv_title: ClassificationReport
    cv_lead: ClassificationReport | None = None
    flood_flagged: list[tuple[str, list[str]]] = field(default_factory=list)
    flood_size: int = 0
    flood_labelled: FloodReport | None = None
    flood_labelled_sure: FloodReport | None = None
    flood_predictions: dict[str, set[str]] = field(default_factory=dict)

    @property
    def flood_rate(self) -> float | None:
        return len(self.flood_flagged) / self.flood_size if self.flood_size else None


# Headlines matching this are not presumed unrelated: they may be on a watched topic.
ON_TOPIC_HINTS = re.compile(
    r"syria|assad|damascus|aleppo|idlib|raqqa|kobani|kurd|isis|isil|islamic state|daesh|jihad|"
    r"russia|putin|kremlin|moscow|elect|vote|voter|ballot|campaign|hack|troll|propaganda|disinform",
    re.IGNORECASE,
)


def flood_pool_from_fnc(stances_csv: Path | str) -> list[str]:
    """Unique FNC-1 headlines presumed unrelated to the watched topics: a pool of viral-news items.

    Headlines that mention anything near the watched topics are dropped (they may be on topic),
    so what remains stands for the flood of unrelated items a real feed stream carries.
    """
    import csv

    with open(stances_csv, encoding="utf-8-sig", newline="") as fh:
        headlines = sorted({row["Headline"].strip() for row in csv.DictReader(fh)})
    return [h for h in headlines if h and not ON_TOPIC_HINTS.search(h)]


def _fold_of_group(group: str | None, folds: int, seed: int) -> int:
    digest = hashlib.sha256(f"{seed}:{group or ''}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % folds


def train_topics(
    data: Sequence[LabelledArticle],
    encoder: Encoder,
    taxonomy: Taxonomy,
    extra: Sequence[LabelledArticle] = (),
    flood: Sequence[str] = (),
    flood_labelled: Sequence[LabelledArticle] = (),
    languages: Sequence[str] = ("en",),
    folds: int = 5,
    c: float = 4.0,
    beta: float = 0.7,
    seed: int = 13,
    log_fn: Callable[[str], Any] = log.info,
) -> TopicTrainingResult:
    """Cross-validate on ``data`` and the labelled flood, then fit the head on all of it.

    ``extra`` articles are training-only: in every fold they are added to the training part and never
    scored, so the cross-validated figures stay about ``data`` alone. ``flood`` is a pool of short
    items presumed unrelated: half of it (seeded) joins the training data as ``other``, the other half
    is held out to measure the false-positive rate of the final head on a flood of unrelated news.
    ``flood_labelled`` are real feed items labelled by hand: those in a language the encoder covers
    (``languages``) are training data and are scored out of fold, their folds grouped by outlet (so
    every score is for outlets the fold never saw); the others measure the anchors, which decide alone
    in those languages. Thresholds are chosen on out-of-fold scores *after* the anchor gate, as the
    labeller applies it.
    """
    classifier = TopicClassifier(encoder, taxonomy, head=None)
    matcher = matcher_for(taxonomy)
    watched = classifier.watched
    unknown = {label for a in [*data, *extra, *flood_labelled] for label in a.labels} - set(taxonomy.labels)
    if unknown:
        raise ConfigError(f"labels {sorted(unknown)} are not topics of the taxonomy {taxonomy.labels}")
    covered = [a for a in flood_labelled if lang.covers(languages, a.language)]
    uncovered = [a for a in flood_labelled if not lang.covers(languages, a.language)]
    order = np.random.default_rng(seed).permutation(len(flood))
    flood_train = [flood[i] for i in order[: len(flood) // 2]]
    flood_test = [flood[i] for i in order[len(flood) // 2 :]]
    negatives = [LabelledArticle(f"flood-{i}", text, "", (OTHER,)) for i, text in enumerate(flood_train)]
    everything = [*data, *extra, *negatives, *covered]
    first_covered = len(data) + len(extra) + len(negatives)
    view_items: list[tuple[str, str]] = []
    owner: list[int] = []
    kind: list[int] = []
    for i, article in enumerate(everything):
        article_views = views(article) if i < first_covered else [(0, (article.title, article.text))]
        for k, item in article_views:
            view_items.append(item)
            owner.append(i)
            kind.append(k)
    log_fn(
        f"embedding {len(view_items)} views of {len(data)} articles (+{len(extra)} training-only, "
        f"{len(covered)} labelled flood items)"
    )
    feats = classifier.features(article_embeddings(encoder, view_items))
    owner_a, kind_a = np.asarray(owner), np.asarray(kind)
    truth = np.asarray([[w in everything[i].labels for w in watched] for i in owner], dtype=bool)
    gate = np.ones_like(truth)
    gated_topics = [j for j, w in enumerate(watched) if w in matcher.queries and matcher.queries[w].gate]
    if gated_topics:
        for row, (title, body) in enumerate(view_items):
            passed = matcher.gated(title, body)
            for j in gated_topics:
                gate[row, j] = watched[j] in passed
    scored = (owner_a < len(data)) | (owner_a >= first_covered)

    rng = np.random.default_rng(seed)
    fold_of = np.full(len(everything), -1, dtype=int)  # -1: training-only, in every training part
    by_label: dict[str, list[int]] = {}
    for i, article in enumerate(data):
        by_label.setdefault(article.labels[0], []).append(i)
    for members in by_label.values():
        perm = rng.permutation(members)
        for rank, member in enumerate(perm.tolist()):
            fold_of[member] = rank % folds
    for i in range(first_covered, len(everything)):
        fold_of[i] = _fold_of_group(everything[i].group, folds, seed)
    oof = np.zeros((len(view_items), len(watched)), dtype=np.float32)
    for f in range(folds):
        test = fold_of[owner_a] == f
        coef, intercept = fit_head(feats[~test], truth[~test], watched, c)
        oof[test] = 1.0 / (1.0 + np.exp(-(feats[test] @ coef.T + intercept)))
    # abstain floor: the 1st percentile of the watched-topic prototype similarity of positive views;
    # an item further from every watched topic than that is noise to the head (applied as the labeller does)
    closeness = classifier.watched_similarity(feats[:, encoder.info.dim :])
    positives = truth.any(axis=1)
    abstain_below = float(np.percentile(closeness[positives], 1)) if positives.any() else None
    near = closeness >= (abstain_below if abstain_below is not None else -np.inf)
    gated = oof * gate * near[:, None]
    thresholds = np.asarray(
        [best_threshold(gated[scored, j], truth[scored, j], beta) for j in range(len(watched))]
    )

    gold = [a.labels[0] for a in data]
    reports = []
    for k in range(len(VIEWS)):
        rows = (kind_a == k) & (owner_a < len(data))
        pred = _primary(gated[rows], thresholds, watched)
        g = [gold[i] for i in owner_a[rows]]
        # A multi-label article counts as right when the primary topic is any of its labels.
        g = [p if p in data[i].labels else gi for p, gi, i in zip(pred, g, owner_a[rows], strict=True)]
        reports.append(classification_report(g, pred, taxonomy.labels))
    log_fn(
        f"cross-validated macro-F1 (after the anchor gate): full {reports[0].macro_f1:.3f}, "
        f"title+lead {reports[2].macro_f1:.3f}, title only {reports[1].macro_f1:.3f}, "
        f"lead only {reports[3].macro_f1:.3f}"
    )
    flood_reports: list[FloodReport] = []
    predicted: dict[str, set[str]] = {}
    if flood_labelled:
        for row in np.flatnonzero(owner_a >= first_covered).tolist():
            article = everything[int(owner_a[row])]
            predicted[article.id] = {
                w for w, s, t in zip(watched, gated[row], thresholds, strict=True) if s >= t
            }
        for article in uncovered:  # anchors decide alone (title and lead, as the labeller reads them)
            predicted[article.id] = set(matcher.match(article.title, article_lead(article.text)))
        for sure_only in (False, True):
            report = FloodReport(list(watched))
            for article in flood_labelled:
                if sure_only and not article.sure:
                    continue
                report.add(article.language, set(article.labels) - {OTHER}, predicted[article.id])
            flood_reports.append(report)
        log_fn(f"labelled flood, out of fold by outlet (model + gate; anchors alone outside {languages}):")
        log_fn(flood_reports[0].format())
    coef, intercept = fit_head(feats, truth, watched, c)
    flagged: list[tuple[str, list[str]]] = []
    if flood_test:
        flood_feats = classifier.features(article_embeddings(encoder, [(text, "") for text in flood_test]))
        probs = 1.0 / (1.0 + np.exp(-(flood_feats @ coef.T + intercept)))
        for text, row in zip(flood_test, probs, strict=True):
            passed = matcher.gated(text, "")
            hits = [
                w
                for w, p, t in zip(watched, row, thresholds, strict=True)
                if p >= t and (w not in matcher.queries or w in passed)
            ]
            if hits:
                flagged.append((text, hits))
        log_fn(
            f"flood: {len(flagged)} of {len(flood_test)} held-out unrelated items flagged "
            f"({len(flagged) / len(flood_test):.1%})"
        )
    metrics: dict[str, Any] = {
        "cv_folds": folds,
        "cv_macro_f1_full": round(reports[0].macro_f1, 4),
        "cv_macro_f1_title_lead": round(reports[2].macro_f1, 4),
        "cv_macro_f1_title": round(reports[1].macro_f1, 4),
        "cv_macro_f1_lead": round(reports[3].macro_f1, 4),
        "train_articles": len(data),
        "extra_articles": len(extra),
        "flood_train": len(flood_train),
        "flood_heldout": len(flood_test),
        "flood_false_positive_rate": round(len(flagged) / len(flood_test), 4) if flood_test else None,
        "flood_labelled": len(flood_labelled),
        "flood_labelled_training": len(covered),
        "recipe": {
            "C": c,
            "beta": beta,
            "seed": seed,
            "views": list(VIEWS),
            "embedding": "normalize(title + lead), lead = 600 chars of whole sentences",
            "max_tokens": encoder.max_tokens,
            "languages": list(languages),
            "thresholds": "max F-beta on out-of-fold scores after the anchor gate (dev + labelled flood)",
        },
    }
    if flood_reports:
        metrics["flood_labelled_cv"] = {
            t: {"precision": round(c.precision, 4), "recall": round(c.recall, 4), "gold": c.gold}
            for t, c in flood_reports[0].overall.items()
        }
    head = TopicHead(
        labels=list(watched),
        coef=coef,
        intercept=intercept,
        thresholds={w: round(float(t), 3) for w, t in zip(watched, thresholds, strict=True)},
        encoder_version=encoder.info.version,
        taxonomy=taxonomy.fingerprint(),
        metrics=metrics,
        abstain_below=None if abstain_below is None else round(abstain_below, 4),
    )
    return TopicTrainingResult(
        head,
        reports[0],
        reports[2],
        reports[1],
        reports[3],
        flagged,
        len(flood_test),
        flood_reports[0] if flood_reports else None,
        flood_reports[1] if flood_reports else None,
        predicted if flood_labelled else {},
    )


def predict_topics(labeller: TopicLabeller, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``newsflow predict topics`` output lines for input lines ``{"id", "title", "text"[, "language"]}``.

    Each line: ``id``, ``primary_topic``, ``topics`` (the assigned ones, with their evidence), ``scores``
    (every topic's raw score), ``method`` (how they were decided) and ``language``.
    """
    texts = [ArticleText(r.get("title") or "", r.get("text") or "", r.get("language") or None) for r in rows]
    out = []
    for r, p in zip(rows, labeller.label(texts), strict=True):
        topics = [{"label": t, "score": s, "evidence": p.evidence.get(t)} for t, s in p.topics]
        out.append(
            {
                "id": r.get("id"),
                "primary_topic": p.primary_topic,
                "topics": topics,
                "scores": p.scores,
                "method": p.method,
                "language": p.language,
            }
        )
    return out
