"""Extraction of article pages: the body and metadata of real-looking pages, and the pages that have none."""

import pytest

from bench.bench_pages import evaluate, real_bodies, token_f1
from connectors.rss.extract import decode_html, extract
from connectors.rss.samplepages import LAYOUTS, consent_page, js_shell_page, page, paywall_page
from tests.conftest import SHARED_DATA

BODY = [
    "The council voted on Thursday to close two of the town's five fire stations, despite a petition signed "
    "by more than eleven thousand residents who said response times in the outlying villages would suffer.",
    "Council leaders said the stations at Millbrook and Eastfield handled fewer than two calls a day between "
    "them and that the savings would pay for a new aerial ladder for the central station.",
    "The firefighters' union said it would ask for a judicial review, arguing that the council had not "
    "consulted the neighbouring authority whose crews would cover the area.",
]


@pytest.mark.parametrize("layout", list(LAYOUTS))
def test_each_layout_gives_back_exactly_its_body_and_its_metadata(layout):
    html = page(layout, BODY, title="Council votes to close two fire stations", author="Sam Lee", seed=7)
    found = extract(html, "https://news.example/fire")
    assert found.status == "ok"
    # The table layout (no article markup, <br> paragraphs, teasers with sentences beside) is the
    # known weak case: its teasers come out with the body.
    assert token_f1(found.text, "\n".join(BODY)) >= (0.6 if layout == "legacy" else 0.97), found.text
    assert found.title == "Council votes to close two fire stations"
    assert found.published_at == "2026-03-04T10:15:00Z" and found.language == "en"


def test_paywall_consent_and_javascript_pages_are_recognised():
    assert extract(paywall_page(BODY[:1]), "https://news.example/p").status == "paywall"
    assert extract(consent_page(), "https://news.example/c").status == "consent_wall"
    assert extract(page("wire", BODY), "https://consent.news.example/?continue=x").status == "consent_wall"
    assert extract(js_shell_page(), "https://news.example/app").status == "javascript_required"
    empty = "<html><body><nav><a href='/'>Home</a></nav><p>Short.</p></body></html>"
    assert extract(empty, "https://news.example/e").status == "extraction_empty"


def test_invalid_bytes_and_declared_charsets_are_decoded():
    html = page("amp", BODY).replace('<meta charset="utf-8">', '<meta charset="iso-8859-1">')
    latin = html.replace("Council", "Conseil général").encode("latin-1", "replace")
    assert "Conseil général" in decode_html(latin, "text/html")  # from the <meta charset>
    assert "Conseil général" in decode_html(latin, "text/html; charset=ISO-8859-1")
    broken = page("amp", BODY).encode().replace(b"eleven", b"ele\xc3\x28ven")
    text = decode_html(broken, "text/html; charset=utf-8")
    assert "\ufffd" in text and BODY[1] in extract(text, "https://news.example/b").text


@pytest.mark.quality
@pytest.mark.skipif(not real_bodies(SHARED_DATA), reason=f"no article bodies in {SHARED_DATA}")
def test_mean_token_f1_on_real_article_bodies_is_at_least_0_90():
    result = evaluate(80, seed=3)
    assert result["mean_f1"] >= 0.90, result
