"""The model layer: topic + stance for N articles, against a naive loop and the models' forward ceilings.

Run: ``.venv/bin/python -m bench.bench_models [--articles 1000]`` (``make bench-models``).
Articles are FNC-1 bodies with one of their headlines as the title (``../shared/data/fnc1``; real
news bodies of realistic length). Measured in one run, on this machine:

- **newsflow**: :class:`models.enricher.Enricher` (what the Beam pipeline runs), batches of 64:
  the title and the lead embedded once each (topics, and the stance gate and headline claim through
  the encoder cache), the claims once, the ``lead+lexical`` gate for every (claim, article) pair and
  the headline, the pair model only for pairs that pass it; batched, length-sorted. At the
  configured precision (``auto``: bf16 where the CPU has it natively, else fp32) and with ``int8``.
- **naive**: the same models used the obvious way, per article, fp32: encode title + body at 512
  tokens, encode each claim, run the pair model on every (claim, body) pair and the headline pair;
  no batching, no cache, no gate. Timed on a sample and reported per article.
- **ceiling, same work**: the bare forward passes of exactly the batches the newsflow run sent to the
  encoder and the pair model (recorded, re-tokenised up front, replayed): the model layer's
  overhead is the gap to it.
- **ceiling, one pass per article**: the encoder's bare batched forward pass over each article's title
  + lead (128 tokens, batch 64, pre-tokenised): no layer that reads every article with this encoder
  at least once can be faster; newsflow also runs the pair model (~1 pass per article).
"""

from __future__ import annotations

import argparse
import csv
import os
import random
import time
from pathlib import Path

import numpy as np
import torch

from bench.common import table
from models.encoder import native_bf16, precision_context
from models.enricher import Enricher
from models.stance import encode_pair_batch
from models.text import article_lead
from models.topics import TopicClassifier, topic_text
from newsflow.config import REPO_ROOT, Settings
from newsflow.records import Article, content_hash

SHARED = Path(os.environ.get("NEWSFLOW_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))


def load_articles(n: int, seed: int = 7) -> list[Article]:
    with open(SHARED / "fnc1" / "train_bodies.csv", encoding="utf-8", newline="") as fh:
        bodies = {row["Body ID"]: row["articleBody"] for row in csv.DictReader(fh)}
    headline: dict[str, str] = {}
    with open(SHARED / "fnc1" / "train_stances.csv", encoding="utf-8", newline="") as fh:
        for row in csv.DictReader(fh):
            if row["Stance"] != "unrelated":
                headline.setdefault(row["Body ID"], row["Headline"])
    ids = sorted(set(bodies) & set(headline))
    random.Random(seed).shuffle(ids)
    return [
        Article(
            id=f"{int(body_id):032x}",
            feed_url="bench",
            title=headline[body_id],
            content=bodies[body_id],
            fetched_at="2026-11-01T00:00:00Z",
            content_hash=content_hash(bodies[body_id]),
        )
        for body_id in ids[:n]
    ]


def run_newsflow(enricher: Enricher, articles: list[Article], batch: int) -> float:
    start = time.perf_counter()
    for i in range(0, len(articles), batch):
        enricher.enrich(articles[i : i + batch], run_id="bench")
    return time.perf_counter() - start


@torch.inference_mode()
def run_naive(enricher: Enricher, articles: list[Article]) -> float:
    encoder, stance = enricher.encoder, enricher.stance
    tok, model = encoder.tokenizer, encoder.model
    pair_model, pair_tok = stance._model, stance._tokenizer  # the same weights, used naively
    claims = [c.text for c in enricher.claims]
    topics = enricher.topics
    assert isinstance(topics, TopicClassifier), "the naive loop measures the embedding topic backend"

    def embed(text: str) -> torch.Tensor:
        enc = tok([text], truncation=True, max_length=512, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        return torch.nn.functional.normalize(hidden.mean(1), dim=-1)

    start = time.perf_counter()
    for article in articles:
        emb = embed(topic_text(article.title, article.text))
        topics.classify_embeddings(emb.numpy())
        for claim in [*claims, article.title]:
            embed(claim)
            if pair_model is not None:
                enc = pair_tok(
                    [claim], [article.text], truncation="only_second", max_length=512, return_tensors="pt"
                )
                pair_model(**enc)
    return time.perf_counter() - start


class Recorder:
    """Records the batches the model layer sends to the encoder and the pair model (texts only)."""

    def __init__(self, enricher: Enricher) -> None:
        self.encoder_batches: list[list[str]] = []
        self.pair_batches: list[tuple[list[str], list[str]]] = []
        encoder, stance = enricher.encoder, enricher.stance
        encoder_forward, pair_forward = encoder._forward, stance._forward

        def record_encoder(batch: list[str]) -> np.ndarray:
            self.encoder_batches.append(list(batch))
            return encoder_forward(batch)

        def record_pairs(claims: list[str], evidence: list[str]) -> torch.Tensor:
            self.pair_batches.append((list(claims), list(evidence)))
            return pair_forward(claims, evidence)

        encoder._forward = record_encoder  # type: ignore[method-assign]
        stance._forward = record_pairs  # type: ignore[method-assign]


@torch.inference_mode()
def run_same_work_ceiling(enricher: Enricher, recorder: Recorder) -> float:
    encoder, stance = enricher.encoder, enricher.stance
    inputs = [
        (
            encoder.model,
            encoder.tokenizer(
                b, padding=True, truncation=True, max_length=encoder.max_tokens, return_tensors="pt"
            ),
        )
        for b in recorder.encoder_batches
    ]
    if stance._model is not None:
        inputs += [
            (stance._model, encode_pair_batch(stance._tokenizer, claims, evidence, stance.max_tokens))
            for claims, evidence in recorder.pair_batches
        ]
    start = time.perf_counter()
    for model, enc in inputs:
        with precision_context(encoder.precision):
            model(**enc)
    return time.perf_counter() - start


@torch.inference_mode()
def run_one_pass_ceiling(enricher: Enricher, articles: list[Article], batch: int) -> float:
    encoder = enricher.encoder
    texts = sorted((topic_text(a.title, article_lead(a.text)) for a in articles), key=len)
    batches = [
        encoder.tokenizer(
            texts[i : i + batch],
            padding=True,
            truncation=True,
            max_length=encoder.max_tokens,
            return_tensors="pt",
        )
        for i in range(0, len(texts), batch)
    ]
    start = time.perf_counter()
    for enc in batches:
        with precision_context(encoder.precision):
            encoder.model(**enc)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-int8", action="store_true", help="do not measure the int8 model layer")
    args = parser.parse_args()
    if not (SHARED / "fnc1" / "train_bodies.csv").exists():
        raise SystemExit(f"needs the FNC-1 data in {SHARED / 'fnc1'} (set NEWSFLOW_SHARED_DATA)")
    settings = Settings()
    enricher = Enricher(settings.models, settings.taxonomy_file)
    articles = load_articles(args.articles)
    print(
        f"{len(articles)} articles (FNC-1 bodies, median {int(np.median([len(a.text) for a in articles]))} "
        f"chars), {len(enricher.claims)} claims + headline stance each; torch threads "
        f"{torch.get_num_threads()}; precision {settings.models.precision} (native bf16: {native_bf16()}); "
        f"models: {enricher.lineage}"
    )
    one_pass = run_one_pass_ceiling(enricher, articles, args.batch)
    recorder = Recorder(enricher)
    ours = run_newsflow(enricher, articles, args.batch)
    same_work = run_same_work_ceiling(enricher, recorder)
    stats, cache = dict(enricher.stance.stats), dict(enricher.encoder.stats)
    naive = run_naive(enricher, articles[: args.naive_sample])
    rates = {
        f"newsflow model layer ({settings.models.precision})": len(articles) / ours,
    }
    if not args.skip_int8 and settings.models.precision != "int8":
        quantised = Enricher(settings.models.model_copy(update={"precision": "int8"}), settings.taxonomy_file)
        rates["newsflow model layer (int8)"] = len(articles) / run_newsflow(quantised, articles, args.batch)
    rates[f"naive per-article fp32 loop ({args.naive_sample} articles)"] = args.naive_sample / naive
    rates["ceiling, same work: bare forward of the same batches"] = len(articles) / same_work
    rates["ceiling, one pass per article: title + lead, 128 tokens"] = len(articles) / one_pass
    print(table([(name, f"{rate:,.1f}") for name, rate in rates.items()], ("what", "articles/s")))
    encoded = sum(len(b) for b in recorder.encoder_batches)
    pairs = sum(len(c) for c, _ in recorder.pair_batches)
    print(
        f"per article: {encoded / len(articles):.2f} encoder sequences, "
        f"{pairs / len(articles):.2f} pair-model sequences; stance pairs {stats['pairs']:,}, "
        f"{stats['gated']:,} stopped at the gate, "
        f"{stats['pair_model']:,} through the pair model; encoder {cache}"
    )
    ours_rate = len(articles) / ours
    print(
        f"newsflow / naive: {ours_rate * naive / args.naive_sample:.1f}x;  "
        f"newsflow / ceiling (same work): {same_work / ours:.2f};  "
        f"newsflow / ceiling (one pass per article): {one_pass / ours:.2f}"
    )


if __name__ == "__main__":
    main()
