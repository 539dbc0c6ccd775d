"""Stance: sentence selection, FNC-1 file helpers, StanceModel plumbing (tiny models), artifact round trip,
bad input, and the quality of the trained artifact on a body-disjoint FNC-1 dev sample (skips without data).
"""

from __future__ import annotations

import collections
import json
import os
import random
from pathlib import Path

import pytest
import torch

from models.encoder import Encoder, default_encoder_path
from models.fnc import FncPair, body_disjoint_split, load_pairs, read_stances, write_predictions
from models.metrics import classification_report, fnc_score
from models.stance import (
    ARTIFACT_CONFIG,
    DEFAULT_ARTIFACT_DIR,
    GATE_ONLY,
    PAIR_LABELS,
    EvidenceSelector,
    SelectionConfig,
    StanceModel,
    build_pair_model,
    load_stance_artifact,
    read_stance_json,
    save_stance_artifact,
    select_sentences,
)
from models.text import lexical_similarity, split_sentences
from models.train_stance import calibrate_threshold, fit_gate
from newsflow.errors import ConfigError, ModelError
from newsflow.records import STANCE_LABELS

REPO = Path(__file__).resolve().parents[2]
SHARED_DATA = Path(os.environ.get("NEWSFLOW_SHARED_DATA", REPO.parent / "shared" / "data"))

RELATED = (
    "Scientists confirm the meteorite crashed in Managua",
    "A small meteorite crashed into a wooded area "
    "in Managua, the capital of Nicaragua, the government said. Scientists confirmed the crater was made by "
    "a meteorite.",
)
UNRELATED = (
    "Apple unveils a new streaming TV service",
    "The recipe calls for two cups of flour, a pinch of salt and butter. Bake the bread for forty minutes.",
)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(precision="fp32")


def _tiny_classifier(path: Path, id2label: dict[int, str]) -> Path:
    from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification

    tokenizer = AutoTokenizer.from_pretrained(str(default_encoder_path()))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
    )
    torch.manual_seed(0)
    BertForSequenceClassification(config).save_pretrained(str(path))
    tokenizer.save_pretrained(str(path))
    return path


@pytest.fixture(scope="module")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # labels in an unusual order and case, plus an extra 'unrelated' label: mapped by name
    return _tiny_classifier(
        tmp_path_factory.mktemp("tiny") / "clf", {0: "Discuss", 1: "AGREE", 2: "unrelated", 3: "disagree"}
    )


# ---------------------------------------------------------------------------------------------------------
# sentence splitting and selection


def test_split_sentences_basic_and_abbreviations() -> None:
    text = (
        "Mr. Smith went to Washington on Monday morning. He met the U.S. president at the White House!\n\n"
        "Was it planned? Nobody knows yet, really."
    )
    assert split_sentences(text) == [
        "Mr. Smith went to Washington on Monday morning.",
        "He met the U.S. president at the White House!",
        "Was it planned? Nobody knows yet, really.",  # the 15-character fragment is merged
    ]


def test_split_sentences_bad_input_is_bounded() -> None:
    assert split_sentences("") == []
    assert split_sentences("\x00\x01\x02 \x7f") == []
    assert split_sentences("Hello\x00world, this is text with\x07 control characters.") == [
        "Hello world, this is text with control characters."
    ]
    cfg = SelectionConfig(max_sentences=10, max_sentence_chars=300)
    huge = "word " * 200_000  # 1 MB without any punctuation
    out = cfg.split(huge)
    assert 0 < len(out) <= 10 and all(len(s) <= 300 for s in out)
    cjk = split_sentences(
        "这是一个关于地震的新闻报道、报道说这次地震造成了严重的破坏和人员伤亡。"
        "第二句话也在这里、政府表示救援工作正在进行之中并且会持续很多天。"
    )
    assert len(cjk) == 2 and cjk[0].endswith("。")


def test_select_sentences_keeps_lead_and_best_in_order() -> None:
    sims = [0.1, 0.2, 0.9, 0.05, 0.8]
    counts = [10, 10, 10, 10, 10]
    assert select_sentences(sims, counts, budget=30, top_k=4) == [0, 2, 4]
    assert select_sentences(sims, counts, budget=100, top_k=1) == [0, 2]
    assert select_sentences(sims, [10, 10, 50, 10, 10], budget=30, top_k=4) == [0, 1, 4]  # 2 does not fit
    assert select_sentences(sims, counts, budget=30, top_k=2, include_lead=False) == [2, 4]
    assert select_sentences([], [], budget=30) == []


# ---------------------------------------------------------------------------------------------------------
# FNC-1 files and the split


def _pairs(n_bodies: int = 30) -> list[FncPair]:
    labels = list(STANCE_LABELS)
    return [
        FncPair(f"headline {b}-{h}", str(b), f"body {b}", labels[(b + h) % 4])
        for b in range(n_bodies)
        for h in range(1 + b % 5)
    ]


def test_body_disjoint_split() -> None:
    pairs = _pairs()
    train, dev = body_disjoint_split(pairs, dev_fraction=0.2, seed=7)
    assert len(train) + len(dev) == len(pairs)
    train_bodies = {p.body_id for p in train}
    dev_bodies = {p.body_id for p in dev}
    assert not train_bodies & dev_bodies
    assert len(dev_bodies) == 6
    assert body_disjoint_split(pairs, 0.2, 7) == (train, dev)  # seeded
    assert body_disjoint_split(pairs, 0.2, 8)[1] != dev


def test_fnc_files_round_trip(tmp_path: Path) -> None:
    stances = tmp_path / "stances.csv"
    bodies = tmp_path / "bodies.csv"
    stances.write_text(
        '\ufeffHeadline,Body ID,Stance\n"Claim, with comma",7,Agree\nOther,8,unrelated\n', "utf-8"
    )
    bodies.write_text('\ufeffBody ID,articleBody\n7,"Line one.\nLine ""two""."\n8,Body eight\n', "utf-8")
    pairs = load_pairs(stances, bodies)
    assert pairs[0] == FncPair("Claim, with comma", "7", 'Line one.\nLine "two".', "agree")
    assert pairs[1].stance == "unrelated"
    out = tmp_path / "pred.csv"
    assert write_predictions(out, pairs, ["discuss", "unrelated"]) == 2
    assert read_stances(out) == [("Claim, with comma", "7", "discuss"), ("Other", "8", "unrelated")]
    unlabelled = tmp_path / "test.csv"
    unlabelled.write_text("Headline,Body ID\nX,7\n", "utf-8")
    assert load_pairs(unlabelled, bodies)[0].stance is None
    bad = tmp_path / "bad.csv"
    bad.write_text("Headline,Body ID,Stance\nX,7,maybe\n", "utf-8")
    with pytest.raises(ConfigError):
        read_stances(bad)
    missing = tmp_path / "missing.csv"
    missing.write_text("Headline,Stance\nX,agree\n", "utf-8")
    with pytest.raises(ConfigError):
        read_stances(missing)


def test_calibrate_threshold() -> None:
    result = calibrate_threshold([0.9, 0.8, 0.7, 0.3, 0.2, 0.6], [True, True, True, False, False, False])
    assert 0.6 < result["threshold"] < 0.7
    assert result["f1"] == pytest.approx(1.0)
    assert result["accuracy"] == pytest.approx(1.0)


def test_lexical_similarity_ranks_sentences_sharing_rare_claim_words() -> None:
    sentences = [
        "The government said on Monday that the report was published.",
        "A meteorite crashed into a wooded area near Managua, scientists said.",
        "The government said the report was long.",
    ]
    scores = lexical_similarity("Meteorite crashed in Managua, the government said", sentences)
    assert scores.shape == (3,)
    assert int(scores.argmax()) == 1  # rare shared words (meteorite, Managua) beat common ones (government)
    assert scores[0] > 0 and scores[2] > 0
    assert lexical_similarity("", sentences).tolist() == [0.0, 0.0, 0.0]
    assert lexical_similarity("anything", []).shape == (0,)


def test_gate_config_is_validated() -> None:
    with pytest.raises(ModelError, match="unknown stance gate"):
        SelectionConfig.from_dict({"gate": "nearest"})
    with pytest.raises(ModelError, match="evidence scorer"):
        SelectionConfig.from_dict({"scorer": "tfidf"})
    with pytest.raises(ModelError, match="4 gate_weights"):
        SelectionConfig.from_dict({"gate_weights": [1.0, 2.0]})
    # an artifact written before BM25 ranking existed keeps the embedding ranking it was trained with
    assert SelectionConfig.from_dict({"gate": "max+lead"}).scorer == "embedding"
    assert SelectionConfig.from_dict(None).scorer == "lexical"
    cfg = SelectionConfig.from_dict({"gate_weights": [10, 0, 0, -5]})
    assert cfg.gate_weights == (10.0, 0.0, 0.0, -5.0)
    assert cfg.gate_score(0.5, 0.0, 0.0) == pytest.approx(0.5)
    assert not cfg.needs_sentence_embeddings
    assert SelectionConfig(gate="max+lead").needs_sentence_embeddings


def test_fit_gate_learns_weights_and_threshold_from_labelled_pairs(encoder: Encoder) -> None:
    selector = EvidenceSelector(encoder, SelectionConfig(gate_weights=(0.0, 0.0, 0.0, 0.0)))
    pairs = [RELATED, UNRELATED] * 6
    prepared = selector.prepare(pairs, with_evidence=False)
    assert {x.similarity for x in prepared} == {0.5}  # zero weights: no signal yet
    assert prepared[0].features[1] > prepared[1].features[1]  # more claim words in the related body
    selection, gate = fit_gate(selection=selector.config, prepared=prepared, related=[True, False] * 6)
    assert selection.gate_weights != (0.0, 0.0, 0.0, 0.0) and selection.gate_weights[0] > 0
    assert gate["accuracy"] == 1.0
    scores = [selection.gate_score(*x.features) for x in prepared[:2]]
    assert scores[0] >= gate["threshold"] > scores[1]


# ---------------------------------------------------------------------------------------------------------
# StanceModel plumbing


def test_full_model_by_path_labels_and_gate(encoder: Encoder, tiny_model_dir: Path) -> None:
    # the lead+lexical gate score is a probability below 1: a threshold of 1 calls every pair unrelated
    strict = StanceModel(encoder, str(tiny_model_dir), related_threshold=1.0, precision="fp32")
    out = strict.predict([UNRELATED, RELATED])
    assert [label for label, _ in out] == ["unrelated", "unrelated"]
    assert all(0.5 <= score <= 1.0 for _, score in out)
    assert strict.lineage["stance"].startswith("clf@")
    assert strict.lineage["stance_gate"].endswith("@1.0000")

    loose = StanceModel(encoder, str(tiny_model_dir), related_threshold=0.0, max_tokens=64, batch_size=2)
    details = loose.analyze([RELATED, UNRELATED, RELATED])
    assert all(d.label in PAIR_LABELS for d in details)  # the model's extra 'unrelated' label is not used
    assert all(0.0 <= d.score <= 1.0 and sum(d.probabilities.values()) == pytest.approx(1.0) for d in details)
    # deterministic up to batch padding, order restored after length sorting
    assert details[0].label == details[2].label
    assert details[0].score == pytest.approx(details[2].score, abs=1e-4)
    assert loose.stats["pair_model"] == 3
    assert loose.predict([]) == []


def test_threshold_must_fit_the_gate_score_and_unrelated_confidence_spans_to_one(encoder: Encoder) -> None:
    with pytest.raises(ModelError, match="outside the lead\\+lexical gate's score range"):
        StanceModel(encoder, GATE_ONLY, related_threshold=-0.2)
    strict = StanceModel(encoder, GATE_ONLY, related_threshold=1.0)
    (label, confidence), (_, far) = strict.predict([UNRELATED, ("", "")])
    assert label == "unrelated" and 0.5 < confidence <= 1.0
    detail = strict.analyze([UNRELATED])[0]
    assert confidence == pytest.approx(0.5 + 0.5 * (1.0 - detail.similarity))  # 1.0 at score 0
    assert far == 1.0  # nothing to compare
    assert ":lead+lexical-" in strict.lineage["stance_gate"]


def test_default_threshold_separates_obvious_pairs(encoder: Encoder) -> None:
    gate = StanceModel(encoder, GATE_ONLY)
    (rel_label, rel_score), (unrel_label, _) = gate.predict([RELATED, UNRELATED])
    assert rel_label == "discuss" and rel_score >= gate.threshold
    assert unrel_label == "unrelated"
    assert gate.gate_only
    assert gate.lineage["stance"].startswith("gate-only")


def test_bad_labels_and_sources_raise_model_error(encoder: Encoder, tmp_path: Path) -> None:
    bad = _tiny_classifier(tmp_path / "bad", {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"})
    with pytest.raises(ModelError, match="agree"):
        StanceModel(encoder, str(bad))
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelError):
        StanceModel(encoder, str(tmp_path / "empty"))
    with pytest.raises(ModelError):
        StanceModel(encoder, GATE_ONLY, related_threshold=2.0)


def test_bad_input_gives_labels(encoder: Encoder, tiny_model_dir: Path) -> None:
    model = StanceModel(encoder, str(tiny_model_dir), related_threshold=0.0, max_tokens=64)
    pairs = [
        ("", ""),
        ("claim", ""),
        ("", "body text here."),
        ("\x00\x01 claim \x7f", "\x07body\x00 with control\x1b characters. Another sentence here."),
        ("A claim about a long article", "This sentence repeats a lot. " * 35_000),  # ~1 MB
        ("x" * 100_000, "A body."),
        ("地震造成严重破坏", "这是一个关于地震的新闻报道内容很长。第二句话也在这里同样很长很长很长。"),
        ("Ein Erdbeben hat die Stadt zerstört", "Das Erdbeben zerstörte viele Häuser in der Stadt."),
    ]
    out = model.predict(pairs)
    assert len(out) == len(pairs)
    assert all(label in STANCE_LABELS and 0.0 <= score <= 1.0 for label, score in out)
    assert [label for label, _ in out[:3]] == ["unrelated"] * 3  # nothing to relate, whatever the threshold
    gate = StanceModel(encoder, GATE_ONLY)
    assert all(label in STANCE_LABELS for label, _ in gate.predict(pairs))


# ---------------------------------------------------------------------------------------------------------
# the delta artifact


def test_delta_artifact_round_trip(tmp_path: Path, encoder: Encoder) -> None:
    torch.manual_seed(1)
    model, tokenizer = build_pair_model()
    names = [n for n, _ in model.named_parameters() if n.startswith(("classifier.", "bert.encoder.layer.5."))]
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name in names:
                param.add_(torch.randn_like(param) * 0.05)
    meta = {
        "name": "tiny-delta",
        "labels": list(PAIR_LABELS),
        "max_tokens": 64,
        "selection": SelectionConfig(top_k=2).to_dict(),
        "gate": {"threshold": 0.33, "encoder_fingerprint": encoder.info.version},
    }
    out = save_stance_artifact(model, tmp_path / "art", meta, names)
    assert (out / "delta.safetensors").stat().st_size < 5_000_000  # one layer + head, fp16
    loaded, _, loaded_meta = load_stance_artifact(out)
    enc = tokenizer(["a claim"], ["some evidence sentence."], return_tensors="pt")
    model.eval()
    with torch.no_grad():
        assert torch.allclose(model(**enc).logits, loaded(**enc).logits, atol=2e-2)
    assert loaded_meta["delta"]["tensors"] == len(names)

    stance = StanceModel(encoder, str(out))
    assert stance.threshold == pytest.approx(0.33)
    assert stance.max_tokens == 64 and stance.selection.top_k == 2
    assert stance.lineage["stance"].startswith("tiny-delta@")
    assert all(label in STANCE_LABELS for label, _ in stance.predict([RELATED, UNRELATED]))

    data = json.loads((out / ARTIFACT_CONFIG).read_text())
    data["base_model"]["fingerprint"] = "0123456789ab"
    (out / ARTIFACT_CONFIG).write_text(json.dumps(data))
    with pytest.raises(ModelError, match="base MiniLM"):
        load_stance_artifact(out)


# ---------------------------------------------------------------------------------------------------------
# quality of the trained artifact on real data


def _quality_sample(meta: dict[str, object], n_max: int = 300) -> list[FncPair]:
    fnc = SHARED_DATA / "fnc1"
    pairs = load_pairs(fnc / "train_stances.csv", fnc / "train_bodies.csv")
    recipe = meta.get("recipe") or {}
    assert isinstance(recipe, dict)
    _, dev = body_disjoint_split(pairs, float(recipe.get("dev_fraction", 0.2)), int(recipe.get("seed", 13)))
    rng = random.Random(0)
    by_body: dict[str, list[FncPair]] = collections.defaultdict(list)
    for p in dev:
        by_body[p.body_id].append(p)
    with_disagree = sorted(b for b, ps in by_body.items() if any(p.stance == "disagree" for p in ps))
    others = sorted(set(by_body) - set(with_disagree))
    bodies = rng.sample(with_disagree, min(16, len(with_disagree))) + rng.sample(others, min(16, len(others)))
    pool = [p for b in bodies for p in by_body[b]]
    caps = {"unrelated": 100, "discuss": 70, "agree": 60, "disagree": 40}
    rng.shuffle(pool)
    sample: list[FncPair] = []
    counts: collections.Counter[str] = collections.Counter()
    for p in pool:
        if p.stance and counts[p.stance] < caps[p.stance] and len(sample) < n_max:
            sample.append(p)
            counts[p.stance] += 1
    return sample


@pytest.mark.quality
def test_trained_artifact_quality_on_dev_sample(encoder: Encoder) -> None:
    """~270 class-stratified pairs from 32 bodies of the artifact's own body-disjoint dev split."""
    if not (SHARED_DATA / "fnc1" / "train_stances.csv").exists():
        pytest.skip(f"FNC-1 data not found under {SHARED_DATA} (set NEWSFLOW_SHARED_DATA)")
    if not (DEFAULT_ARTIFACT_DIR / ARTIFACT_CONFIG).exists():
        pytest.skip(f"no trained stance artifact at {DEFAULT_ARTIFACT_DIR}; run 'make train-stance'")
    sample = _quality_sample(read_stance_json(DEFAULT_ARTIFACT_DIR))
    model = StanceModel(encoder)
    pred = [label for label, _ in model.predict([(p.headline, p.body) for p in sample])]
    gold = [str(p.stance) for p in sample]
    report = classification_report(gold, pred, list(STANCE_LABELS))
    score, best = fnc_score(gold, pred)
    related_acc = sum(
        (g == "unrelated") == (p == "unrelated") for g, p in zip(gold, pred, strict=True)
    ) / len(gold)
    summary = f"\n{report.format()}\nFNC relative {score / best:.3f}, related accuracy {related_acc:.3f}"
    assert len(sample) >= 250, summary
    assert related_acc >= 0.9, summary
    # the sample is class-stratified (related pairs over-represented), so the FNC score, which weights a
    # related pair 4x an unrelated one, sits below its ~0.87 on the natural dev distribution
    assert score / best >= 0.65, summary
    assert report.macro_f1 >= 0.5, summary
