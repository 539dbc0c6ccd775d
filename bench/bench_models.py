"""The model layer: topic + stance for N articles, against a naive loop and the encoder's ceiling.

Run: ``.venv/bin/python -m bench.bench_models [--articles 1000]`` (``make bench-models``).
Articles are FNC-1 bodies with one of their headlines as the title (``../shared/data/fnc1``; real
news bodies of realistic length). Measured in one run, on this machine:

- **newsflow**: :class:`models.enricher.Enricher` (what the Beam pipeline runs): one encoder pass
  per article for topics (title + lead, 128 tokens), the stance gate over the body's sentences
  (embedded once, reused for every claim), the pair model only for pairs that pass the gate, and
  the headline-vs-body stance; batched, length-sorted, cached.
- **naive**: the same models used the obvious way, per article, fp32: encode title + body at 512
  tokens, encode each claim, run the pair model on every (claim, body) pair and the headline pair;
  no batching, no cache, no gate. Timed on a sample and reported per article.
- **ceiling**: the encoder's bare batched forward pass over the same articles' topic inputs
  (pre-tokenised, 128 tokens, batch 64, no pooling): no model layer can embed them faster.
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
from models.enricher import Enricher
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


@torch.inference_mode()
def run_ceiling(enricher: Enricher, articles: list[Article], batch: int) -> float:
    encoder = enricher.encoder
    texts = sorted((topic_text(a.title, a.text) for a in articles), key=len)
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
        encoder.model(**enc)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    if not (SHARED / "fnc1" / "train_bodies.csv").exists():
        raise SystemExit(f"needs the FNC-1 data in {SHARED / 'fnc1'} (set NEWSFLOW_SHARED_DATA)")
    settings = Settings()
    enricher = Enricher(settings.models, settings.taxonomy_file)
    articles = load_articles(args.articles)
    print(
        f"{len(articles)} articles (FNC-1 bodies, median {int(np.median([len(a.text) for a in articles]))} "
        f"chars), {len(enricher.claims)} claims + headline stance each; torch threads "
        f"{torch.get_num_threads()}; models: {enricher.lineage}"
    )
    ceiling = run_ceiling(enricher, articles, args.batch)
    ours = run_newsflow(enricher, articles, args.batch)
    fresh = Enricher(settings.models, settings.taxonomy_file)  # no warm cache for the baseline
    naive = run_naive(fresh, articles[: args.naive_sample])
    rates = {
        "newsflow model layer": len(articles) / ours,
        f"naive per-article fp32 loop ({args.naive_sample} articles)": args.naive_sample / naive,
        "encoder bare forward ceiling (topic inputs)": len(articles) / ceiling,
    }
    base = rates[next(k for k in rates if k.startswith("naive"))]
    rows = [(name, f"{rate:,.1f}") for name, rate in rates.items()]
    print(table(rows, ("what", "articles/s")))
    stats = enricher.stance.stats
    print(
        f"stance pairs {stats['pairs']:,}: {stats['gated']:,} stopped at the gate, "
        f"{stats['pair_model']:,} through the pair model; encoder cache hits {enricher.encoder.stats}"
    )
    print(
        f"newsflow / naive: {rates['newsflow model layer'] / base:.1f}x;  newsflow / ceiling: "
        f"{rates['newsflow model layer'] / rates['encoder bare forward ceiling (topic inputs)']:.2f}"
    )


if __name__ == "__main__":
    main()
