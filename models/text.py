"""Text utilities shared by the models: cleaning, sentence splitting, the lead, and lexical overlap.

Everything here is bounded in work on hostile input (a 1 MB body costs no more than a long article)
and never raises on empty, control-character or non-English text.
"""

from __future__ import annotations

import collections
import math
import re
from collections.abc import Sequence

import numpy as np

#: Control characters, byte-order marks and non-characters: replaced by spaces before any model sees text.
CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ufeff\ufffe\uffff]")
_SENTENCE_END = re.compile(
    r"(?<=[.!?\u3002\uff01\uff1f])[\"'\u201d\u2019\u00bb)\]]*\s+|(?<=[\u3002\uff01\uff1f])"
)
_PARAGRAPH = re.compile(r"\n\s*")
_INLINE_SPACE = re.compile(r"[ \t\r\f\v\u00a0\u2028\u2029]+")
_ABBREVIATION = re.compile(
    r"(?:\b(?:Mr|Mrs|Ms|Dr|Prof|St|Sen|Rep|Gov|Gen|Lt|Col|Sgt|Capt|Jr|Sr|Inc|Co|Corp|Ltd|vs|No|Nos|"
    r"Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|approx|etc|e\.g|i\.e)|\b[A-Z])\.$"
)

_SPACE = re.compile(r"\s+")
#: Length of an article's lead in characters (whole leading sentences): what the topic model and the
#: stance gate embed.
LEAD_CHARS = 600


def clean_text(text: str, max_chars: int | None = None) -> str:
    """Strip control characters, collapse whitespace, and cut to ``max_chars`` characters."""
    if max_chars is not None and len(text) > max_chars * 2:
        text = text[: max_chars * 2]
    text = _SPACE.sub(" ", CONTROL_CHARS.sub(" ", text)).strip()
    return text[:max_chars] if max_chars is not None else text


def split_sentences(
    text: str,
    *,
    max_chars: int = 20_000,
    max_sentences: int = 64,
    max_sentence_chars: int = 300,
    min_sentence_chars: int = 25,
) -> list[str]:
    """Split a body into sentences (paragraph breaks and ``. ! ?`` and CJK full stops), bounded in work.

    Control characters become spaces; common abbreviations (``Mr.``, ``U.S.``) do not end a sentence;
    fragments shorter than ``min_sentence_chars`` are merged into the previous sentence; pieces with no
    letter or digit are dropped. Only the first ``max_chars`` characters and ``max_sentences`` sentences
    are produced, so a 1 MB body costs no more than a long article.
    """
    if not text:
        return []
    text = CONTROL_CHARS.sub(" ", text[:max_chars])
    out: list[str] = []
    for paragraph in _PARAGRAPH.split(text):
        paragraph = _INLINE_SPACE.sub(" ", paragraph).strip()
        if not paragraph:
            continue
        joined: list[str] = []
        for piece in _SENTENCE_END.split(paragraph):
            piece = piece.strip()
            if not piece:
                continue
            if joined and _ABBREVIATION.search(joined[-1]):  # "Mr." / "U.S." did not end a sentence
                joined[-1] = f"{joined[-1]} {piece}"
            else:
                joined.append(piece)
        pieces: list[str] = []
        for piece in joined:
            if pieces and (len(piece) < min_sentence_chars or len(pieces[-1]) < min_sentence_chars):
                pieces[-1] = f"{pieces[-1]} {piece}"
            else:
                pieces.append(piece)
        for piece in pieces:
            while len(piece) > max_sentence_chars:
                cut = piece.rfind(" ", max_sentence_chars // 2, max_sentence_chars)
                if cut <= 0:
                    cut = max_sentence_chars
                out.append(piece[:cut].strip())
                piece = piece[cut:].strip()
            if piece:
                out.append(piece)
        if len(out) >= max_sentences:
            break
    return [s for s in out[:max_sentences] if any(ch.isalnum() for ch in s)]


def lead_text(sentences: Sequence[str], lead_chars: int = LEAD_CHARS) -> str:
    """The lead: whole leading sentences up to about ``lead_chars`` characters (at least one)."""
    lead: list[str] = []
    size = 0
    for sentence in sentences:
        if lead and size + len(sentence) > lead_chars:
            break
        lead.append(sentence)
        size += len(sentence) + 1
    return " ".join(lead)[: lead_chars * 2]


def article_lead(body: str, lead_chars: int = LEAD_CHARS) -> str:
    """The lead of an article body (see :func:`lead_text`), with the default sentence splitting."""
    return lead_text(split_sentences(body or ""), lead_chars)


#: Size of a body passage in characters (whole sentences): about a news paragraph.
PASSAGE_CHARS = 500
MAX_PASSAGES = 16


def body_passages(
    body: str, lead_chars: int = LEAD_CHARS, passage_chars: int = PASSAGE_CHARS, limit: int = MAX_PASSAGES
) -> list[str]:
    """The body after its lead, in passages of whole sentences of about ``passage_chars`` characters.

    The lead (:func:`lead_text`) is not repeated; at most ``limit`` passages are returned, so a 1 MB body
    costs no more than a long article.
    """
    sentences = split_sentences(body or "")
    taken = 0  # the sentences lead_text takes
    size = 0
    for sentence in sentences:
        if taken and size + len(sentence) > lead_chars:
            break
        taken, size = taken + 1, size + len(sentence) + 1
    out: list[str] = []
    current: list[str] = []
    length = 0
    for sentence in sentences[taken:]:
        if current and length + len(sentence) > passage_chars:
            out.append(" ".join(current))
            if len(out) >= limit:
                return out
            current, length = [], 0
        current.append(sentence)
        length += len(sentence) + 1
    if current:
        out.append(" ".join(current))
    return out[:limit]


_WORD = re.compile(r"\w+")
# fmt: off
_STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "been", "but", "by", "for", "from", "had", "has", "have",
    "he", "her", "his", "i", "in", "is", "it", "its", "of", "on", "or", "she", "that", "the", "their",
    "they", "this", "to", "was", "were", "which", "who", "will", "with",
))
# fmt: on


def terms(text: str) -> list[str]:
    """Lower-cased words of ``text`` without common English function words (for lexical overlap)."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOPWORDS and (len(w) > 1 or w.isdigit())]


def lexical_similarity(claim: str, sentences: Sequence[str], k1: float = 1.2, b: float = 0.75) -> np.ndarray:
    """BM25 score of each sentence for the claim's terms, with the body's sentences as the collection.

    A term the claim shares with few sentences of the body weighs more than one found in most of them, so
    the ranking needs no corpus statistics and works in any language that separates words by spaces.
    """
    return bm25_scores(set(terms(claim)), [terms(s) for s in sentences], k1, b)


def bm25_scores(
    query: set[str], docs: Sequence[Sequence[str]], k1: float = 1.2, b: float = 0.75
) -> np.ndarray:
    """:func:`lexical_similarity` on terms already extracted (:func:`terms`) from claim and sentences."""
    if not docs:
        return np.zeros(0, dtype=np.float32)
    lengths = np.array([len(d) for d in docs], dtype=np.float32)
    avg = float(lengths.mean()) or 1.0
    scores = np.zeros(len(docs), dtype=np.float32)
    if not query:
        return scores
    df: collections.Counter[str] = collections.Counter(t for d in docs for t in set(d) if t in query)
    n = len(docs)
    for i, doc in enumerate(docs):
        tf = collections.Counter(t for t in doc if t in query)
        norm = k1 * (1.0 - b + b * lengths[i] / avg)
        scores[i] = sum(
            math.log(1.0 + (n - df[t] + 0.5) / (df[t] + 0.5)) * f * (k1 + 1.0) / (f + norm)
            for t, f in tf.items()
        )
    return scores
