"""Topic embedding of an article (title + lead), its sharing with the stance model, and the text helpers."""

from __future__ import annotations

import numpy as np
import pytest

from models.encoder import Encoder
from models.enricher import Enricher
from models.taxonomy import load_taxonomy
from models.text import LEAD_CHARS, article_lead, lead_text, split_sentences
from models.topics import article_embeddings
from newsflow.config import DEFAULT_TAXONOMY, ModelSettings
from newsflow.records import Article, content_hash

TITLE = "Turkish drones strike Kurdish-led positions in northern Syria"
BODY = (
    "Turkish drones struck positions held by the Kurdish-led SDF east of the Euphrates on Monday, "
    "a war monitor said. " * 3 + "\n\nThe strikes followed weeks of shelling along the border. " * 20
)


@pytest.fixture(scope="module")
def encoder() -> Encoder:
    return Encoder(precision="fp32")


def test_lead_is_whole_leading_sentences_within_the_budget() -> None:
    sentences = split_sentences(BODY)
    lead = lead_text(sentences)
    assert lead.startswith("Turkish drones struck")
    assert len(lead) <= LEAD_CHARS + 1 and lead.endswith(".")
    assert lead_text(["x" * 5000]) == "x" * (2 * LEAD_CHARS)  # one huge sentence: cut, never empty
    assert article_lead("") == "" and article_lead("\x00\x07") == ""
    assert article_lead(BODY) == lead


def test_article_embedding_is_the_normalised_sum_of_title_and_lead(encoder: Encoder) -> None:
    both, title_only, body_only, empty = article_embeddings(
        encoder, [(TITLE, BODY), (TITLE, ""), ("", BODY), ("", "")]
    )
    t, lead = encoder.encode([TITLE, article_lead(BODY)])
    expected = (t + lead) / np.linalg.norm(t + lead)
    assert both == pytest.approx(expected, abs=1e-5)
    assert title_only == pytest.approx(t, abs=1e-5)
    assert body_only == pytest.approx(lead, abs=1e-5)
    assert np.linalg.norm(empty) == pytest.approx(1.0, abs=1e-4)  # the empty text's embedding, not NaN
    assert article_embeddings(encoder, []).shape == (0, encoder.info.dim)


def test_enricher_embeds_each_title_and_lead_once_for_topics_and_stance() -> None:
    enricher = Enricher(ModelSettings(precision="fp32"), load_taxonomy(DEFAULT_TAXONOMY))
    articles = [
        Article(
            id=f"{i:032x}",
            feed_url="test",
            title=f"{TITLE} ({i})",
            content=f"Report {i}. {BODY}",
            fetched_at="2026-11-01T00:00:00Z",
            content_hash=content_hash(f"{i}{BODY}"),
        )
        for i in range(3)
    ]
    before = dict(enricher.encoder.stats)
    out = enricher.enrich(articles, run_id="t")
    assert [o.primary_topic for o in out] == ["syria_conflict"] * 3
    encoded = enricher.encoder.stats["encoded"] - before["encoded"]
    # 3 titles + 3 leads + each claim once; no body sentence is embedded
    assert encoded == 6 + len(enricher.claims)
    again = enricher.encoder.stats["encoded"]
    enricher.enrich(articles, run_id="t2")
    assert enricher.encoder.stats["encoded"] == again  # everything cached now
    assert enricher.encoder.stats["cache_hits"] > before["cache_hits"]


def test_int8_encoder_stays_close_to_fp32(encoder: Encoder) -> None:
    quantised = Encoder(precision="int8")  # torch's dynamic int8 (the runtime tests cover ONNX int8)
    runner_model = quantised.runner.model  # type: ignore[attr-defined]
    assert type(runner_model).__name__ == type(encoder.model).__name__
    assert any("quantized" in type(m).__module__ for m in runner_model.modules())
    texts = [TITLE, article_lead(BODY), "Election officials warn of foreign phishing"]
    cosines = (quantised.encode(texts) * encoder.encode(texts)).sum(axis=1)
    # measured ~0.95: int8 is a speed option with a quality cost (docs/BENCHMARKS.md), not the default
    assert cosines.min() > 0.9, cosines
    similar = quantised.encode(["Syrian army shells Idlib", "Syrian forces bombard Idlib province", "Cake"])
    assert similar[0] @ similar[1] > similar[0] @ similar[2] + 0.3
