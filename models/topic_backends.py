"""Topic backends that read the article with a transformers model, and the factory for all backends.

``NEWSFLOW_MODELS_TOPIC_BACKEND`` picks one:

- ``embedding`` (default): :class:`models.topics.TopicClassifier`, the sentence encoder with taxonomy
  prototypes and the trained topic head.
- ``zero-shot``: any NLI model (``NEWSFLOW_MODELS_TOPIC_MODEL``, local path or Hub id) through
  transformers' ``zero-shot-classification`` pipeline. Each watched topic becomes one hypothesis
  (``NEWSFLOW_MODELS_TOPIC_HYPOTHESIS`` filled with the topic's ``label``, or the topic's own
  ``hypothesis``); with ``multi_label=True`` a topic's score is P(entailment) against contradiction
  for its hypothesis alone, so an article can get several topics.
- ``classifier``: a fine-tuned sequence-classification model whose ``config.id2label`` names the
  taxonomy's topic ids (``other`` may be one of them); sigmoid per label when
  ``config.problem_type == "multi_label_classification"``, else softmax.

For both model backends: text is cleaned of control characters and cut to ``max_tokens * 8``
characters, then to ``max_tokens`` tokens (never past the model's position limit) from the start;
batches group texts of similar length; empty text is ``other`` without a forward pass. A watched
topic is assigned when its score reaches its threshold (the taxonomy topic's ``threshold``, else
0.5), ``other`` when none does, exactly as in the embedding backend. Lineage names the model as
``name@fingerprint`` (a hash of its weights).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from models.encoder import (
    Encoder,
    length_batches,
    load_pretrained,
    model_fingerprint,
    model_name,
    resolve_model_source,
)
from models.runtime import precision_context, prepare_model
from models.taxonomy import OTHER, Taxonomy, Topic
from models.text import clean_text
from models.topics import TopicClassifier, TopicModel, TopicPrediction, decide, load_head, topic_text
from newsflow.config import ModelSettings
from newsflow.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.5
DEFAULT_HYPOTHESIS = "This news article is about {}."
HYPOTHESIS_MARGIN = 8  # tokens of premise that must fit beside the longest hypothesis


class PretrainedTopicClassifier:
    """Shared by the model backends: loading, thresholds, cleaning, empty text, lineage."""

    backend: ClassVar[str] = ""

    def __init__(
        self,
        spec: str,
        taxonomy: Taxonomy,
        *,
        max_tokens: int = 128,
        batch_size: int = 32,
        precision: str = "auto",
    ) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        if not spec:
            raise ConfigError(
                f"the {self.backend} topic backend needs a model: set NEWSFLOW_MODELS_TOPIC_MODEL to a local "
                "model directory or a Hub id in the local cache (or NEWSFLOW_MODELS_TOPIC_BACKEND=embedding)"
            )
        self.source = resolve_model_source(spec)
        self.tokenizer = load_pretrained(AutoTokenizer, self.source)
        self.model = prepare_model(
            load_pretrained(AutoModelForSequenceClassification, self.source).eval(), precision
        )
        self.name = f"{model_name(self.source)}@{model_fingerprint(self.source)}"
        self.taxonomy = taxonomy
        self.labels = taxonomy.labels
        self.watched = [t.id for t in taxonomy.watched]
        self.thresholds = np.array(
            [DEFAULT_THRESHOLD if t.threshold is None else t.threshold for t in taxonomy.watched]
        )
        self.max_tokens = max_tokens
        self.max_chars = max_tokens * 8
        self.batch_size = batch_size
        self.precision = precision
        self._prepare()

    def _prepare(self) -> None:
        """Check the loaded model against the backend and the taxonomy (raises ModelError/ConfigError)."""
        raise NotImplementedError

    @property
    def position_limit(self) -> int:
        """The most tokens the model takes (its tokenizer's and its position embeddings' limit)."""
        limits = [int(self.tokenizer.model_max_length)]
        positions = getattr(self.model.config, "max_position_embeddings", None)
        if positions:
            limits.append(int(positions))
        return min(limits)

    @property
    def lineage(self) -> dict[str, str]:
        return {"topics": self.name}

    def threshold(self, topic_id: str) -> float:
        return float(self.thresholds[self.watched.index(topic_id)])

    def classify(self, texts: Sequence[str]) -> list[TopicPrediction]:
        cleaned = [clean_text(text or "", self.max_chars) for text in texts]
        scores = np.zeros((len(cleaned), len(self.watched)), dtype=np.float32)
        other = np.ones(len(cleaned), dtype=np.float32)
        todo = [i for i, text in enumerate(cleaned) if text]
        if todo:
            with torch.inference_mode(), precision_context(self.precision):
                watched, other_todo = self._scores([cleaned[i] for i in todo])
            scores[todo] = watched
            if other_todo is not None:
                other[todo] = other_todo
            elif watched.shape[1]:
                other[todo] = 1.0 - watched.max(axis=1)
        predictions = decide(self.watched, scores, self.thresholds, other)
        for i, text in enumerate(cleaned):
            if not text:  # nothing to read: other, whatever the thresholds
                predictions[i] = TopicPrediction(OTHER, [(OTHER, 1.0)], predictions[i].scores)
        return predictions

    def classify_articles(self, articles: Sequence[tuple[str, str]]) -> list[TopicPrediction]:
        """The model reads the headline, then the body, truncated to its input length."""
        return self.classify([topic_text(title, body) for title, body in articles])

    def _scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        """(n, len(watched)) scores in [0, 1], and ``other``'s scores where the model has its own."""
        raise NotImplementedError


def hypothesis(topic: Topic, template: str = DEFAULT_HYPOTHESIS) -> str:
    """The NLI hypothesis for a topic: its own, else the template filled with its label."""
    if topic.hypothesis:
        return topic.hypothesis
    return template.format(topic.label or topic.id.replace("_", " "))


class ZeroShotTopicClassifier(PretrainedTopicClassifier):
    """Watched topics as NLI hypotheses through transformers' zero-shot-classification pipeline."""

    backend = "zero-shot"

    def __init__(
        self, spec: str, taxonomy: Taxonomy, *, hypothesis_template: str = DEFAULT_HYPOTHESIS, **options: Any
    ) -> None:
        """``options``: max_tokens, batch_size, precision as for :class:`PretrainedTopicClassifier`."""
        self.hypothesis_template = hypothesis_template
        super().__init__(spec, taxonomy, **options)

    def _prepare(self) -> None:
        from transformers import pipeline

        taxonomy = self.taxonomy
        label2id = {str(label): int(i) for label, i in self.model.config.label2id.items()}
        # the pipeline takes the first label starting with "entail" (any case) as entailment
        if len(label2id) < 2 or not any(label.lower().startswith("entail") for label in label2id):
            raise ModelError(
                f"zero-shot topic model {self.name} is not an NLI model: its config.label2id {label2id} has "
                "no 'entailment' label beside another; use an NLI model (e.g. one fine-tuned on MNLI), or "
                "NEWSFLOW_MODELS_TOPIC_BACKEND=classifier for a model whose labels are topic ids"
            )
        self.hypotheses = [hypothesis(t, self.hypothesis_template) for t in taxonomy.watched]
        if len(set(self.hypotheses)) != len(self.hypotheses):
            raise ConfigError(
                f"zero-shot hypotheses must differ per topic, got {self.hypotheses}; give the topics "
                "distinct 'label' or 'hypothesis' values in the taxonomy"
            )
        longest = max(len(self.tokenizer(h)["input_ids"]) for h in self.hypotheses)
        limit = self.position_limit
        if longest + HYPOTHESIS_MARGIN > limit:
            raise ConfigError(
                f"a zero-shot hypothesis takes {longest} tokens, too many for {self.name} ({limit}); "
                "shorten the topics' 'hypothesis' or NEWSFLOW_MODELS_TOPIC_HYPOTHESIS"
            )
        # the pipeline truncates the article (only_first) to the tokenizer's model_max_length
        self.tokenizer.model_max_length = min(limit, max(self.max_tokens, longest + HYPOTHESIS_MARGIN))
        self.pipeline = pipeline(
            "zero-shot-classification", model=self.model, tokenizer=self.tokenizer, device=-1
        )
        digest = hashlib.sha256("\n".join(self.hypotheses).encode()).hexdigest()[:12]
        self.hypotheses_version = digest

    @property
    def lineage(self) -> dict[str, str]:
        return {"topics": self.name, "topic_hypotheses": self.hypotheses_version}

    def _scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        out = np.zeros((len(texts), len(self.hypotheses)), dtype=np.float32)
        for idx in length_batches(texts, self.batch_size):
            results = self.pipeline(
                [texts[i] for i in idx],
                candidate_labels=self.hypotheses,
                hypothesis_template="{}",  # the candidate labels are whole hypotheses already
                multi_label=True,
                batch_size=self.batch_size,
            )
            for i, result in zip(idx, results, strict=True):
                by_hypothesis = dict(zip(result["labels"], result["scores"], strict=True))
                out[i] = [by_hypothesis[h] for h in self.hypotheses]
        return out, None


class SequenceTopicClassifier(PretrainedTopicClassifier):
    """A fine-tuned sequence-classification model whose labels are the taxonomy's topic ids."""

    backend = "classifier"

    def _prepare(self) -> None:
        config = self.model.config
        index = {str(label): int(i) for i, label in config.id2label.items()}
        unknown = sorted(label for label in index if label not in self.labels)
        if unknown:
            raise ModelError(
                f"topic model {self.name} has labels {unknown} that are not topics of the taxonomy "
                f"({self.labels}); its config.id2label must name taxonomy topic ids: add the topics to "
                "the taxonomy or use a model trained for it"
            )
        missing = [t for t in self.watched if t not in index]
        if missing:
            log.warning("topic model %s has no label for %s: never assigned", self.name, missing)
            self.thresholds = np.array(
                [np.inf if t in missing else th for t, th in zip(self.watched, self.thresholds, strict=True)]
            )
        self._columns = [index.get(t) for t in self.watched]
        self._other = index.get(OTHER)
        self.multi_label = config.problem_type == "multi_label_classification"
        self.max_length = min(self.max_tokens, self.position_limit)

    def _scores(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray | None]:
        watched = np.zeros((len(texts), len(self.watched)), dtype=np.float32)
        other = np.zeros(len(texts), dtype=np.float32)
        for idx in length_batches(texts, self.batch_size):
            enc = self.tokenizer(
                [texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=self.max_length,
                return_tensors="pt",
            )
            logits = self.model(**enc).logits.float()
            probs = (torch.sigmoid(logits) if self.multi_label else torch.softmax(logits, dim=-1)).numpy()
            for col, c in enumerate(self._columns):
                if c is not None:
                    watched[idx, col] = probs[:, c]
            if self._other is not None:
                other[idx] = probs[:, self._other]
        return watched, (other if self._other is not None else None)


def build_topic_classifier(encoder: Encoder | None, taxonomy: Taxonomy, models: ModelSettings) -> TopicModel:
    """The topic classifier that ``models.topic_backend`` names (the encoder only serves ``embedding``)."""
    if models.topic_backend == "embedding":
        if encoder is None:
            raise ValueError("the embedding topic backend needs the sentence encoder")
        return TopicClassifier(encoder, taxonomy, load_head(models.topic_head))
    options: dict[str, Any] = {
        "max_tokens": models.max_tokens,
        "batch_size": models.batch_size,
        "precision": models.precision,
    }
    if models.topic_backend == "zero-shot":
        return ZeroShotTopicClassifier(
            models.topic_model, taxonomy, hypothesis_template=models.topic_hypothesis, **options
        )
    return SequenceTopicClassifier(models.topic_model, taxonomy, **options)
