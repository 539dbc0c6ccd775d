"""Multi-label topic classification: taxonomy prototypes plus an optional trained head.

An article is embedded as the normalised sum of its title's and its lead's embeddings (see
:func:`article_embeddings`; the stance model reuses both). Its features are the
embedding and its similarity to each topic's prototypes (the mean of its top-k most similar
example sentences and description). Without a trained head a watched topic's score is a logistic
of the margin between its prototype similarity and the ``other`` prototypes'. With a head
(``newsflow train topics``) each watched topic has a logistic-regression probability over those
features and a threshold calibrated by cross-validation. ``other`` is never an argmax: it is
assigned when no watched topic passes its threshold.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from models.encoder import Encoder
from models.taxonomy import OTHER, Taxonomy
from models.text import article_lead, clean_text
from newsflow.errors import ModelError

log = logging.getLogger(__name__)

ARTIFACTS = Path(__file__).resolve().parent / "artifacts"
DEFAULT_HEAD = ARTIFACTS / "topic-head" / "head.json"
TOP_K = 3
PROTOTYPE_SCALE = 20.0  # logistic slope on the prototype margin (cosine units) without a head


def topic_text(title: str, body: str) -> str:
    """The headline, then the body, as one text: what the zero-shot and classifier backends read (the
    embedding backend embeds title and lead separately, see :func:`article_embeddings`)."""
    title = (title or "").strip()
    body = (body or "").strip()
    if title and body:
        return f"{title}.\n{body}" if title[-1:] not in ".!?" else f"{title}\n{body}"
    return title or body


@dataclass(frozen=True)
class TopicPrediction:
    primary_topic: str
    topics: list[tuple[str, float]]
    scores: dict[str, float]


class TopicModel(Protocol):
    """What every topic backend offers (see :func:`models.topic_backends.build_topic_classifier`)."""

    taxonomy: Taxonomy
    labels: list[str]

    @property
    def lineage(self) -> dict[str, str]: ...

    def threshold(self, topic_id: str) -> float:
        """The score at which a watched topic is assigned."""
        ...

    def classify(self, texts: Sequence[str]) -> list[TopicPrediction]: ...

    def classify_articles(self, articles: Sequence[tuple[str, str]]) -> list[TopicPrediction]:
        """Predictions for ``(title, body)`` pairs: what the pipeline calls."""
        ...


def decide(
    watched: Sequence[str],
    scores: np.ndarray,
    thresholds: np.ndarray,
    other: np.ndarray | None = None,
) -> list[TopicPrediction]:
    """Predictions from (n, len(watched)) scores: every watched topic whose score reaches its threshold,
    best first, else ``other``. ``other``'s raw score is given, or 1 - the best watched score."""
    if other is None:
        other = 1.0 - scores.max(axis=1) if scores.shape[1] else np.ones(len(scores))
    out = []
    for row, other_score in zip(scores, other.tolist(), strict=True):
        assigned = [(t, float(s)) for t, s, th in zip(watched, row, thresholds, strict=True) if s >= th]
        assigned.sort(key=lambda pair: -pair[1])
        raw = {t: round(float(s), 4) for t, s in zip(watched, row, strict=True)}
        raw[OTHER] = round(other_score, 4)
        if not assigned:
            assigned = [(OTHER, other_score)]
        out.append(TopicPrediction(assigned[0][0], [(t, round(s, 4)) for t, s in assigned], raw))
    return out


@dataclass
class TopicHead:
    """Per-topic logistic regression over [embedding, prototype similarities], with thresholds."""

    labels: list[str]
    coef: np.ndarray
    intercept: np.ndarray
    thresholds: dict[str, float]
    encoder_version: str
    taxonomy: str
    metrics: dict[str, Any] = field(default_factory=dict)
    name: str = "topic-head"
    abstain_below: float | None = None

    @property
    def version(self) -> str:
        import hashlib

        return hashlib.sha256(self.coef.tobytes() + self.intercept.tobytes()).hexdigest()[:12]

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        logits = features @ self.coef.T + self.intercept
        return 1.0 / (1.0 + np.exp(-logits))

    def save(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "name": self.name,
            "labels": self.labels,
            "coef": np.round(self.coef, 6).tolist(),
            "intercept": np.round(self.intercept, 6).tolist(),
            "thresholds": self.thresholds,
            "encoder_version": self.encoder_version,
            "taxonomy": self.taxonomy,
            "abstain_below": self.abstain_below,
            "metrics": self.metrics,
        }
        path.write_text(json.dumps(data, indent=1))

    @classmethod
    def load(cls, path: Path) -> TopicHead:
        try:
            data = json.loads(path.read_text())
            return cls(
                labels=list(data["labels"]),
                coef=np.asarray(data["coef"], dtype=np.float32),
                intercept=np.asarray(data["intercept"], dtype=np.float32),
                thresholds={k: float(v) for k, v in data["thresholds"].items()},
                encoder_version=str(data["encoder_version"]),
                taxonomy=str(data["taxonomy"]),
                metrics=dict(data.get("metrics", {})),
                name=str(data.get("name", "topic-head")),
                abstain_below=None if data.get("abstain_below") is None else float(data["abstain_below"]),
            )
        except (OSError, ValueError, KeyError) as exc:
            raise ModelError(
                f"cannot read topic head {path}: {exc}; retrain with 'newsflow train topics'"
            ) from exc


class TopicClassifier:
    """Scores articles against the taxonomy; see the module docstring."""

    def __init__(self, encoder: Encoder, taxonomy: Taxonomy, head: TopicHead | None = None) -> None:
        self.encoder = encoder
        self.taxonomy = taxonomy
        self.labels = taxonomy.labels
        self.watched = [t.id for t in taxonomy.watched]
        self._prototypes = [encoder.encode([t.description, *t.examples]) for t in taxonomy.topics]
        if head is not None:
            if head.labels != self.watched:
                log.warning(
                    "topic head %s was trained for topics %s but the taxonomy has %s; using prototypes only",
                    head.name,
                    head.labels,
                    self.watched,
                )
                head = None
            elif head.coef.shape[1] != self.feature_dim:
                raise ModelError(
                    f"topic head expects {head.coef.shape[1]} features, the encoder gives "
                    f"{self.feature_dim}; retrain it with 'newsflow train topics'"
                )
            elif head.encoder_version != encoder.info.version:
                log.warning(
                    "topic head was trained with encoder %s, running %s",
                    head.encoder_version,
                    encoder.info.version,
                )
        self.head = head

    @property
    def feature_dim(self) -> int:
        return self.encoder.info.dim + len(self.labels)

    @property
    def lineage(self) -> dict[str, str]:
        if self.head is not None:
            return {"topics": f"{self.head.name}@{self.head.version}", "encoder": self.encoder.label}
        return {"topics": f"prototypes@{self.taxonomy.fingerprint()}", "encoder": self.encoder.label}

    def prototype_similarity(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, len(labels)) mean of the top-k cosine similarities to each topic's prototypes."""
        columns = []
        for protos in self._prototypes:
            sims = embeddings @ protos.T
            k = min(TOP_K, sims.shape[1])
            top = np.sort(sims, axis=1)[:, -k:]
            columns.append(top.mean(axis=1))
        return np.stack(columns, axis=1).astype(np.float32)

    def features(self, embeddings: np.ndarray) -> np.ndarray:
        return np.concatenate([embeddings, self.prototype_similarity(embeddings)], axis=1)

    def watched_similarity(self, prototype_similarity: np.ndarray) -> np.ndarray:
        """(n,) the best of the watched topics' prototype similarities (columns of ``features``' tail)."""
        idx = [self.labels.index(t) for t in self.watched]
        return np.asarray(prototype_similarity[:, idx].max(axis=1))

    def watched_scores(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, len(watched)) scores in [0, 1] for each watched topic.

        With a head that has an abstain floor, an article whose similarity to every watched topic's
        prototypes is below it (far from everything the taxonomy describes: noise, another domain) scores
        0 for every watched topic.
        """
        sims = self.prototype_similarity(embeddings)
        if self.head is not None:
            scores = self.head.probabilities(np.concatenate([embeddings, sims], axis=1))
            if self.head.abstain_below is not None:
                far = self.watched_similarity(sims) < self.head.abstain_below
                scores[far] = 0.0
            return scores
        other = sims[:, self.labels.index(OTHER)][:, None]
        idx = [self.labels.index(t) for t in self.watched]
        margin = sims[:, idx] - other
        return 1.0 / (1.0 + np.exp(-PROTOTYPE_SCALE * margin))

    def threshold(self, topic_id: str) -> float:
        fixed = self.taxonomy.topic(topic_id).threshold
        if fixed is not None:
            return fixed
        if self.head is not None:
            return self.head.thresholds.get(topic_id, 0.5)
        return 0.5

    def classify_embeddings(self, embeddings: np.ndarray) -> list[TopicPrediction]:
        thresholds = np.array([self.threshold(t) for t in self.watched])
        return decide(self.watched, self.watched_scores(embeddings), thresholds)

    def classify(self, texts: Sequence[str]) -> list[TopicPrediction]:
        """Predictions for single texts (a headline, a summary): each is embedded as a whole."""
        return self.classify_embeddings(self.encoder.encode(list(texts)))

    def classify_articles(self, articles: Sequence[tuple[str, str]]) -> list[TopicPrediction]:
        return self.classify_embeddings(article_embeddings(self.encoder, articles))


def article_embeddings(encoder: Encoder, articles: Sequence[tuple[str, str]]) -> np.ndarray:
    """One unit vector per ``(title, body)``: the normalised sum of the title's and the lead's embeddings.

    The title and the body's lead (:func:`models.text.article_lead`) are embedded separately, which
    costs no more than embedding them together (the encoder's cost grows with tokens) and lets the
    stance model reuse both from the encoder's cache: the title is the headline-stance claim and the
    lead is what the stance gate compares every claim with. An article without a body is its title,
    one without a title its lead.
    """
    if not articles:
        return np.zeros((0, encoder.info.dim), dtype=np.float32)
    titles = [clean_text(title or "") for title, _ in articles]
    leads = [article_lead(body or "") for _, body in articles]
    vectors = encoder.encode(titles + leads)
    title_vecs, lead_vecs = vectors[: len(articles)], vectors[len(articles) :]
    has_title = np.array([bool(t) for t in titles])[:, None]
    has_lead = np.array([bool(lead) for lead in leads])[:, None]
    summed = np.where(has_title, title_vecs, 0.0) + np.where(has_lead, lead_vecs, 0.0)
    summed = np.where(has_title | has_lead, summed, title_vecs)  # neither: the empty text's embedding
    norms = np.linalg.norm(summed, axis=1, keepdims=True)
    return (summed / np.maximum(norms, 1e-9)).astype(np.float32)


def load_head(spec: str) -> TopicHead | None:
    """The configured head file; ``""`` = the committed artifact if present, else none."""
    if spec:
        path = Path(spec)
        if path.is_dir():
            path = path / "head.json"
        if not path.exists():
            raise ModelError(f"topic head {path} not found; train one with 'newsflow train topics'")
        return TopicHead.load(path)
    return TopicHead.load(DEFAULT_HEAD) if DEFAULT_HEAD.exists() else None
