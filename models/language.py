"""Which language a text is in, and whether a model covers it.

Detection is py3langid's (97 languages, normalised probabilities) on at most :data:`SAMPLE_CHARS`
characters. A language a model was not trained on must not get its labels: every model says which
languages it covers (``NEWSFLOW_MODELS_LANGUAGES``; the packaged MiniLM covers English only).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Collection
from typing import Any

SAMPLE_CHARS = 600
#: Below this probability a detection does not overrule the language the feed declared.
CONFIDENT = 0.9
ANY = "*"
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)
_MARKUP = re.compile(r"<[^>]{0,200}>|&[#\w]{1,10};")
_LETTER = re.compile(r"[^\W\d_]")


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    return LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)


def readable(text: str) -> str:
    """``text`` without URLs and markup: what a language detector or a model should read."""
    return _URL.sub(" ", _MARKUP.sub(" ", text))


def has_words(text: str) -> bool:
    """Whether the text has any letter once URLs and markup are gone (emoji, digits and URLs do not count)."""
    return _LETTER.search(readable(text)) is not None


def detect(text: str) -> tuple[str | None, float]:
    """``(ISO 639-1 code, probability)`` of the text's language; ``(None, 0.0)`` without letters."""
    sample = readable(text[: SAMPLE_CHARS * 4])[:SAMPLE_CHARS]
    if not _LETTER.search(sample):
        return None, 0.0
    code, prob = _identifier().classify(sample)
    return str(code), float(prob)


def resolve(declared: str | None, text: str) -> str | None:
    """The language to act on: the declared one (feed or page metadata) unless the text confidently
    says otherwise; the detected one when none is declared."""
    code, prob = detect(text)
    declared = (declared or "").strip().lower().split("-")[0].split("_")[0] or None
    if declared is None:
        return code
    if code is not None and code != declared and prob >= CONFIDENT:
        return code
    return declared


def covers(languages: Collection[str], language: str | None) -> bool:
    """Whether a model that covers ``languages`` (ISO codes, or ``*`` for any) may label ``language``."""
    return ANY in languages or (language is not None and language in languages)
