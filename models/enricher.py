"""Article → enriched record: topics, stance toward the configured claims, headline stance.

:class:`Enricher` is the whole model layer behind one call, loaded once per worker by the Beam
:class:`models.handler.EnrichmentModelHandler` and used directly by tests and the CLI.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from models.encoder import Encoder
from models.stance import SelectionConfig, StanceModel
from models.taxonomy import Taxonomy, load_taxonomy
from models.topic_labeller import ArticleText, build_topic_labeller
from newsflow.config import ModelSettings
from newsflow.memory import release_large_blocks
from newsflow.records import (
    Article,
    Enriched,
    HeadlineStance,
    StanceMethod,
    StanceResult,
    TopicScore,
    utc_now,
)

log = logging.getLogger(__name__)


class Enricher:
    """Encoder, topic classifier and stance model, loaded together from settings."""

    def __init__(self, models: ModelSettings, taxonomy: Taxonomy | Path | str) -> None:
        release_large_blocks()  # batch activations go back to the OS when freed (see newsflow.memory)
        if models.threads:
            import torch

            torch.set_num_threads(models.threads)
        self.taxonomy = taxonomy if isinstance(taxonomy, Taxonomy) else load_taxonomy(taxonomy)
        self.encoder = Encoder(
            models.encoder,
            max_tokens=models.max_tokens,
            batch_size=models.batch_size,
            precision=models.precision,
            runtime=models.runtime,
            threads=models.threads,
        )
        self.topics = build_topic_labeller(self.encoder, self.taxonomy, models)
        self.stance = StanceModel(
            self.encoder,
            models.stance_model,
            related_threshold=models.related_threshold,
            precision=models.precision,
            runtime=models.runtime,
            threads=models.threads,
            batch_size=models.batch_size,
        )
        lead_settings: tuple[str, ...] = ("lead_chars", "max_chars", "max_sentences", "max_sentence_chars")
        lead_settings += ("min_sentence_chars",)
        default = SelectionConfig()
        if any(getattr(self.stance.selection, k) != getattr(default, k) for k in lead_settings):
            log.warning(
                "the stance model's lead settings differ from the topic model's: each article's lead is "
                "embedded twice (slower, same labels)"
            )
        self.claims = list(self.taxonomy.claims)
        self.lineage = {
            **self.topics.lineage,
            **self.stance.lineage,
            "taxonomy": self.taxonomy.fingerprint(),
            "runtime": self.runtime,
        }
        log.info("model runtime: %s", self.runtime)

    @property
    def runtime(self) -> str:
        """Where each model runs, e.g. ``encoder=onnx-fp32 stance=onnx-fp32`` (chosen by measurement)."""
        parts = [f"encoder={self.encoder.runner.name}"]
        if self.stance.runner is not None:
            parts.append(f"stance={self.stance.runner.name}")
        return " ".join(parts)

    def enrich(self, articles: Sequence[Article], run_id: str) -> list[Enriched]:
        if not articles:
            return []
        # the embedding backend embeds each title and lead once; the stance model below reuses both
        # from the encoder's cache (the title is the headline-stance claim, the lead feeds the gate)
        labels = self.topics.label([ArticleText(a.title, a.text, a.language) for a in articles])
        # stance only where the models read the language and there are words to read (the topic
        # method says both: "model" means a covered language with text)
        stanced = [i for i, t in enumerate(labels) if t.method == "model"]
        pairs: list[tuple[str, str]] = []
        for i in stanced:
            article = articles[i]
            body = article.text or article.title
            pairs.extend((claim.text, body) for claim in self.claims)
            pairs.append((article.title, article.text))
        predicted = self.stance.predict(pairs)
        per_article = len(self.claims) + 1
        chunks = {i: predicted[k * per_article : (k + 1) * per_article] for k, i in enumerate(stanced)}
        now = utc_now()
        out = []
        for i, (article, topics) in enumerate(zip(articles, labels, strict=True)):
            stances: list[StanceResult] = []
            headline = None
            chunk = chunks.get(i)
            if chunk is not None:
                stances = [
                    StanceResult(claim_id=claim.id, claim=claim.text, label=label, score=round(score, 4))
                    for claim, (label, score) in zip(self.claims, chunk[:-1], strict=True)
                ]
                if article.title and article.text:
                    label, score = chunk[-1]
                    headline = HeadlineStance(label=label, score=round(score, 4))
            out.append(
                Enriched(
                    article=article,
                    topics=[
                        TopicScore(label=t, score=s, evidence=topics.evidence.get(t))
                        for t, s in topics.topics
                    ],
                    primary_topic=topics.primary_topic,
                    scores=topics.scores,
                    topic_method=topics.method,
                    language=topics.language,
                    stances=stances,
                    stance_method=_stance_method(topics.method),
                    headline_stance=headline,
                    model=self.lineage,
                    enriched_at=now,
                    run_id=run_id,
                )
            )
        return out


def _stance_method(topic_method: str) -> StanceMethod:
    """Stance is labelled exactly where topics were decided by the model (see :meth:`Enricher.enrich`)."""
    if topic_method == "model":
        return "model"
    return "no_text" if topic_method == "no_text" else "unsupported_language"
