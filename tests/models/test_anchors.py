"""Anchor queries: the term syntax in every script, the Boolean queries, the shipped anchor files."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from models.anchors import AnchorMatcher, AnchorQuery, TermIndex, evidence_span, matcher_for, normalize
from models.taxonomy import load_taxonomy
from newsflow.config import DEFAULT_TAXONOMY
from newsflow.errors import ConfigError


def groups(text: str, **terms: list[str]) -> set[str]:
    return TermIndex(terms).groups_in(normalize(text))


def test_words_prefixes_and_phrases_in_spaced_scripts() -> None:
    assert groups("Syrian forces advance", g=["syrian*"]) == {"g"}
    assert groups("Syrians flee", g=["syrian*"]) == {"g"}
    assert groups("Syrians flee", g=["syrian"]) == set()  # whole words only without *
    assert groups("a Syria-based group", g=["syria"]) == {"g"}
    assert groups("Deir ez-Zor province", g=["deir ez-zor"]) == {"g"}
    assert groups("Deir ez Zor province", g=["deir ez-zor"]) == {"g"}  # punctuation is not a word
    assert groups("foreign interference", g=["foreign interfer*"]) == {"g"}
    assert groups("foreign affairs", g=["foreign interfer*"]) == set()
    assert groups("СИРИЯ и Россия", g=["сирия*"]) == {"g"}  # case-insensitive in every script
    assert groups("in Syrien", g=["syrien"], h=["syria"]) == {"g"}


def test_clitic_scripts_match_at_a_word_start_after_proclitics() -> None:
    assert groups("قصف وسوريا", g=["سوري"]) == {"g"}  # wa- + Syria
    assert groups("في السورية", g=["سوري"]) == {"g"}  # al- + any ending
    assert groups("باستهداف مواقع", g=["هداف"]) == set()  # "scorer" inside "targeting" is no match
    assert groups("ريف حلب الشرقي", g=["ريف حلب"]) == {"g"}
    assert groups("בסוריה היום", g=["סוריה"]) == {"g"}  # Hebrew be- + Syria
    assert groups("시리아에서 공습", g=["시리아"]) == {"g"}  # Korean particle after the word
    # alef forms and alef maqsura are normalised in terms and texts; teh marbuta is not
    assert groups("الأسد", g=["الاسد"]) == {"g"}
    assert groups("وصفه المسؤول", g=["وصفة"]) == set()


def test_indic_words_keep_their_vowel_signs_and_spelling_variants_fold() -> None:
    assert groups("सीरिया में युद्ध", g=["सीरिया*"]) == {"g"}  # Devanagari vowel signs are marks, not \w
    assert groups("সিরিয়ার যুদ্ধ", g=["সিরিয়া*"]) == {"g"}
    assert groups("İDLİB'de çatışma", g=["idlib*"]) == {"g"}  # Turkish dotted capital I
    assert groups("Ataque em Idlib’s", g=["idlib's"]) == {"g"}  # typographic apostrophe
    assert groups("ای‌ران", g=["ایران"]) == set() and groups("انتخابات‌ها", g=["انتخابات"]) == {"g"}


def test_unspaced_scripts_match_anywhere() -> None:
    assert groups("美国称叙利亚政府军", g=["叙利亚"]) == {"g"}
    assert groups("シリア内戦", g=["シリア"]) == {"g"}


def test_queries_combine_groups_and_the_gate_is_separate() -> None:
    matcher = AnchorMatcher(
        {"t": AnchorQuery(match=(("place", "context"),), none=("sport",), gate=(("place",),))},
        {"place": ["syria"], "context": ["war"], "sport": ["football"]},
    )
    assert set(matcher.match("Syria war")) == {"t"}
    assert matcher.match("Syria") == {}
    assert matcher.match("Syria war", "football") == {}  # vetoed
    assert matcher.gated("Syria football", "") == {"t"}  # the veto does not apply to the gate
    assert matcher.gated("war", "") == set()
    body = (
        "Stocks rose for a third day in Asia. The war in Syria entered its tenth year. "
        "Heavy rain is forecast for the weekend."
    )
    assert matcher.match("Markets", body)["t"].evidence == "The war in Syria entered its tenth year."


def test_evidence_spans_are_short() -> None:
    span = evidence_span("word " * 200)
    assert len(span) <= 245 and span.endswith("…")


def test_the_shipped_anchor_files_load_and_name_every_group_of_the_queries() -> None:
    taxonomy = load_taxonomy(DEFAULT_TAXONOMY)
    folder = Path(DEFAULT_TAXONOMY).resolve().parent / str(
        yaml.safe_load(Path(DEFAULT_TAXONOMY).read_text())["anchors_dir"]
    )
    files = sorted(folder.glob("*.yaml"))
    assert len(files) >= 30 and {"en", "ar", "ru", "fr", "de", "zh", "uk", "he", "fa", "tr"} <= set(
        taxonomy.anchor_languages
    )
    english = yaml.safe_load((folder / "en.yaml").read_text(encoding="utf-8"))
    for file in files:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
        assert data["language"] == file.stem
        for topic, groups_ in english.items():
            if topic != "language":
                assert set(data[topic]) == set(groups_), f"{file.name}: {topic} groups differ from en.yaml"
    matcher = matcher_for(taxonomy)
    headlines = {
        "syria_conflict": [
            "Russian jets strike rebel-held Idlib",
            "غارات جوية على ريف إدلب الجنوبي",
            "Авиаудары по Идлибу: погибли мирные жители",
            "Frappes aériennes sur Idleb, dans le nord-ouest de la Syrie",
            "Luftangriffe auf Idlib: Syrische Armee rückt vor",
            "叙利亚伊德利卜遭空袭",
            "Ataques aéreos atingem Idlib, na Síria",
        ],
        "election_interference": [
            "Russian troll farm targeted voters before the election",
            "اتهامات لروسيا بالتدخل في الانتخابات الأمريكية",
            "Вмешательство России в выборы в США",
            "Ingérence russe dans l'élection présidentielle",
            "Russische Einmischung in die Bundestagswahl",
            "俄罗斯被指干预美国大选",
        ],
    }
    for topic, texts in headlines.items():
        for text in texts:
            assert topic in matcher.match(text), text
    for text in ("Real Madrid beat Barcelona", "البنك المركزي يرفع أسعار الفائدة", "Выборы мэра Москвы"):
        assert matcher.match(text) == {}, text


def test_a_taxonomy_naming_a_group_without_terms_is_refused(tmp_path: Path) -> None:
    (tmp_path / "anchors").mkdir()
    (tmp_path / "anchors" / "en.yaml").write_text("language: en\nwar:\n  place: [syria]\n")
    (tmp_path / "t.yaml").write_text(
        "anchors_dir: anchors\ntopics:\n"
        "  - {id: war, description: d, anchors: {match: [[place, context]]}}\n"
        "  - {id: other, description: o}\n"
    )
    with pytest.raises(ConfigError, match="context"):
        load_taxonomy(tmp_path / "t.yaml")
    (tmp_path / "anchors" / "en.yaml").write_text("war:\n  place: [syria]\n")
    with pytest.raises(ConfigError, match="language"):
        load_taxonomy(tmp_path / "t.yaml")
