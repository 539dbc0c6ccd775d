"""Multilingual anchor queries: lexicon rules that say when a text is about a watched topic, in any language.

Feed traffic arrives in dozens of languages; the default encoder reads English only. Anchors are what
news monitors have long used instead (Media Cloud's topics are Boolean queries, GDELT's themes are
lexicons): each topic names *groups* of terms (``syria``: Syria's places and actors; ``context``:
war, politics, refugees ...), one list per language, and queries over those groups in disjunctive
normal form (see :class:`models.taxonomy.AnchorSpec`)::

    anchors:
      match: [[syria, context]]        # decides alone where no model covers the language
      none: [not_conflict]             # a term of any of these groups vetoes `match`
      gate: [[syria]]                  # a model's label needs this to match (default: `match`)

The terms live in per-language files (``config/anchors/<code>.yaml``), so adding a language is a new
file, never code. Term syntax, after Unicode NFKC normalisation and case folding, in terms and texts
alike (spelling variants are folded: the hamza forms of alef, alef maqsura, Persian yeh and keheh,
Arabic and Hebrew diacritics and tatweel, Turkish dotted and dotless i, Romanian cedillas, typographic
apostrophes):

- scripts that separate words by spaces (Latin, Cyrillic, Greek, Devanagari, Bengali ...): a term
  matches whole words; a trailing ``*`` makes its last word a prefix (``syrian*`` matches *Syrians*);
  a multi-word term matches consecutive words;
- Arabic, Persian, Urdu, Hebrew and Korean: clitics and particles attach to words (``وسوريا``,
  ``בסוריה``, ``시리아에서``), so a term matches at the start of a word, after any of its proclitics
  (Arabic wa-, fa-, bi-, li-, ka-, al- and their combinations; Hebrew vav, he, bet, lamed, mem, shin,
  kaf, up to three), with any ending; later words of a multi-word term match at the start of the
  following words;
- scripts without spaces between words (Chinese, Japanese, Thai, Lao, Khmer, Myanmar): a term matches
  anywhere in the text.

Matching is bounded: only the first :data:`MAX_CHARS` characters of a text are read.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import regex

from models.taxonomy import Taxonomy
from models.text import split_sentences

#: Characters of a text that anchors read (title and body together).
MAX_CHARS = 20_000
EVIDENCE_CHARS = 240

_ARABIC_MARKS = re.compile(r"[\u0610-\u061a\u064b-\u065f\u0670\u06d6-\u06ed\u0640]")
_HEBREW_MARKS = re.compile(r"[\u0591-\u05c7]")
# alef with hamza above/below, madda, wasla -> alef; alef maqsura -> yeh (Egyptian spelling of a final
# yeh); waw and yeh with hamza -> waw and yeh. Teh marbuta stays: mapping it to heh makes "recipe"
# (wasfa) the same word as "described it" (wasfahu).
_ARABIC_LETTERS = str.maketrans(
    {
        "\u0623": "\u0627",
        "\u0625": "\u0627",
        "\u0622": "\u0627",
        "\u0671": "\u0627",
        "\u0649": "\u064a",
        "\u0624": "\u0648",
        "\u0626": "\u064a",
    }
)
# letters with their combining marks (Devanagari and Bengali vowel signs and virama are marks, not \w)
_WORD = regex.compile(r"[\p{L}\p{M}\p{N}_]+")
# scripts whose words carry attached clitics or particles: terms match at a word's start (after them)
_CLITIC_SCRIPT = re.compile(
    r"[\u0590-\u05ff\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb1d-\ufdff\ufe70-\ufeff\uac00-\ud7af]"
)
# scripts without spaces between words: terms match anywhere
_UNSPACED_SCRIPT = re.compile(
    r"[\u0e00-\u0eff\u1000-\u109f\u1780-\u17ff\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]"
)
# Arabic-script proclitics (conjunctions, prepositions, the article and their combinations)
_ARABIC_PROCLITICS = tuple(
    sorted(
        {
            c + rest
            for c in ("", "\u0648", "\u0641")  # wa-, fa-
            for rest in (
                "",
                "\u0628",
                "\u0644",
                "\u0643",
                "\u0627\u0644",
                "\u0628\u0627\u0644",
                "\u0643\u0627\u0644",
                "\u0644\u0644",
            )
        }
        - {""},
        key=len,
    )
)
# Hebrew prefixes: vav, he, bet, lamed, mem, shin, kaf, up to three together
_HEBREW_LETTERS = "\u05d5\u05d4\u05d1\u05dc\u05de\u05e9\u05db"
_HEBREW_PROCLITICS = tuple(
    sorted(
        {
            a + b + c
            for a in _HEBREW_LETTERS
            for b in ("", *_HEBREW_LETTERS)
            for c in ("", *_HEBREW_LETTERS)
            if b or not c
        },
        key=len,
    )
)
_IS_ARABIC = re.compile(r"[\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff]")
_IS_HEBREW = re.compile(r"[\u0590-\u05ff\ufb1d-\ufb4f]")


# spelling variants folded in terms and texts alike
_FOLD = str.maketrans(
    {
        "\u0307": "",  # the dot casefold leaves after Turkish I-dot (İdlib -> idlib)
        "\u0131": "i",  # Turkish dotless i
        "\u015f": "\u0219",  # Romanian s and t with cedilla -> with comma
        "\u0163": "\u021b",
        "\u06cc": "\u064a",  # Persian yeh and keheh -> Arabic yeh and kaf
        "\u06a9": "\u0643",
        "\u200c": " ",  # zero-width non-joiner (Persian) separates like a space
        "\u05be": " ",  # Hebrew maqaf joins words like a hyphen
        "\u05f3": "'",  # Hebrew geresh and gershayim
        "\u05f4": '"',
        "\u2019": "'",
        "\u2018": "'",
        "\u02bc": "'",
    }
)


def normalize(text: str) -> str:
    """The form both terms and texts are compared in (see the module docstring)."""
    text = unicodedata.normalize("NFKC", text).casefold().translate(_FOLD)
    text = _HEBREW_MARKS.sub("", _ARABIC_MARKS.sub("", text))
    return " ".join(text.translate(_ARABIC_LETTERS).split())


def word_starts(token: str) -> list[str]:
    """Where a word may start in a token of a clitic script: the token, and the token after each of its
    proclitics (leaving at least two letters)."""
    if _IS_ARABIC.match(token):
        clitics: Sequence[str] = _ARABIC_PROCLITICS
    elif _IS_HEBREW.match(token):
        clitics = _HEBREW_PROCLITICS
    else:
        return [token]
    return [token] + [token[len(c) :] for c in clitics if token.startswith(c) and len(token) - len(c) >= 2]


@dataclass(frozen=True)
class _Phrase:
    words: tuple[str, ...]
    group: str
    prefix: bool  # the last word (every word, in clitic scripts) may continue


class TermIndex:
    """The terms of every group, indexed together so that one pass over a text finds all groups.

    Args:
        groups: Group name → terms (every language pooled).
    """

    def __init__(self, groups: Mapping[str, Iterable[str]]) -> None:
        self.substrings: list[tuple[str, str]] = []  # unspaced scripts: (term, group)
        self.words: dict[str, set[str]] = {}
        self.prefixes: dict[str, set[str]] = {}
        self.stems: dict[str, set[str]] = {}  # clitic scripts: a word starts with the stem
        self.phrases: dict[str, list[_Phrase]] = {}
        self.stem_phrases: dict[str, list[_Phrase]] = {}
        self.sizes: dict[str, int] = {}
        for group, terms in groups.items():
            self.sizes[group] = 0
            for raw in terms:
                self.sizes[group] += self._add(group, str(raw))
        self._prefix_lengths = (
            min(map(len, self.prefixes), default=1),
            max(map(len, self.prefixes), default=0),
        )
        self._longest_stem = max(map(len, [*self.stems, *self.stem_phrases]), default=0)

    def _add(self, group: str, raw: str) -> int:
        term = normalize(raw).strip()
        prefix = term.endswith("*")
        term = term.rstrip("*").strip()
        tokens = tuple(_WORD.findall(term))
        if not term or not tokens:
            return 0
        if _UNSPACED_SCRIPT.search(term):
            self.substrings.append((term, group))
        elif _CLITIC_SCRIPT.search(term):
            if len(tokens) == 1:
                self.stems.setdefault(tokens[0], set()).add(group)
            else:
                self.stem_phrases.setdefault(tokens[0], []).append(_Phrase(tokens, group, True))
        elif len(tokens) > 1:
            self.phrases.setdefault(tokens[0], []).append(_Phrase(tokens, group, prefix))
        else:
            (self.prefixes if prefix else self.words).setdefault(tokens[0], set()).add(group)
        return 1

    def groups_in(self, text: str) -> set[str]:
        """Every group with a term in a normalised text (see the module docstring for the rules)."""
        found: set[str] = set()
        if self.substrings and _UNSPACED_SCRIPT.search(text):
            found.update(group for term, group in self.substrings if group not in found and term in text)
        tokens = _WORD.findall(text)
        words, prefixes, phrases = self.words, self.prefixes, self.phrases
        shortest, longest = self._prefix_lengths
        clitic = bool(self.stems or self.stem_phrases) and _CLITIC_SCRIPT.search(text) is not None
        for token in set(tokens):  # a word repeated in a text need not be looked up again
            hit = words.get(token)
            if hit:
                found |= hit
            for k in range(shortest, min(len(token), longest) + 1):
                hit = prefixes.get(token[:k])
                if hit:
                    found |= hit
            if clitic and not token.isascii():
                for start in word_starts(token):
                    for k in range(1, min(len(start), self._longest_stem) + 1):
                        hit = self.stems.get(start[:k])
                        if hit:
                            found |= hit
        if phrases or (clitic and self.stem_phrases):
            for i, token in enumerate(tokens):
                for phrase in phrases.get(token, ()):
                    if phrase.group not in found and _phrase_at(phrase, tokens, i):
                        found.add(phrase.group)
                if clitic and not token.isascii():
                    for start in word_starts(token):
                        for k in range(1, min(len(start), self._longest_stem) + 1):
                            for phrase in self.stem_phrases.get(start[:k], ()):
                                if phrase.group not in found and _phrase_at(phrase, tokens, i):
                                    found.add(phrase.group)
        return found


def _phrase_at(phrase: _Phrase, tokens: Sequence[str], start: int) -> bool:
    """Whether the words after a phrase's first word follow token ``start`` (its first word matched)."""
    words = phrase.words
    if start + len(words) > len(tokens):
        return False
    clitic = phrase.prefix and _CLITIC_SCRIPT.search(words[0]) is not None
    for k, word in enumerate(words[1:], 1):
        token = tokens[start + k]
        if clitic:  # every later word: at a word start after its proclitics, any ending
            if not any(start_.startswith(word) for start_ in word_starts(token)):
                return False
        elif not (token == word or (phrase.prefix and k == len(words) - 1 and token.startswith(word))):
            return False
    return True


@dataclass(frozen=True)
class AnchorQuery:
    """A topic's queries over term groups.

    ``match``: any clause (a clause needs a term of each of its groups), and no ``none`` group: what
    decides alone. ``gate``: the clauses a model's label must satisfy (``none`` does not apply to it);
    empty = no gate.
    """

    match: tuple[tuple[str, ...], ...]
    none: tuple[str, ...] = ()
    gate: tuple[tuple[str, ...], ...] = ()

    @property
    def groups(self) -> set[str]:
        return {g for clause in (*self.match, *self.gate) for g in clause} | set(self.none)

    def satisfied(self, groups: set[str]) -> tuple[str, ...] | None:
        """The first ``match`` clause the hit groups satisfy (None when none does or a veto group hit)."""
        if groups.intersection(self.none):
            return None
        return next((clause for clause in self.match if groups.issuperset(clause)), None)

    def passes_gate(self, groups: set[str]) -> bool:
        return not self.gate or any(groups.issuperset(clause) for clause in self.gate)


@dataclass(frozen=True)
class AnchorMatch:
    """A topic whose ``match`` query matched: the clause that matched and a short evidence span."""

    topic: str
    clause: tuple[str, ...]
    evidence: str


class AnchorMatcher:
    """Evaluates every topic's anchor queries on texts.

    Args:
        queries: Topic id → its queries.
        groups: Group name → terms (every language pooled).
    """

    def __init__(self, queries: Mapping[str, AnchorQuery], groups: Mapping[str, Iterable[str]]) -> None:
        self.queries = dict(queries)
        needed = {g for q in self.queries.values() for g in q.groups}
        missing = needed - set(groups)
        if missing:
            raise ValueError(f"anchor groups {sorted(missing)} have no terms in any language")
        self.index = TermIndex({name: groups[name] for name in sorted(needed)})

    def __bool__(self) -> bool:
        return bool(self.queries)

    def groups_in(self, text: str, names: Iterable[str] | None = None) -> set[str]:
        """Names of the groups (of ``names``, default all) with a term in ``text``."""
        found = self.index.groups_in(normalize(text[:MAX_CHARS]))
        return found if names is None else found.intersection(names)

    def gated(self, title: str, body: str = "") -> set[str]:
        """Topics whose gate the title and body pass together (topics without anchors always pass)."""
        found = self.groups_in(f"{title or ''}\n{(body or '')[:MAX_CHARS]}")
        return {t for t, q in self.queries.items() if q.passes_gate(found)}

    def match(self, title: str, body: str = "") -> dict[str, AnchorMatch]:
        """Topics whose ``match`` query the title and body satisfy together, with the evidence sentence.

        The evidence is the first sentence (the title counts as one) that has a term of the matched
        clause's first group, cut to :data:`EVIDENCE_CHARS` characters.
        """
        if not self.queries:
            return {}
        title = (title or "")[:MAX_CHARS]
        body = (body or "")[: MAX_CHARS - len(title)]
        found = self.groups_in(f"{title}\n{body}")
        out: dict[str, AnchorMatch] = {}
        for topic, query in self.queries.items():
            clause = query.satisfied(found)
            if clause is not None:
                out[topic] = AnchorMatch(topic, clause, self.evidence(title, body, clause[0]))
        return out

    def evidence(self, title: str, body: str, group: str) -> str:
        """The first sentence of the title and body with a term of ``group`` (else the title), as a span."""
        sentences = ([title] if title.strip() else []) + split_sentences(body, max_chars=MAX_CHARS)
        return evidence_span(next((s for s in sentences if self.groups_in(s, (group,))), title or body))


def evidence_span(sentence: str) -> str:
    """A sentence or passage as an evidence span: whitespace collapsed, cut to about EVIDENCE_CHARS."""
    sentence = " ".join(sentence.split())
    if len(sentence) <= EVIDENCE_CHARS:
        return sentence
    cut = sentence.rfind(" ", EVIDENCE_CHARS // 2, EVIDENCE_CHARS)
    return sentence[: cut if cut > 0 else EVIDENCE_CHARS] + " …"


def matcher_for(taxonomy: Taxonomy) -> AnchorMatcher:
    """The matcher for a taxonomy's anchor queries; group names are scoped by topic (``topic.group``)."""
    queries = {}
    groups: dict[str, list[str]] = {}
    for topic in taxonomy.watched:
        spec = topic.anchors
        if spec is None:
            continue
        gate = spec.match if spec.gate is None else spec.gate
        used = {g for c in (*spec.match, *gate) for g in c} | set(spec.none)
        scoped = {g: f"{topic.id}.{g}" for g in used}
        queries[topic.id] = AnchorQuery(
            tuple(tuple(scoped[g] for g in clause) for clause in spec.match),
            tuple(scoped[g] for g in spec.none),
            tuple(tuple(scoped[g] for g in clause) for clause in gate),
        )
        for group, name in scoped.items():
            by_language = taxonomy.anchor_terms.get(topic.id, {}).get(group, {})
            groups[name] = [term for terms in by_language.values() for term in terms]
    return AnchorMatcher(queries, groups)
