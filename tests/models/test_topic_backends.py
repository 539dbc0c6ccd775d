"""Topic backends beside the embedding one: zero-shot NLI through transformers' pipeline and a fine-tuned
sequence classifier, with tiny randomly initialised models built here (no Hub, no downloads).

Where a test needs the model to have an opinion, its classification layer is set by hand (zero weights,
chosen biases), so the expected scores are known exactly and a wrong label mapping fails the test.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from models.encoder import model_fingerprint
from models.enricher import Enricher
from models.stance import GATE_ONLY
from models.taxonomy import OTHER, Taxonomy
from models.topic_backends import (
    SequenceTopicClassifier,
    ZeroShotTopicClassifier,
    build_topic_classifier,
    hypothesis,
)
from models.topics import TopicPrediction
from newsflow.cli import app
from newsflow.config import DEFAULT_TAXONOMY, ModelSettings, Settings
from newsflow.errors import ConfigError, ModelError
from newsflow.records import Article, content_hash

NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
VOCAB_TEXT = (
    "the a an of in to and is on for by with from at as this that news article about syria syrian war "
    "conflict election elections interference vote voters russia russian sanctions damascus aleppo "
    "strike strikes hackers campaign other weather football market stocks rain"
)
WORDS = VOCAB_TEXT.split()
POSITIONS = 64  # smaller than max_tokens below: truncation must respect the model's limit
HARD_INPUTS = [
    "Russian strikes hit Aleppo as the Syrian war goes on",
    "",
    "\x00\x01\x07 control \x1b[31m characters \ufeff\x7f in\x0bthe text \u200b",
    "war " * 262_144,  # 1 MiB
    "Вибори у Молдові: Росія втручається? 叙利亚冲突 الحرب في سوريا",
]


def _tokenizer(path: Path) -> None:
    from transformers import BertTokenizerFast

    path.mkdir(parents=True, exist_ok=True)
    vocab = path / "vocab.txt"
    letters = list("abcdefghijklmnopqrstuvwxyz0123456789.,?!'-:")
    vocab.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *WORDS, *letters]) + "\n")
    BertTokenizerFast(vocab_file=str(vocab)).save_pretrained(str(path))


def tiny_model(
    path: Path,
    id2label: dict[int, str],
    bias: list[float] | None = None,
    problem_type: str | None = None,
) -> Path:
    """A 2-layer BERT sequence classifier; ``bias`` fixes its logits (zero classifier weights)."""
    from transformers import BertConfig, BertForSequenceClassification

    _tokenizer(path)
    config = BertConfig(
        vocab_size=len((path / "vocab.txt").read_text().split()),
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=POSITIONS,
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        problem_type=problem_type,
    )
    torch.manual_seed(0)
    model = BertForSequenceClassification(config)
    if bias is not None:
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.copy_(torch.tensor(bias))
    model.save_pretrained(str(path))
    return path


def taxonomy(thresholds: dict[str, float] | None = None, **extra: dict[str, str]) -> Taxonomy:
    thresholds = thresholds or {}
    topics = [
        {"id": "syria_conflict", "description": "The war in Syria.", "examples": ["Strikes on Aleppo"]},
        {"id": "election_interference", "description": "Foreign meddling in elections."},
        {"id": OTHER, "description": "Everything else."},
    ]
    for topic in topics:
        if topic["id"] in thresholds:
            topic["threshold"] = thresholds[topic["id"]]  # type: ignore[assignment]
        topic.update(extra.get(str(topic["id"]), {}))
    claims = [{"id": "c1", "topic": "syria_conflict", "text": "Russian strikes hit Aleppo hospitals."}]
    return Taxonomy.model_validate({"topics": topics, "claims": claims})


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("topic-models")


@pytest.fixture(scope="module")
def nli_random(models_dir: Path) -> Path:
    return tiny_model(models_dir / "nli-random", NLI_LABELS)


@pytest.fixture(scope="module")
def nli_entails(models_dir: Path) -> Path:
    """Always says entailment: P(entailment vs contradiction) = sigmoid(6)."""
    return tiny_model(models_dir / "nli-entails", NLI_LABELS, bias=[0.0, 0.0, 6.0])


def check_valid(preds: list[TopicPrediction], tax: Taxonomy, n: int) -> None:
    assert len(preds) == n
    for pred in preds:
        assert isinstance(pred, TopicPrediction)
        assert set(pred.scores) == set(tax.labels)
        assert all(0.0 <= s <= 1.0 and not math.isnan(s) for s in pred.scores.values())
        assert pred.topics and pred.primary_topic == pred.topics[0][0]
        assert [s for _, s in pred.topics] == sorted((s for _, s in pred.topics), reverse=True)
        labels = [t for t, _ in pred.topics]
        assert (labels == [OTHER]) or (OTHER not in labels and set(labels) <= set(tax.labels))


def zero_shot(model: Path, tax: Taxonomy, **kwargs: object) -> ZeroShotTopicClassifier:
    options: dict = {"max_tokens": 128, "batch_size": 3, "precision": "fp32", **kwargs}
    return ZeroShotTopicClassifier(str(model), tax, **options)


# --- zero-shot ---------------------------------------------------------------------------------------


def test_zero_shot_gives_valid_predictions_for_hard_inputs(nli_random: Path) -> None:
    tax = taxonomy()
    classifier = zero_shot(nli_random, tax)
    assert classifier.tokenizer.model_max_length == POSITIONS  # max_tokens 128 capped by the model
    preds = classifier.classify(HARD_INPUTS)
    check_valid(preds, tax, len(HARD_INPUTS))
    assert preds[1] == TopicPrediction(
        OTHER, [(OTHER, 1.0)], {"syria_conflict": 0.0, "election_interference": 0.0, OTHER: 1.0}
    )
    for pred in (preds[0], preds[2], preds[3], preds[4]):  # the model ran: scores are not the empty ones
        assert 0.0 < pred.scores["syria_conflict"] < 1.0
    # the same text alone or in a batch of others gets the same scores (order restored after sorting)
    alone = classifier.classify([HARD_INPUTS[4]])[0]
    assert alone.scores == pytest.approx(preds[4].scores, abs=1e-3)
    assert classifier.classify([]) == []


def test_zero_shot_thresholds_decide_multi_label(nli_random: Path) -> None:
    texts = ["Syrian war news", "election hackers", "rain"]
    everything = zero_shot(nli_random, taxonomy({"syria_conflict": 0.0, "election_interference": 0.0}))
    assert everything.classify([""])[0].topics == [(OTHER, 1.0)]  # nothing to read, whatever the thresholds
    for pred in everything.classify(texts):
        assert {t for t, _ in pred.topics} == {"syria_conflict", "election_interference"}
    nothing = zero_shot(nli_random, taxonomy({"syria_conflict": 1.01, "election_interference": 1.01}))
    for pred in nothing.classify(texts):
        assert pred.primary_topic == OTHER and [t for t, _ in pred.topics] == [OTHER]
        assert pred.scores[OTHER] == pytest.approx(
            1 - max(pred.scores["syria_conflict"], pred.scores["election_interference"]), abs=1e-3
        )


@pytest.mark.parametrize(
    ("id2label", "bias"),
    [
        (NLI_LABELS, [0.0, 0.0, 6.0]),
        ({0: "ENTAILMENT", 1: "neutral", 2: "Contradiction"}, [6.0, 0.0, 0.0]),
        ({0: "not_entailment", 1: "entailment"}, [0.0, 6.0]),
    ],
)
def test_zero_shot_reads_the_entailment_label(
    models_dir: Path, id2label: dict[int, str], bias: list[float]
) -> None:
    name = "nli-" + "-".join(id2label.values()).lower()
    model = tiny_model(models_dir / name, id2label, bias=bias)
    tax = taxonomy({"election_interference": 0.999})
    pred = zero_shot(model, tax).classify(["Syrian war news"])[0]
    expected = 1 / (1 + math.exp(-6))  # softmax of entailment (6) against contradiction (0)
    assert pred.scores["syria_conflict"] == pytest.approx(expected, abs=1e-3)
    assert pred.topics == [("syria_conflict", pytest.approx(expected, abs=1e-3))]  # 0.9975 < 0.999
    # and the other way round: a model that always says contradiction assigns nothing
    flipped = tiny_model(models_dir / f"{name}-flipped", id2label, bias=[-b for b in bias])
    assert zero_shot(flipped, tax).classify(["Syrian war news"])[0].primary_topic == OTHER


def test_zero_shot_without_an_entailment_label_says_so(models_dir: Path) -> None:
    model = tiny_model(models_dir / "sentiment", {0: "negative", 1: "positive"})
    with pytest.raises(ModelError, match=r"not an NLI model.*'entailment'.*classifier"):
        zero_shot(model, taxonomy())


def test_zero_shot_lineage_and_hypotheses(nli_entails: Path) -> None:
    tax = taxonomy(
        syria_conflict={"label": "the war in Syria"},
        election_interference={"hypothesis": "Foreign powers meddle in an election here."},
    )
    classifier = zero_shot(nli_entails, tax)
    assert classifier.hypotheses == [
        "This news article is about the war in Syria.",
        "Foreign powers meddle in an election here.",
    ]
    version = model_fingerprint(str(nli_entails))
    assert re.fullmatch(r"[0-9a-f]{12}", version)
    assert classifier.lineage["topics"] == f"nli-entails@{version}"
    other_template = zero_shot(nli_entails, tax, hypothesis_template="Topic: {}.")
    assert other_template.hypotheses[0] == "Topic: the war in Syria."
    assert other_template.lineage["topic_hypotheses"] != classifier.lineage["topic_hypotheses"]
    # without a label the id is the phrase
    assert hypothesis(taxonomy().topic("election_interference")) == (
        "This news article is about election interference."
    )


def test_taxonomy_label_fields_are_optional_and_keep_old_fingerprints() -> None:
    plain = taxonomy()
    assert "label" not in plain.model_dump_json() and "hypothesis" not in plain.model_dump_json()
    labelled = taxonomy(syria_conflict={"label": "the war in Syria"})
    assert labelled.fingerprint() != plain.fingerprint()


def test_zero_shot_hypotheses_must_differ(nli_random: Path) -> None:
    tax = taxonomy(syria_conflict={"label": "news"}, election_interference={"label": "news"})
    with pytest.raises(ConfigError, match="distinct 'label' or 'hypothesis'"):
        zero_shot(nli_random, tax)


# --- fine-tuned sequence classifier -----------------------------------------------------------------


def test_classifier_softmax_maps_labels_by_name(models_dir: Path) -> None:
    # labels in another order than the taxonomy's, with the model's own 'other'
    model = tiny_model(
        models_dir / "cls-softmax",
        {0: "election_interference", 1: OTHER, 2: "syria_conflict"},
        [-3.0, 0.0, 3.0],
    )
    tax = taxonomy()
    classifier = SequenceTopicClassifier(str(model), tax, max_tokens=128, batch_size=2)
    assert not classifier.multi_label
    assert classifier.lineage == {"topics": f"cls-softmax@{model_fingerprint(str(model))}"}
    preds = classifier.classify(HARD_INPUTS)
    check_valid(preds, tax, len(HARD_INPUTS))
    z = math.exp(-3) + 1 + math.exp(3)
    for i, pred in enumerate(preds):
        if i == 1:  # empty text
            assert pred.topics == [(OTHER, 1.0)]
            continue
        assert pred.scores["syria_conflict"] == pytest.approx(math.exp(3) / z, abs=1e-3)
        assert pred.scores["election_interference"] == pytest.approx(math.exp(-3) / z, abs=1e-3)
        assert pred.scores[OTHER] == pytest.approx(1 / z, abs=1e-3)  # the model's own 'other'
        assert pred.topics == [("syria_conflict", pytest.approx(math.exp(3) / z, abs=1e-3))]


def test_classifier_multi_label_sigmoid_and_thresholds(
    models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    model = tiny_model(
        models_dir / "cls-multi",
        {0: "syria_conflict", 1: "election_interference"},
        [2.0, 1.0],
        problem_type="multi_label_classification",
    )
    p_syria, p_election = 1 / (1 + math.exp(-2)), 1 / (1 + math.exp(-1))  # 0.881, 0.731
    both = SequenceTopicClassifier(str(model), taxonomy())
    assert both.multi_label
    pred = both.classify(["Syrian war and election hackers"])[0]
    assert [t for t, _ in pred.topics] == ["syria_conflict", "election_interference"]
    assert pred.scores["syria_conflict"] == pytest.approx(p_syria, abs=1e-3)
    assert pred.scores["election_interference"] == pytest.approx(p_election, abs=1e-3)
    assert pred.scores[OTHER] == pytest.approx(1 - p_syria, abs=1e-3)

    strict = SequenceTopicClassifier(str(model), taxonomy({"election_interference": 0.8}))
    assert [t for t, _ in strict.classify(["x"])[0].topics] == ["syria_conflict"]
    none = SequenceTopicClassifier(
        str(model), taxonomy({"syria_conflict": 0.9, "election_interference": 0.8})
    )
    assert none.classify(["x"])[0].topics == [(OTHER, pytest.approx(1 - p_syria, abs=1e-3))]

    # a watched topic the model has no label for is never assigned, even at threshold 0
    extra = Taxonomy.model_validate(
        {
            "topics": [
                *taxonomy().model_dump()["topics"],
                {"id": "climate", "description": "Climate change.", "threshold": 0.0},
            ]
        }
    )
    with caplog.at_level("WARNING"):
        partial = SequenceTopicClassifier(str(model), extra)
    assert "climate" in caplog.text
    assert "climate" not in [t for t, _ in partial.classify(["x"])[0].topics]


def test_classifier_labels_outside_the_taxonomy_are_an_error(models_dir: Path) -> None:
    model = tiny_model(models_dir / "cls-sports", {0: "sports", 1: "syria_conflict"})
    with pytest.raises(ModelError, match=r"\['sports'\].*not topics of the taxonomy"):
        SequenceTopicClassifier(str(model), taxonomy())
    unnamed = tiny_model(models_dir / "cls-unnamed", {0: "LABEL_0", 1: "LABEL_1"})
    with pytest.raises(ModelError, match="id2label must name taxonomy topic ids"):
        SequenceTopicClassifier(str(unnamed), taxonomy())


# --- settings, factory, enricher, CLI ---------------------------------------------------------------


@pytest.mark.parametrize("backend", ["zero-shot", "classifier"])
def test_model_backends_need_a_model(backend: str, tmp_path: Path) -> None:
    settings = ModelSettings(topic_backend=backend)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="set NEWSFLOW_MODELS_TOPIC_MODEL"):
        build_topic_classifier(None, taxonomy(), settings)
    missing = ModelSettings(topic_backend=backend, topic_model="no-such-org/no-such-model")  # type: ignore[arg-type]
    with pytest.raises(ModelError, match="could not load model 'no-such-org/no-such-model'"):
        build_topic_classifier(None, taxonomy(), missing)
    (tmp_path / "empty").mkdir()
    not_a_model = ModelSettings(topic_backend=backend, topic_model=str(tmp_path / "empty"))  # type: ignore[arg-type]
    with pytest.raises(ModelError, match=r"has no config\.json"):
        build_topic_classifier(None, taxonomy(), not_a_model)


def test_settings_read_the_backend_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert Settings().models.topic_backend == "embedding"
    monkeypatch.setenv("NEWSFLOW_MODELS_TOPIC_BACKEND", "zero-shot")
    monkeypatch.setenv("NEWSFLOW_MODELS_TOPIC_MODEL", "/models/nli")
    monkeypatch.setenv("NEWSFLOW_MODELS_TOPIC_HYPOTHESIS", "About {}.")
    models = Settings().models
    assert (models.topic_backend, models.topic_model, models.topic_hypothesis) == (
        "zero-shot",
        "/models/nli",
        "About {}.",
    )
    monkeypatch.setenv("NEWSFLOW_MODELS_TOPIC_BACKEND", "bm25")
    with pytest.raises(ValueError, match="topic_backend"):
        Settings()
    monkeypatch.setenv("NEWSFLOW_MODELS_TOPIC_BACKEND", "zero-shot")
    monkeypatch.setenv("NEWSFLOW_MODELS_TOPIC_HYPOTHESIS", "no placeholder")
    with pytest.raises(ValueError, match=r"needs \{\} where the topic label goes"):
        Settings()


def test_enricher_with_the_zero_shot_backend(nli_entails: Path) -> None:
    settings = ModelSettings(
        encoder=str(nli_entails),  # the tiny BERT doubles as the sentence encoder for the stance gate
        stance_model=GATE_ONLY,
        topic_backend="zero-shot",
        topic_model=str(nli_entails),
        max_tokens=POSITIONS,  # the Encoder does not cap max_tokens at the model's position limit
        batch_size=4,
        precision="fp32",
        languages=("*",),  # the tiny model reads any text as well as any other
    )
    tax = taxonomy({"election_interference": 0.999})
    enricher = Enricher(settings, tax)
    assert isinstance(enricher.topics.backend, ZeroShotTopicClassifier)
    articles = [
        Article(
            id=f"{i:032x}",
            feed_url="http://feeds.test/a.rss",
            title=title,
            summary=body,
            fetched_at="2026-11-01T00:00:00Z",
            content_hash=content_hash(title + body),
        )
        for i, (title, body) in enumerate(
            [("Russian strikes hit Aleppo", "The war in Syria goes on."), ("", ""), ("Vote", "x " * 100_000)]
        )
    ]
    records = enricher.enrich(articles, run_id="test")
    assert [r.primary_topic for r in records] == ["syria_conflict", OTHER, "syria_conflict"]
    assert [t.label for t in records[0].topics] == ["syria_conflict"]
    assert records[0].scores["syria_conflict"] == pytest.approx(1 / (1 + math.exp(-6)), abs=1e-3)
    fingerprint = model_fingerprint(str(nli_entails))
    for record in records:
        assert record.model["topics"] == f"nli-entails@{fingerprint}"
        assert record.model["taxonomy"] == tax.fingerprint()
        assert "topic_hypotheses" in record.model
    # an article with no words gets no stance (nothing to read), the others one per claim
    assert [len(r.stances) for r in records] == [1, 0, 1]
    assert [r.stance_method for r in records] == ["model", "no_text", "model"]


def test_cli_predict_and_eval_topics_with_the_backend_from_env(tmp_path: Path, models_dir: Path) -> None:
    model = tiny_model(
        models_dir / "cls-cli", {0: "syria_conflict", 1: "election_interference", 2: OTHER}, [3.0, 0.0, 0.0]
    )
    articles = tmp_path / "articles.jsonl"
    rows = [
        {
            "id": "a1",
            "title": "Russian strikes hit Aleppo",
            "text": "The war goes on.",
            "label": "syria_conflict",
        },
        {"id": "a2", "title": "", "text": "", "label": OTHER},
    ]
    articles.write_text("".join(json.dumps(r) + "\n" for r in rows))
    env = {
        "NEWSFLOW_MODELS_TOPIC_BACKEND": "classifier",
        "NEWSFLOW_MODELS_TOPIC_MODEL": str(model),
        "NEWSFLOW_MODELS_ENCODER": str(tmp_path / "no-encoder-needed"),  # would fail if it were loaded
        "NEWSFLOW_TAXONOMY_FILE": str(DEFAULT_TAXONOMY),
        "NEWSFLOW_DATA_DIR": str(tmp_path / "data"),
    }
    out = tmp_path / "pred.jsonl"
    result = CliRunner().invoke(
        app, ["predict", "topics", "--input", str(articles), "--output", str(out)], env=env
    )
    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [line["id"] for line in lines] == ["a1", "a2"]
    assert [line["primary_topic"] for line in lines] == ["syria_conflict", OTHER]
    assert set(lines[0]["scores"]) == {"syria_conflict", "election_interference", OTHER}

    result = CliRunner().invoke(
        app, ["eval", "topics", "--data", str(articles), "--output-dir", str(tmp_path / "eval")], env=env
    )
    assert result.exit_code == 0, result.output
    assert f"model cls-cli@{model_fingerprint(str(model))}" in result.output.replace("\n", "")
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert report["accuracy"] == pytest.approx(1.0)

    broken = {**env, "NEWSFLOW_MODELS_TOPIC_MODEL": ""}
    result = CliRunner().invoke(
        app, ["predict", "topics", "--input", str(articles), "--output", str(out)], env=broken
    )
    assert result.exit_code != 0
    assert isinstance(result.exception, ConfigError)
