"""Fetching an article's page and extracting its text, within the host's politeness budget.

A :class:`PageJob` runs on an ingest worker that already holds a start slot on the page's host
(the same per-host queue and budget as feed polls, :mod:`connectors.rss.politeness`). In order:

1. robots.txt of the host (:mod:`connectors.rss.robots`): cached; when it must be fetched, that
   request takes the slot's start and the page the host's next one (paced when each is written,
   :func:`connectors.rss.politeness.pace`); its Crawl-delay raises the
   host's spacing (capped at ``max_crawl_delay_s``). A disallowed page is not fetched.
2. The page: conditional GET with the validators of the last fetch, the same limits as feeds
   (timeouts, size, redirects, http(s) only, the feed's address reach on every hop), HTML only.
   A 429/503 holds the host for its Retry-After.
3. Extraction (:mod:`connectors.rss.extract`). A 304 reuses the stored text.

The result is a :class:`PageResult`: ``extracted`` (new text), ``unchanged`` (304, or the same
text again) or a failure reason, counted per feed: ``robots_disallowed``, ``robots_unavailable``,
``timeout``, ``too_large``, ``not_html``, ``blocked`` (401/403/451: the site refuses us),
``address_refused`` (the address guard), ``not_found``, ``http_error``, ``retry_after``,
``redirect_loop``, ``unreachable``, ``bad_encoding``, ``paywall``, ``consent_wall``,
``javascript_required``, ``extraction_empty``, ``shorter_than_feed``, ``budget`` (the host's page
quota for this cycle is used up). The article keeps its feed text on any failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import urlsplit, urlunsplit

from connectors.rss.extract import Extraction, decode_html, extract
from connectors.rss.feeds import Feed
from connectors.rss.fetch import PAGE_ACCEPT, FeedClient, FetchResult, fetch
from connectors.rss.netguard import Reach
from connectors.rss.normalize import epoch_to_iso
from connectors.rss.politeness import HostBudget, host_key
from connectors.rss.robots import Robots, RobotsCache
from connectors.rss.state import StateStore, StoredPage
from newsflow.config import IngestSettings
from newsflow.records import Article, FeedStatus, content_hash

log = logging.getLogger(__name__)

_FETCH_REASONS = {
    FeedStatus.TIMEOUT: "timeout",
    FeedStatus.TOO_LARGE: "too_large",
    FeedStatus.NOT_HTML: "not_html",
    FeedStatus.BLOCKED: "address_refused",
    FeedStatus.REDIRECT_LOOP: "redirect_loop",
    FeedStatus.CONNECTION_ERROR: "unreachable",
    FeedStatus.CONNECTION_RESET: "unreachable",
    FeedStatus.BAD_ENCODING: "bad_encoding",
    FeedStatus.INVALID_URL: "invalid_url",
}


@dataclass(frozen=True)
class PageJob:
    feed: Feed
    article: Article  # as the feed carried it
    reach: Reach  # the feed's: which non-public networks its pages may be on

    @property
    def url(self) -> str:
        assert self.article.url is not None
        return self.article.url


@dataclass
class PageResult:
    job: PageJob
    status: str  # extracted, unchanged, or a failure reason (see the module docstring)
    page: StoredPage | None = None
    error: str = ""
    held: bool = False  # not fetched: the host is held by a Retry-After

    @property
    def ok(self) -> bool:
        return self.status in ("extracted", "unchanged")


@dataclass
class PageFetcher:
    """Runs :class:`PageJob` s (see the module docstring); thread-safe."""

    client: FeedClient
    budget: HostBudget
    state: StateStore
    settings: IngestSettings
    clock: Callable[[], float]  # epoch seconds
    hold: Callable[[str, float], None]  # (url, seconds): a Retry-After from that URL's host
    robots: RobotsCache = field(init=False)

    def __post_init__(self) -> None:
        def load(host: str) -> Robots | None:
            stored = self.state.robots(host)
            return Robots(*stored) if stored else None

        def store(host: str, robots: Robots) -> None:
            self.state.save_robots(host, robots.status, robots.body, robots.fetched_at)

        self.robots = RobotsCache(load, store, self.settings.robots_ttl_s, self.clock)

    def run(self, job: PageJob) -> PageResult:
        try:
            return self._run(job)
        except Exception as exc:  # one bad page never stops the rest
            log.exception("fetching the page %s failed", job.url)
            return PageResult(job, "internal_error", error=f"{type(exc).__name__}: {exc}")

    def _run(self, job: PageJob) -> PageResult:
        host = host_key(job.url)
        robots, fetched_now = self.robots.get(host, lambda: self._fetch_robots(job))
        delay = robots.crawl_delay()
        if delay:
            self.budget.set_spacing(host, min(delay, self.settings.max_crawl_delay_s))
        if robots.status == "error":
            return PageResult(job, "robots_unavailable", error="robots.txt could not be read; retried later")
        if not robots.allows(job.url):
            return PageResult(job, "robots_disallowed", error="robots.txt disallows this page")
        if fetched_now and self.budget.held(host):  # robots.txt took the slot's start; then a 429
            return PageResult(job, "retry_after", held=True)
        stored = self.state.page(job.url)
        result = fetch(
            self.client,
            job.url,
            stored.etag if stored else None,
            stored.last_modified if stored else None,
            max_bytes=self.settings.max_bytes,
            total_timeout=self.settings.total_timeout_s,
            reach=job.reach,
            accept=PAGE_ACCEPT,
            html_only=True,
        )
        return self._result(job, result, stored)

    def _fetch_robots(self, job: PageJob) -> FetchResult:
        parts = urlsplit(job.url)
        url = urlunsplit((parts.scheme, parts.netloc, "/robots.txt", "", ""))
        return fetch(
            self.client,
            url,
            max_bytes=self.settings.max_bytes,
            total_timeout=min(self.settings.total_timeout_s, 30.0),
            reach=job.reach,
            accept="text/plain",
        )

    def _result(self, job: PageJob, result: FetchResult, stored: StoredPage | None) -> PageResult:
        now = self.clock()
        if result.status is FeedStatus.NOT_MODIFIED and stored is not None:
            page = StoredPage(**{**stored.__dict__, "checked_at": now})
            self.state.save_page(page)
            return PageResult(job, "unchanged", page)
        if result.status in (FeedStatus.HTTP_429, FeedStatus.HTTP_503):
            if result.retry_after_s is not None:
                self.hold(job.url, result.retry_after_s)
            return PageResult(job, "retry_after", error=result.error, held=True)
        if result.http_status in (401, 402, 403, 451):
            return PageResult(job, "blocked", error=result.error)
        if result.http_status in (404, 410):
            return PageResult(job, "not_found", error=result.error)
        if not result.ok:
            reason = _FETCH_REASONS.get(result.status, "http_error")
            return PageResult(job, reason, error=result.error)
        html = decode_html(result.content, result.content_type)
        extraction = extract(html, result.final_url or job.url, self.settings.full_text_min_extracted_chars)
        if not extraction.ok:
            return PageResult(
                job, extraction.status, error=f"the page gave no usable text ({extraction.status})"
            )
        if len(extraction.text) < len(job.article.content):
            return PageResult(
                job, "shorter_than_feed", error="the page's text is shorter than the feed's own"
            )
        page = _stored(job.url, result, extraction, now, stored)
        self.state.save_page(page)
        unchanged = stored is not None and stored.text == page.text
        return PageResult(job, "unchanged" if unchanged else "extracted", page)


def _stored(
    url: str, result: FetchResult, extraction: Extraction, now: float, before: StoredPage | None
) -> StoredPage:
    same = before is not None and before.text == extraction.text
    return StoredPage(
        url=url,
        etag=result.etag,
        last_modified=result.last_modified,
        text=extraction.text,
        title=extraction.title,
        author=extraction.author,
        published_at=extraction.published_at,
        language=extraction.language,
        extracted_at=before.extracted_at if same and before else epoch_to_iso(now),
        checked_at=now,
    )


def with_page(article: Article, page: StoredPage) -> Article:
    """The article with its page's text as ``content`` (``text_source`` ``extracted``).

    The feed's own title, authors, date and language win; the page's fill what the feed lacks.
    The content hash covers the new text, so a page whose text changed is a new version.
    """
    title = article.title or page.title or ""
    return article.model_copy(
        update={
            "title": title,
            "content": page.text,
            "authors": article.authors or ([page.author] if page.author else []),
            "published_at": article.published_at or page.published_at,
            "language": article.language or page.language,
            "text_source": "extracted",
            "extracted_at": page.extracted_at,
            "content_hash": content_hash(title, article.summary, page.text),
        }
    )
