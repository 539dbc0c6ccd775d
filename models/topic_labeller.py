"""The topics an article gets: a topic backend's scores, made safe for real feed traffic.

A topic backend (:func:`models.topic_backends.build_topic_classifier`) scores a title and a lead. On
real feeds that is not enough: most items are in languages the model never saw, a war elsewhere reads
like Syria to an embedding, and the second topic of an article often sits in the second half of its
body. :class:`TopicLabeller` decides, for each article:

1. **Language.** The article's language (declared by its feed, or detected by py3langid when the feed
   declares none or the text confidently says otherwise; :mod:`models.language`). Text with no words
   (only URLs, emoji, markup, or nothing) is ``other`` with ``method = "no_text"``.
2. **Covered languages** (``NEWSFLOW_MODELS_LANGUAGES``; the packaged MiniLM: ``en``): the backend
   scores the title and lead; a watched topic whose score passes its threshold keeps it only when the
   topic's anchor query (:mod:`models.anchors`) also matches the article (its ``gate``): a model's
   label must name something the article actually mentions. ``method = "model"``.
3. **Other languages**: the model is not asked. A topic is assigned when its anchor query matches the
   title and lead (``method = "anchors"``; score = the query's measured precision, ``anchors.score``),
   else the article is ``other`` with ``method = "unsupported_language"``.
4. **The body.** A watched topic not found in the title and lead is still assigned when it fills at
   least :data:`MIN_PASSAGES` passages (paragraph-sized runs of sentences) of the body: passages whose
   anchor query matches, confirmed by the backend in covered languages. So an article about Raqqa whose
   last third is about Russian election operations gets both topics.

Every assigned topic carries a short evidence span: the sentence or passage that supported it.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from models import language as lang
from models.anchors import evidence_span, matcher_for
from models.taxonomy import OTHER, Taxonomy
from models.text import article_lead, body_passages
from models.topics import TopicModel, TopicPrediction

if TYPE_CHECKING:
    from models.encoder import Encoder
    from newsflow.config import ModelSettings

log = logging.getLogger(__name__)

#: Passages of the body that must carry a topic for the body alone to assign it.
MIN_PASSAGES = 2
#: Methods, as written in the enriched record's ``topic_method``.
METHODS = ("model", "anchors", "unsupported_language", "no_text")


#: Watched topics found for an article: topic -> (score, evidence span).
Found = dict[str, tuple[float, str]]


@dataclass(frozen=True)
class ArticleText:
    """What topics are decided from: the title, the body text and the language the feed declared."""

    title: str
    body: str = ""
    language: str | None = None


@dataclass(frozen=True)
class TopicLabels:
    """The topics of one article, how they were decided, and the evidence for each watched topic."""

    primary_topic: str
    topics: list[tuple[str, float]]
    scores: dict[str, float]
    method: str
    language: str | None = None
    evidence: dict[str, str] = field(default_factory=dict)


class TopicLabeller:
    """Turns a backend's scores into labels (see the module docstring).

    Args:
        backend: The topic model (embedding, zero-shot or classifier backend).
        taxonomy: Topics, their anchor queries and terms.
        languages: Languages the backend covers (ISO 639-1 codes, or ``*``).
    """

    def __init__(self, backend: TopicModel, taxonomy: Taxonomy, languages: Collection[str]) -> None:
        self.backend = backend
        self.taxonomy = taxonomy
        self.labels = backend.labels
        self.languages = frozenset(languages)
        self.watched = [t.id for t in taxonomy.watched]
        self.anchors = matcher_for(taxonomy)
        self.anchor_score = {t.id: t.anchors.score for t in taxonomy.watched if t.anchors is not None}
        # watched topics without a gate: the backend must read every article for them
        self._ungated = {
            t for t in self.watched if t not in self.anchors.queries or not self.anchors.queries[t].gate
        }
        self.stats = {"articles": 0, "modelled": 0, "passages_scored": 0}

    @property
    def lineage(self) -> dict[str, str]:
        covered = ",".join(sorted(self.languages))
        return {**self.backend.lineage, "topic_languages": covered}

    def label(self, articles: Sequence[ArticleText]) -> list[TopicLabels]:
        """Topics for each article, in input order."""
        out: list[TopicLabels | None] = [None] * len(articles)
        covered: list[int] = []
        gates: dict[int, set[str]] = {}
        leads: list[str] = []
        languages: list[str | None] = []
        for i, article in enumerate(articles):
            title, body = article.title or "", article.body or ""
            lead = article_lead(body)
            leads.append(lead)
            language = lang.resolve(article.language, f"{title}\n{lead}")
            languages.append(language)
            if not lang.has_words(f"{title}\n{body[:5000]}"):
                out[i] = self._other("no_text", language)
            elif lang.covers(self.languages, language):
                covered.append(i)
                gates[i] = self.anchors.gated(title, body)
        # the backend reads only articles where some watched topic could still pass its gate: for the
        # others the answer is `other` whatever it says (most of a real feed stream)
        modelled = [i for i in covered if self._ungated.union(gates[i])]
        raw_scores: dict[int, dict[str, float]] = {}
        found: dict[int, Found] = {i: {} for i in covered}
        predictions = self.backend.classify_articles(
            [(articles[i].title, articles[i].body) for i in modelled]
        )
        for i, pred in zip(modelled, predictions, strict=True):
            raw_scores[i] = dict(pred.scores)
            found[i] = self._gated(articles[i], pred, gates[i])
        for i, article in enumerate(articles):
            if out[i] is None and i not in found:  # a language the model does not cover: anchors decide
                matches = self.anchors.match(article.title or "", leads[i])
                found[i] = {t: (self.anchor_score[t], m.evidence) for t, m in matches.items()}
        self._add_body_topics(articles, found, set(covered), gates)
        for i, topics in found.items():
            in_model = i in gates
            method = "model" if in_model else ("anchors" if topics else "unsupported_language")
            out[i] = self._labels(topics, method, languages[i], raw_scores.get(i, {}))
        self.stats["articles"] += len(articles)
        self.stats["modelled"] += len(modelled)
        return [labels for labels in out if labels is not None]

    def _gated(self, article: ArticleText, pred: TopicPrediction, passed: set[str]) -> Found:
        """The backend's watched topics that pass their anchor gate, with evidence."""
        title, body = article.title or "", article.body or ""
        kept = {}
        for topic, score in pred.topics:
            if topic == OTHER:
                continue
            query = self.anchors.queries.get(topic)
            if query is None:
                kept[topic] = (score, evidence_span(title or body))
            elif topic in passed:
                lead_group = (query.gate or query.match)[0][0]
                kept[topic] = (score, self.anchors.evidence(title, body, lead_group))
        return kept

    def _add_body_topics(
        self,
        articles: Sequence[ArticleText],
        found: dict[int, Found],
        modelled: set[int],
        gates: dict[int, set[str]],
    ) -> None:
        """Assign watched topics that fill at least MIN_PASSAGES passages of the body (module docstring).

        In a covered language a passage counts when the backend assigns the topic to it; only passages
        that name the topic's subject (a term of the first group of one of its query's clauses) are
        read, and the topic's anchor gate must match the whole article. In other languages a passage
        counts when the topic's whole anchor query matches it.
        """
        candidates: list[tuple[int, str, str]] = []  # (article, topic, passage)
        for i, topics in found.items():
            missing = [t for t in self.watched if t not in topics]
            passages = body_passages(articles[i].body or "") if missing else []
            if len(passages) < MIN_PASSAGES:
                continue
            covered = i in modelled
            if covered:
                gate = gates[i]
                for topic in missing:
                    query = self.anchors.queries.get(topic)
                    if query is None:  # no anchors: the model reads every passage
                        candidates.extend((i, topic, p) for p in passages)
                    elif topic in gate:
                        subject = {clause[0] for clause in (*query.match, *query.gate)}
                        hits = [p for p in passages if self.anchors.groups_in(p, subject)]
                        candidates.extend((i, topic, p) for p in hits)
            else:
                per_passage = [self.anchors.match("", p) for p in passages]
                for topic in missing:
                    hits = [p for p, m in zip(passages, per_passage, strict=True) if topic in m]
                    candidates.extend((i, topic, p) for p in hits)
        counts: dict[tuple[int, str], int] = {}
        for i, topic, _ in candidates:
            counts[(i, topic)] = counts.get((i, topic), 0) + 1
        candidates = [c for c in candidates if counts[(c[0], c[1])] >= MIN_PASSAGES]
        if not candidates:
            return
        scored: dict[tuple[int, str], list[tuple[float, str]]] = {}
        to_model = [(i, t, p) for i, t, p in candidates if i in modelled]
        preds = self.backend.classify_articles([("", p) for _, _, p in to_model])
        self.stats["passages_scored"] += len(to_model)
        for (i, topic, passage), pred in zip(to_model, preds, strict=True):
            score = dict(pred.topics).get(topic)
            if score is not None:
                scored.setdefault((i, topic), []).append((score, passage))
        for i, topic, passage in candidates:
            if i not in modelled:
                scored.setdefault((i, topic), []).append((self.anchor_score[topic], passage))
        for (i, topic), supporting in scored.items():
            if len(supporting) >= MIN_PASSAGES:
                best, passage = max(supporting, key=lambda h: h[0])
                found[i][topic] = (best, evidence_span(passage))

    def _labels(self, topics: Found, method: str, language: str | None, raw: dict[str, float]) -> TopicLabels:
        if not topics:
            return self._other(method, language, raw)
        ordered = sorted(topics.items(), key=lambda kv: -kv[1][0])
        scores = {t: raw.get(t, 0.0) for t in self.watched} | {t: round(s, 4) for t, (s, _) in ordered}
        scores[OTHER] = round(1.0 - ordered[0][1][0], 4)
        return TopicLabels(
            primary_topic=ordered[0][0],
            topics=[(t, round(s, 4)) for t, (s, _) in ordered],
            scores=scores,
            method=method,
            language=language,
            evidence={t: e for t, (_, e) in ordered},
        )

    def _other(self, method: str, language: str | None, raw: dict[str, float] | None = None) -> TopicLabels:
        """``other``: its score is 1 - the best watched score that stood (a vetoed one counts as 0)."""
        raw = raw or {}
        scores = {t: round(raw.get(t, 0.0), 4) for t in self.watched}
        passed = [s for t, s in scores.items() if s >= self.backend.threshold(t)]
        other = raw.get(OTHER, 1.0) if not passed else 1.0
        scores[OTHER] = round(other, 4)
        return TopicLabels(OTHER, [(OTHER, round(other, 4))], scores, method, language)


def build_topic_labeller(encoder: Encoder | None, taxonomy: Taxonomy, models: ModelSettings) -> TopicLabeller:
    """The configured topic backend (``NEWSFLOW_MODELS_TOPIC_BACKEND``) behind a labeller for the
    languages it covers (``NEWSFLOW_MODELS_LANGUAGES``): what the pipeline and the CLI label with."""
    from models.topic_backends import build_topic_classifier

    return TopicLabeller(build_topic_classifier(encoder, taxonomy, models), taxonomy, models.languages)
