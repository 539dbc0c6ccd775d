"""The model layer: topic + stance for N articles, on each runtime, against a naive loop and ceilings.

Run: ``.venv/bin/python -m bench.bench_models [--articles 1000]`` (``make bench-models``).
Articles are FNC-1 bodies with one of their headlines as the title (``../shared/data/fnc1``; real
news bodies of realistic length). Measured in one run, on this machine:

- **newsflow, default settings**: :class:`models.enricher.Enricher` (what the Beam pipeline runs),
  batches of 64, with ``NEWSFLOW_MODELS_RUNTIME``/``PRECISION`` as set (default ``auto``: the runtime
  and precision measured fastest here, see :mod:`models.runtime`): the title and the lead embedded
  once each (topics, and the stance gate and headline claim through the encoder cache), the claims
  once, the ``lead+lexical`` gate for every (claim, article) pair and the headline, the pair model
  only for pairs that pass it; batched, length-sorted, padded to a multiple of 8 tokens.
- **newsflow, torch fp32**: the same layer with ``runtime=torch, precision=fp32`` (the previous path),
  and with ONNX Runtime int8 (``runtime=onnx, precision=int8``) unless ``--skip-int8``.
- **naive**: the same models used the obvious way, per article, torch fp32: encode title + body at 512
  tokens, encode each claim, run the pair model on every (claim, body) pair and the headline pair;
  no batching, no cache, no gate. Timed on a sample and reported per article.
- **ceiling, same work**: the bare forward passes (the default runtime's) of exactly the batches the
  default run sent to the encoder and the pair model (recorded, re-tokenised up front, replayed):
  the model layer's overhead is the gap to it.
- **ceiling, one torch-fp32 pass per article**: torch's bare batched fp32 forward pass over each
  article's title + lead (128 tokens, batch 64, pre-tokenised), measured first and last (the machine's
  load drift shows as their difference). The target is 1.2x its rate with topics and stance.
- **quality**: how many labels (primary topic, stance per claim and headline) the default run gives
  that differ from the torch-fp32 run on these articles, and the dev-set int8 verdicts of
  ``python -m models.runtime_check`` for this CPU's int8 kernels (committed or measured here).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.common import table
from models.enricher import Enricher
from models.runtime import cpu_description, quality_records
from models.stance import encode_pair_batch
from models.text import article_lead
from models.topics import TopicClassifier, topic_text
from newsflow.config import REPO_ROOT, Settings
from newsflow.records import Article, Enriched, content_hash

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


def run_newsflow(
    enricher: Enricher, articles: list[Article], batch: int
) -> tuple[float, float, list[Enriched]]:
    """Wall seconds, CPU seconds of this process (all threads; less sensitive to other processes' load
    than the wall time) and the records."""
    out: list[Enriched] = []
    start, cpu = time.perf_counter(), time.process_time()
    for i in range(0, len(articles), batch):
        out.extend(enricher.enrich(articles[i : i + batch], run_id="bench"))
    return time.perf_counter() - start, time.process_time() - cpu, out


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

        def record_pairs(claims: list[str], evidence: list[str]) -> np.ndarray:
            self.pair_batches.append((list(claims), list(evidence)))
            return pair_forward(claims, evidence)

        encoder._forward = record_encoder  # type: ignore[method-assign]
        stance._forward = record_pairs  # type: ignore[method-assign]


def run_same_work_ceiling(enricher: Enricher, recorder: Recorder) -> float:
    """The default runners' bare forward passes over the recorded batches, tokenised up front."""
    encoder, stance = enricher.encoder, enricher.stance
    inputs: list[tuple[Any, dict[str, np.ndarray]]] = [
        (encoder.runner, encoder.tokenize(b)) for b in recorder.encoder_batches
    ]
    if stance.runner is not None:
        inputs += [
            (stance.runner, encode_pair_batch(stance._tokenizer, claims, evidence, stance.max_tokens, "np"))
            for claims, evidence in recorder.pair_batches
        ]
    start = time.perf_counter()
    for runner, enc in inputs:
        runner(enc)
    return time.perf_counter() - start


@torch.inference_mode()
def run_one_pass_ceiling(enricher: Enricher, articles: list[Article], batch: int) -> float:
    """torch fp32, bare: one batched forward pass per article over its title + lead (128 tokens)."""
    encoder = enricher.encoder
    texts = sorted((topic_text(a.title, article_lead(a.text)) for a in articles), key=len)
    batches = [
        encoder.tokenizer(
            texts[i : i + batch], padding=True, truncation=True, max_length=128, return_tensors="pt"
        )
        for i in range(0, len(texts), batch)
    ]
    start = time.perf_counter()
    for enc in batches:
        encoder.model(**enc)
    return time.perf_counter() - start


def labels(records: list[Enriched]) -> list[str]:
    """Every label a run gave, in order: primary topic, then each stance (claims, headline)."""
    out = []
    for record in records:
        out.append(record.primary_topic)
        out.extend(s.label for s in record.stances)
        out.append(record.headline_stance.label if record.headline_stance else "-")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--articles", type=int, default=1000)
    parser.add_argument("--naive-sample", type=int, default=30)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--skip-int8", action="store_true", help="do not measure the ONNX int8 model layer")
    args = parser.parse_args()
    if not (SHARED / "fnc1" / "train_bodies.csv").exists():
        raise SystemExit(f"needs the FNC-1 data in {SHARED / 'fnc1'} (set NEWSFLOW_SHARED_DATA)")
    settings = Settings()
    m = settings.models
    enricher = Enricher(m, settings.taxonomy_file)
    torch_fp32 = Enricher(
        m.model_copy(update={"runtime": "torch", "precision": "fp32"}), settings.taxonomy_file
    )
    articles = load_articles(args.articles)
    print(
        f"{len(articles)} articles (FNC-1 bodies, median {int(np.median([len(a.text) for a in articles]))} "
        f"chars), {len(enricher.claims)} claims + headline stance each; {cpu_description()}, "
        f"{len(os.sched_getaffinity(0))} CPUs, torch threads {torch.get_num_threads()}; settings "
        f"runtime={m.runtime} precision={m.precision}: {enricher.runtime} "
        f"(encoder: {enricher.encoder.runner.reason}; stance: "
        f"{enricher.stance.runner.reason if enricher.stance.runner else 'gate-only'})"
    )
    # warm-up: first-call allocations, ONNX Runtime's kernel choices, the claims' embeddings
    for warm in (enricher, torch_fp32):
        warm.enrich(articles[:8], run_id="warm-up")
        warm.encoder._cache.clear()
    one_pass_first = run_one_pass_ceiling(torch_fp32, articles, args.batch)
    recorder = Recorder(enricher)
    ours, ours_cpu, ours_records = run_newsflow(enricher, articles, args.batch)
    same_work = run_same_work_ceiling(enricher, recorder)
    stats, cache = dict(enricher.stance.stats), dict(enricher.encoder.stats)
    torch_time, torch_cpu, torch_records = run_newsflow(torch_fp32, articles, args.batch)
    compared = [("default", ours_records)]
    n = len(articles)
    rates = {f"newsflow model layer, default ({enricher.runtime})": n / ours}
    rates[f"newsflow model layer, torch fp32 ({torch_fp32.runtime})"] = n / torch_time
    cpu_ms = {name: cpu / n * 1000 for name, cpu in zip(rates, (ours_cpu, torch_cpu), strict=True)}
    if not args.skip_int8 and m.precision != "int8":
        int8 = Enricher(m.model_copy(update={"runtime": "onnx", "precision": "int8"}), settings.taxonomy_file)
        int8.enrich(articles[:8], run_id="warm-up")
        int8.encoder._cache.clear()
        int8_time, int8_cpu, int8_records = run_newsflow(int8, articles, args.batch)
        rates[f"newsflow model layer, ONNX int8 ({int8.runtime})"] = n / int8_time
        cpu_ms[f"newsflow model layer, ONNX int8 ({int8.runtime})"] = int8_cpu / n * 1000
        compared.append(("ONNX int8", int8_records))
    naive = run_naive(torch_fp32, articles[: args.naive_sample])
    one_pass_last = run_one_pass_ceiling(torch_fp32, articles, args.batch)
    one_pass = (one_pass_first + one_pass_last) / 2
    rates[f"naive per-article torch fp32 loop ({args.naive_sample} articles)"] = args.naive_sample / naive
    rates["ceiling, same work: bare forward of the same batches (default runtime)"] = (
        len(articles) / same_work
    )
    rates["ceiling, one torch-fp32 pass per article (first / last)"] = len(articles) / one_pass
    rows = [
        (name, f"{rate:,.1f}", f"{cpu_ms[name]:,.0f}" if name in cpu_ms else "")
        for name, rate in rates.items()
    ]
    rows[-1] = (
        rows[-1][0],
        f"{n / one_pass:,.1f} ({n / one_pass_first:,.1f} / {n / one_pass_last:,.1f})",
        "",
    )
    print(table(rows, ("what", "articles/s", "CPU ms/article")))
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
        f"default / torch fp32 layer: {torch_time / ours:.2f}x;  default / naive: "
        f"{ours_rate * naive / args.naive_sample:.1f}x;  "
        f"default / ceiling (same work): {same_work / ours:.2f};  "
        f"default / one torch-fp32 pass per article: {one_pass / ours:.2f}x (target >= 1.2)"
    )
    base = labels(torch_records)
    for name, records in compared:
        got = labels(records)
        differ = sum(a != b for a, b in zip(got, base, strict=True))
        print(f"quality: {name} vs torch fp32 on these articles: {differ} of {len(base)} labels differ")
    verdicts = quality_records()
    if verdicts:
        for key, record in sorted(verdicts.items()):
            print(f"quality: dev-set int8 verdict for {key} ({record['when']}): passed={record['passed']}")
            for name, result in record["results"].items():
                print(f"    {name}: {json.dumps(result)}")
    else:
        print("quality: no dev-set int8 verdict for this CPU kind yet (make check-runtime)")


if __name__ == "__main__":
    main()
