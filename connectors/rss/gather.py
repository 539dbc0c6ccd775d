"""What one parsed feed has to send: its new or edited articles, its rejects, the pages they need.

**Dedupe.** An article is sent when the state store never saw its id, or saw it from this same feed
with another item hash (an edit); the same id in another feed is a syndicated copy, not sent again.
Within a cycle the first feed that carries an id sends it (``claimed``). An article first sent under
an older id scheme keeps the id it was sent under (:func:`keep_legacy_ids`). An item that cannot be
identified is dead-lettered once, keyed by its feed and payload.

**Pages.** With ``full_text`` ``always`` every new article with a link has its page fetched; with
``auto`` those whose feed text is shorter than ``full_text_min_chars``; and, whatever the mode but
``never``, articles this feed already sent whose page is due for a conditional re-check (extracted
in the last two days, last checked over ``page_recheck_s`` ago). Once the pages are in,
:meth:`Gathering.final` gives the articles to send.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field

from connectors.rss.feeds import Feed
from connectors.rss.normalize import epoch_to_iso
from connectors.rss.outcome import Polled
from connectors.rss.pages import with_page
from connectors.rss.parse import ParsedFeed, Rejected
from connectors.rss.state import StateStore, StoredPage
from newsflow.config import IngestSettings
from newsflow.records import Article

RECHECK_WINDOW_S = 2 * 86400.0  # pages of articles first extracted longer ago are not re-checked


@dataclass
class Gathering:
    """A parsed feed whose records are sent once its articles' pages are in."""

    polled: Polled
    articles: list[Article]  # new or edited, as the feed carried them
    letters: dict[str, Rejected]  # items to dead-letter, by key
    rechecks: dict[str, tuple[Article, str]] = field(default_factory=dict)  # id -> (article, hash sent)
    pages: dict[str, StoredPage] = field(default_factory=dict)  # article id -> its page's text
    outcomes: Counter[str] = field(default_factory=Counter)  # page outcomes, for the health record
    waiting: int = 0  # page fetches not back yet

    def final(self) -> list[tuple[Article, Article]]:
        """(article to send, the article as the feed carried it), with the page text where fetched.

        A re-checked article is sent again only when its page's text changed (a new version).
        """
        final = [(with_page(a, self.pages[a.id]) if a.id in self.pages else a, a) for a in self.articles]
        for article_id, (article, sent_hash) in self.rechecks.items():
            page = self.pages.get(article_id)
            if page is not None and (updated := with_page(article, page)).content_hash != sent_hash:
                final.append((updated, article))
        return final


def gather(
    polled: Polled, state: StateStore, cfg: IngestSettings, claimed: set[str], now: float
) -> tuple[Gathering, list[Article]]:
    """The feed's new or edited articles and rejects, and the articles whose page to fetch."""
    feed, parsed = polled.feed, polled.parsed
    assert parsed is not None
    if parsed.legacy_ids:
        parsed.articles = keep_legacy_ids(parsed.articles, parsed.legacy_ids, state)
    letters = {
        "dlq:" + hashlib.sha256(f"{feed.url}\x00{r.payload}".encode()).hexdigest()[:32]: r
        for r in parsed.rejected
    }
    candidates = [(a.id, a.content_hash) for a in parsed.articles] + [(k, "rejected") for k in letters]
    fresh = state.unseen(feed.url, candidates)
    to_send: dict[str, Article] = {}
    for article in parsed.articles:  # one send per id, even if the feed repeats an item
        if article.id in fresh and article.id not in claimed:
            to_send.setdefault(article.id, article)
    claimed.update(to_send)
    gathering = Gathering(polled, list(to_send.values()), {k: r for k, r in letters.items() if k in fresh})
    mode = feed.full_text or cfg.full_text
    if mode == "never":
        return gathering, []
    wanted = [
        a
        for a in to_send.values()
        if a.url and (mode == "always" or len(a.content) < cfg.full_text_min_chars)
    ]
    wanted += _rechecks(feed, parsed, gathering, claimed, state, cfg.page_recheck_s, now)
    return gathering, wanted


def keep_legacy_ids(articles: list[Article], legacy_ids: dict[str, str], state: StateStore) -> list[Article]:
    """Articles first sent under an older id scheme keep the id they were sent under.

    An article whose current id the state store has not seen, but whose id under the older scheme
    it has, goes by that older id: it is not sent again as new, and an edit of it replaces the record
    consumers hold (docs/INGEST.md, "Id schemes").
    """
    moved = [a for a in articles if a.id in legacy_ids]
    seen_now = state.known((a.id, "") for a in moved)
    seen_before = state.known((legacy_ids[a.id], "") for a in moved if a.id not in seen_now)
    return [
        a.model_copy(update={"id": legacy_ids[a.id]})
        if a.id not in seen_now and legacy_ids.get(a.id) in seen_before
        else a
        for a in articles
    ]


def _rechecks(
    feed: Feed,
    parsed: ParsedFeed,
    gathering: Gathering,
    claimed: set[str],
    state: StateStore,
    recheck_s: float,
    now: float,
) -> list[Article]:
    """Recent articles of this feed, already sent, whose page is due for a conditional re-check."""
    others = [a for a in parsed.articles if a.url and a.id not in claimed]
    if not recheck_s or not others:
        return []
    due = state.pages_to_recheck(
        [a.url for a in others if a.url], now - recheck_s, epoch_to_iso(now - RECHECK_WINDOW_S)
    )
    known = state.known([(a.id, a.content_hash) for a in others if a.url in due])
    picked = []
    for article in others:
        sent = known.get(article.id)
        if (
            article.url in due
            and sent is not None
            and sent[1] == feed.url
            and sent[0] == article.content_hash
        ):
            gathering.rechecks[article.id] = (article, sent[2])
            claimed.add(article.id)
            picked.append(article)
    return picked
