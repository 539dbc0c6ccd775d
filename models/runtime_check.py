"""Does int8 keep the labels? Stance and topic quality on the dev sets, ONNX int8 against fp32.

Run: ``python -m models.runtime_check [--fnc-dir DIR] [--topics DEV.jsonl] [--publish]``
(``make check-runtime``; defaults: ``../shared/data/fnc1`` and ``../shared/data/topics/dev.jsonl``).
On the stance artifact's body-disjoint FNC-1 dev split (the same split its card reports) and the
topic dev set, it scores the model layer with both models on ONNX fp32 (the reference), then:

- **ONNX int8** for both models (and, when that loses too much, for each alone): stance FNC score and
  macro-F1, and topic macro-F1, each within :data:`models.runtime.QUALITY_TOLERANCE` (0.005) of fp32;
- with ``--with-torch``, **torch fp32**, to compare its labels with ONNX fp32's on the whole dev sets
  (the export check on every first use compares embeddings and labels on a small bundled sample).

The verdicts are recorded per model key and family of int8 kernels (their rounding differs between
CPU kinds: AVX512-VNNI, AVX-VNNI, AVX2...) in this machine's ``.cache/onnx/quality.json``, and with
``--publish`` in the committed ``models/artifacts/int8-quality.json``; ``NEWSFLOW_MODELS_PRECISION=auto``
considers int8 for a model only where its verdict passed. The topic figures use the committed topic
head, which was trained on the topic dev set (in-sample for both precisions: the comparison shows
what the precision changes).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from models.encoder import Encoder
from models.fnc import FncPair, body_disjoint_split, load_pairs
from models.metrics import classification_report, fnc_score
from models.runtime import (
    DEFAULT_CACHE_DIR,
    PUBLISHED_QUALITY,
    QUALITY_TOLERANCE,
    int8_kernels,
    record_quality,
)
from models.stance import DEFAULT_ARTIFACT_DIR, StanceModel, read_stance_json
from models.taxonomy import load_taxonomy
from models.topics import TopicClassifier, load_head
from newsflow.config import REPO_ROOT, Settings

log = logging.getLogger(__name__)

SHARED = REPO_ROOT.parent / "shared" / "data"
STANCE_LABELS = ("agree", "disagree", "discuss", "unrelated")


@dataclass
class Score:
    """Quality of one configuration on the dev sets, and its labels (to compare with fp32's)."""

    name: str
    fnc: float
    stance_f1: float
    topics_f1: float
    stance_labels: list[str]
    topic_labels: list[str]
    seconds: float

    def loss(self, reference: Score) -> float:
        """The largest drop against ``reference`` over the three measures."""
        drops = (reference.fnc - self.fnc, reference.stance_f1 - self.stance_f1)
        return max(*drops, reference.topics_f1 - self.topics_f1)

    def to_dict(self, reference: Score | None = None) -> dict[str, Any]:
        data: dict[str, Any] = {
            "fnc": round(self.fnc, 4),
            "stance_macro_f1": round(self.stance_f1, 4),
            "topics_macro_f1": round(self.topics_f1, 4),
            "seconds": round(self.seconds, 1),
        }
        if reference is not None:
            data["loss"] = round(self.loss(reference), 4)
            data["stance_labels_identical"] = _same(self.stance_labels, reference.stance_labels)
            data["topic_labels_identical"] = _same(self.topic_labels, reference.topic_labels)
        return data


def _same(a: Sequence[str], b: Sequence[str]) -> float:
    return round(sum(x == y for x, y in zip(a, b, strict=True)) / max(len(a), 1), 4)


def score(
    name: str,
    encoder: Encoder,
    pair: tuple[str, str],
    stance_dev: Sequence[FncPair],
    topic_rows: Sequence[dict[str, Any]],
    settings: Settings,
) -> Score:
    """The model layer's stance and topic quality with ``encoder`` and the pair model at ``pair``
    (``(runtime, precision)``)."""
    started = time.perf_counter()
    stance = StanceModel(encoder, settings.models.stance_model, runtime=pair[0], precision=pair[1])
    predicted: list[str] = [d.label for d in stance.analyze([(p.headline, p.body) for p in stance_dev])]
    gold = [str(p.stance) for p in stance_dev]
    report = classification_report(gold, predicted, list(STANCE_LABELS))
    got, best = fnc_score(gold, predicted)
    taxonomy = load_taxonomy(settings.taxonomy_file)
    topics = TopicClassifier(encoder, taxonomy, load_head(settings.models.topic_head))
    predictions = topics.classify_articles([(r.get("title", ""), r.get("text", "")) for r in topic_rows])
    topic_gold = []
    for row, pred in zip(topic_rows, predictions, strict=True):
        labels = row.get("labels") or [row.get("label")]
        topic_gold.append(pred.primary_topic if pred.primary_topic in labels else labels[0])
    primary = [p.primary_topic for p in predictions]
    topic_report = classification_report(topic_gold, primary, topics.labels)
    return Score(
        name,
        got / best if best else 0.0,
        report.macro_f1,
        topic_report.macro_f1,
        predicted,
        primary,
        time.perf_counter() - started,
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--fnc-dir", type=Path, default=SHARED / "fnc1")
    parser.add_argument("--topics", type=Path, default=SHARED / "topics" / "dev.jsonl")
    parser.add_argument("--limit", type=int, default=None, help="score only the first N dev pairs (smoke)")
    parser.add_argument("--no-record", action="store_true", help="print the verdicts, do not record them")
    parser.add_argument(
        "--publish",
        action="store_true",
        help=f"also record the verdicts in {PUBLISHED_QUALITY.name} (committed)",
    )
    parser.add_argument(
        "--with-torch", action="store_true", help="also score torch fp32 (labels identical to ONNX fp32?)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings()
    recipe = read_stance_json(settings.models.stance_model or DEFAULT_ARTIFACT_DIR).get("recipe", {})
    pairs = load_pairs(args.fnc_dir / "train_stances.csv", args.fnc_dir / "train_bodies.csv")
    _, dev = body_disjoint_split(pairs, float(recipe.get("dev_fraction", 0.2)), int(recipe.get("seed", 13)))
    dev = dev[: args.limit] if args.limit else dev
    with open(args.topics, encoding="utf-8") as fh:
        topic_rows = [json.loads(line) for line in fh if line.strip()]
    print(f"stance dev: {len(dev)} pairs; topics dev: {len(topic_rows)} articles ({args.topics.name})")

    m = settings.models
    encoders = {
        precision: Encoder(m.encoder, max_tokens=m.max_tokens, runtime="onnx", precision=precision)
        for precision in ("fp32", "int8")
    }
    configs = [("onnx fp32 (reference)", "fp32", "fp32"), ("onnx int8 both", "int8", "int8")]
    if args.with_torch:
        encoders["torch"] = Encoder(m.encoder, max_tokens=m.max_tokens, runtime="torch", precision="fp32")
        configs.insert(1, ("torch fp32", "torch", "fp32"))
    results: dict[str, Score] = {}

    def run(name: str, encoder_name: str, pair_precision: str) -> Score:
        encoder = encoders[encoder_name]
        encoder._cache.clear()
        pair = ("torch" if encoder_name == "torch" else "onnx", pair_precision)
        results[name] = score(name, encoder, pair, dev, topic_rows, settings)
        shown = results[name].to_dict(results.get("onnx fp32 (reference)"))
        print(f"{name}: {json.dumps(shown)}", flush=True)
        return results[name]

    for name, encoder_name, pair_precision in configs:
        run(name, encoder_name, pair_precision)
    reference = results["onnx fp32 (reference)"]
    if results["onnx int8 both"].loss(reference) <= QUALITY_TOLERANCE:
        verdict = {"encoder": True, "pair": True}
    else:  # which one costs the quality? each alone
        encoder_only = run("onnx int8 encoder, fp32 pair", "int8", "fp32").loss(reference)
        pair_only = run("onnx fp32 encoder, int8 pair", "fp32", "int8").loss(reference)
        verdict = {"encoder": encoder_only <= QUALITY_TOLERANCE, "pair": pair_only <= QUALITY_TOLERANCE}
        if all(verdict.values()):  # each passes alone, not together: keep the one that loses less
            verdict["encoder" if encoder_only > pair_only else "pair"] = False
    print(f"int8 offered to precision=auto (loss <= {QUALITY_TOLERANCE} on every measure): {verdict}")
    if args.no_record or args.limit:
        print("not recorded (--no-record or --limit)")
        return 0
    stance = StanceModel(encoders["fp32"], m.stance_model, runtime="onnx", precision="fp32")
    assert stance.runner is not None
    keys = {"encoder": encoders["fp32"].runner.key, "pair": stance.runner.key}
    when = time.strftime("%Y-%m-%d %H:%M")
    details = {name: result.to_dict(reference) for name, result in results.items()}
    for kind, passed in verdict.items():
        record = {"passed": passed, "when": when, "tolerance": QUALITY_TOLERANCE, "results": details}
        record["dev"] = {"stance_pairs": len(dev), "topic_articles": len(topic_rows)}
        for path in [DEFAULT_CACHE_DIR / "quality.json"] + ([PUBLISHED_QUALITY] if args.publish else []):
            record_quality(kind, keys[kind], record, path)  # type: ignore[arg-type]
            print(f"recorded the {kind} verdict for {int8_kernels()} int8 kernels in {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
