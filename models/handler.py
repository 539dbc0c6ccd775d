"""The Beam ``ModelHandler`` for the enrichment models.

Beam's bundled Hugging Face handlers import TensorFlow and do not work with transformers 5, so
this small handler wraps :class:`models.enricher.Enricher`: ``RunInference`` batches articles
(``min_batch_size``..``max_batch_size``), loads the models once per worker process and shares them
across threads.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from apache_beam.ml.inference.base import ModelHandler

from models.enricher import Enricher
from models.taxonomy import Taxonomy
from newsflow.config import ModelSettings
from newsflow.records import Article, Enriched
from newsflow.telemetry import instruments


class EnrichmentModelHandler(ModelHandler[Article, Enriched, Enricher]):
    def __init__(
        self,
        models: ModelSettings,
        taxonomy: Taxonomy | Path,
        run_id: str,
        min_batch_size: int = 1,
        max_batch_size: int = 64,
    ) -> None:
        super().__init__()
        self.models = models
        self.taxonomy = taxonomy  # parsed in the driver, it travels with the pipeline to every worker
        self.run_id = run_id
        self.min_batch_size = min_batch_size
        self.max_batch_size = max_batch_size

    def load_model(self) -> Enricher:
        enricher = Enricher(self.models, self.taxonomy)
        instruments.models_loaded()
        return enricher

    def run_inference(
        self,
        batch: Sequence[Article],
        model: Enricher,
        inference_args: dict[str, Any] | None = None,
    ) -> Iterable[Enriched]:
        started = time.perf_counter()
        enriched = model.enrich(batch, self.run_id)
        instruments.model_batch(len(batch), time.perf_counter() - started)
        return enriched

    def batch_elements_kwargs(self) -> dict[str, Any]:
        return {"min_batch_size": self.min_batch_size, "max_batch_size": self.max_batch_size}

    def get_metrics_namespace(self) -> str:
        return "newsflow"

    def share_model_across_processes(self) -> bool:
        return False
