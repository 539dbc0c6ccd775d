"""Topics on real feed traffic: language coverage, anchors, the gate, body passages, evidence, bad input.

These run the real MiniLM encoder and the committed topic head through :class:`TopicLabeller`, as the
pipeline does.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from models import language
from models.encoder import Encoder
from models.taxonomy import load_taxonomy
from models.topic_labeller import ArticleText, TopicLabeller, build_topic_labeller
from newsflow.config import DEFAULT_TAXONOMY, ModelSettings
from newsflow.errors import NewsflowError

TWO_TOPICS = Path(__file__).parent / "data" / "two_topic_articles.jsonl"


@pytest.fixture(scope="module")
def labeller() -> TopicLabeller:
    settings = ModelSettings(precision="fp32")
    return build_topic_labeller(Encoder(precision="fp32"), load_taxonomy(DEFAULT_TAXONOMY), settings)


def test_language_resolution() -> None:
    assert language.detect("Russian jets bombed a market town in southern Idlib on Tuesday")[0] == "en"
    assert language.detect("http://t.co/x 😀 <b></b>") == (None, 0.0)
    assert language.resolve("en", "Российские самолёты нанесли удары по рынку в провинции Идлиб") == "ru"
    assert language.resolve("fr-FR", "Short") == "fr"  # a short text does not overrule the feed
    assert language.resolve(None, "Российские самолёты нанесли удары по рынку") == "ru"
    assert language.covers(("en",), "en") and not language.covers(("en",), "ar")
    assert language.covers(("*",), "ar") and not language.covers(("en",), None)


def test_an_article_with_a_second_topic_in_its_body_gets_both(labeller: TopicLabeller) -> None:
    rows = [json.loads(line) for line in TWO_TOPICS.read_text(encoding="utf-8").splitlines()]
    labels = labeller.label([ArticleText(r["title"], r["text"], "en") for r in rows])
    for row, got in zip(rows, labels, strict=True):
        assert {t for t, _ in got.topics} == set(row["labels"]), row["id"]
        assert got.method == "model" and got.language == "en"
        assert all(got.evidence[t] for t in row["labels"])
    raqqa, text = labels[0], rows[0]["text"]
    assert "Raqqa" in raqqa.evidence["syria_conflict"]
    # the election-interference evidence is one of the passages of the article's last third
    where = text.index(raqqa.evidence["election_interference"][:80])
    assert where >= text.index("The Russian statement came as")


def test_languages_the_model_does_not_cover_get_anchors_or_nothing(labeller: TopicLabeller) -> None:
    arabic = ArticleText(
        '"عودة داعش".. ماذا حدث في السويداء؟',
        "ارتفعت إلى 100 قتيل حصيلة التفجيرات الانتحارية والهجمات التي شنها داعش في محافظة السويداء "
        "جنوب غربي سوريا.",
        "ar",
    )
    football = ArticleText(
        "Flamengo vence o Palmeiras e assume a liderança do Brasileirão",
        "Com gols de Pedro e Arrascaeta, o Flamengo venceu por 2 a 0 no Maracanã.",
        "pt",
    )
    notice = ArticleText(
        "Kunnanvaltuusto kokoontuu maanantaina", "Esityslista on nähtävillä kirjastossa.", "fi"
    )
    got = labeller.label([arabic, football, notice])
    assert got[0].primary_topic == "syria_conflict" and got[0].method == "anchors"
    assert got[0].scores["syria_conflict"] == pytest.approx(labeller.anchor_score["syria_conflict"])
    assert "السويداء" in got[0].evidence["syria_conflict"]
    assert [(g.primary_topic, g.method) for g in got[1:]] == [("other", "unsupported_language")] * 2


def test_the_gate_keeps_wars_elsewhere_and_domestic_votes_out(labeller: TopicLabeller) -> None:
    items = [
        ArticleText(
            "Iraqi forces retake Mosul district from Islamic State",
            "Iraqi troops backed by US air strikes recaptured a district of western Mosul, officials said.",
        ),
        ArticleText(
            "Congolese refugees flee fighting in North Kivu",
            "Tens of thousands crossed into Uganda as M23 rebels advanced on Goma, the UN refugee "
            "agency said.",
        ),
        ArticleText(
            "Maharashtra assembly votes to approve new chief minister",
            "The ruling coalition won the confidence vote by 164 votes to 99 after a day of debate.",
        ),
    ]
    assert [g.primary_topic for g in labeller.label(items)] == ["other"] * 3


def test_bad_input_gets_a_record_and_a_method(labeller: TopicLabeller) -> None:
    cases = [
        ArticleText("", ""),
        ArticleText("", "", "en"),
        ArticleText("Syria", ""),
        ArticleText("http://example.com/a http://example.com/b", "<p><br/></p> &nbsp;"),
        ArticleText("😀🎉🔥", "🙏"),
        ArticleText("Syria peace talks resume in Geneva", "Talks " * 200_000),  # a 1.2 MB body
        ArticleText("Russia and Syria", "Москва заявила о переговорах. The talks in Geneva resumed today."),
        ArticleText("zzqx vvkj", "qqq zzz"),
    ]
    got = labeller.label(cases)
    assert len(got) == len(cases)
    assert [g.method for g in got[:2]] == ["no_text", "no_text"]
    assert got[3].method == "no_text" and got[4].method == "no_text"
    for g in got:
        assert g.topics and g.primary_topic == g.topics[0][0]
        assert g.method in ("model", "anchors", "unsupported_language", "no_text")
    assert got[5].primary_topic == "syria_conflict"


def test_cli_eval_topics_on_a_flood_prints_flag_rates_and_labelled_precision(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from newsflow.cli import app

    pool = [
        {
            "id": "s1",
            "title": "Russian jets bomb market in Idlib",
            "text": "Rescuers said 12 died.",
            "language": "en",
        },
        {
            "id": "s2",
            "title": "غارات على ريف إدلب الجنوبي",
            "text": "قتلى في قصف جوي على سوريا",
            "language": "ar",
        },
        {"id": "e1", "title": "Вмешательство России в выборы в США", "text": "", "language": "ru"},
        {"id": "o1", "title": "Stocks close higher led by chipmakers", "text": "", "language": "en"},
        {"id": "o2", "title": "Flamengo vence o Palmeiras", "text": "Gols de Pedro.", "language": "pt"},
        {"id": "x1", "title": "", "text": "", "language": None},
    ]
    labels = [
        {"id": "s1", "labels": ["syria_conflict"], "drawn": "scan", "sure": True},
        {"id": "s2", "labels": ["syria_conflict"], "drawn": "scan", "sure": True},
        {"id": "e1", "labels": ["election_interference"], "drawn": "scan", "sure": True},
        {"id": "o1", "labels": ["other"], "drawn": "random", "sure": True},
    ]
    items, gold = tmp_path / "items.jsonl", tmp_path / "labels.jsonl"
    items.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in pool), encoding="utf-8")
    gold.write_text("".join(json.dumps(r) + "\n" for r in labels), encoding="utf-8")
    out = tmp_path / "eval"
    env = {"NEWSFLOW_DATA_DIR": str(tmp_path / "data"), "NEWSFLOW_MODELS_PRECISION": "fp32"}
    args = ["eval", "topics", "--flood", str(items), "--flood-labels", str(gold), "--output-dir", str(out)]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    report = json.loads((out / "flood_report.json").read_text())
    assert report["pool"] == report["scored"] == 6
    assert report["flagged"] == {"syria_conflict": 2, "election_interference": 1}
    assert report["methods"] == {"model": 2, "anchors": 2, "unsupported_language": 1, "no_text": 1}
    assert report["labelled"]["syria_conflict"] == {
        "gold": 2,
        "flagged": 2,
        "right": 2,
        "precision": 1.0,
        "recall": 1.0,
    }
    estimate, low, high = report["estimated_true_rate"]["syria_conflict"]
    assert estimate == pytest.approx(2 / 6, abs=1e-4) and low <= estimate <= high
    lines = {line["id"]: line for line in map(json.loads, (out / "flood_predictions.jsonl").open())}
    assert lines["s2"]["method"] == "anchors" and "إدلب" in lines["s2"]["evidence"]["syria_conflict"]
    assert "flag rate" in result.output and "estimated true rate" in result.output

    missing = CliRunner().invoke(app, ["eval", "topics", "--flood-labels", str(gold)], env=env)
    assert isinstance(missing.exception, NewsflowError) and "needs --flood" in str(missing.exception)


def test_the_enricher_writes_a_valid_record_for_every_kind_of_bad_input() -> None:
    from models.enricher import Enricher
    from newsflow.records import Article, content_hash
    from pipelines.enrich import validate_enriched

    cases = [
        ("", "", None),
        ("Syria", "", "en"),
        ("", "x " * 600_000, None),  # a 1.2 MB text of nothing
        ("Russia and Syria", "Москва заявила о переговорах. The talks in Geneva resumed today.", None),
        ("https://t.co/a https://t.co/b", "<div><br/></div>", None),
        ("😀🎉🔥", "🙏🙏", None),
        ("zzqx vvkj", "qqq zzz wwwk", "xx"),  # a language code no detector or model knows
    ]
    enricher = Enricher(ModelSettings(precision="fp32"), load_taxonomy(DEFAULT_TAXONOMY))
    articles = [
        Article(
            id=f"{i:032x}",
            feed_url="http://127.0.0.1/feed.xml",
            title=title,
            content=body,
            language=code,
            fetched_at="2026-12-02T00:00:00Z",
            content_hash=content_hash(title, body),
        )
        for i, (title, body, code) in enumerate(cases)
    ]
    records = enricher.enrich(articles, run_id="bad-input")
    assert len(records) == len(cases)
    for record in records:
        validate_enriched(record)  # the pipeline's own check: it would dead-letter an invalid record
        assert record.topic_method in ("model", "anchors", "unsupported_language", "no_text")
    assert [r.topic_method for r in records][4:6] == ["no_text", "no_text"]
    assert records[0].topic_method == "no_text" and records[0].stances == []
    assert (
        records[6].topic_method == "unsupported_language"
        and records[6].stance_method == "unsupported_language"
    )
