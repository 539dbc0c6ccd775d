"""One ingest cycle: poll the feeds that are due, produce new articles to ``news.raw``, save state.

Order of operations per feed, so that a crash loses nothing and sends nothing twice: fetch
(conditional GET, within the per-host politeness budget, every hop address-guarded and under
deadlines) → parse (in a process pool when many feeds changed) → keep items that are new or
changed → cut each record to the size limit (:func:`newsflow.records.fit`) → note the records as
pending in the state store → produce to Kafka (acks=all, idempotent, key = article id) → wait for
delivery → only then save the feed's validators, schedule and the emitted ids (and forget the
pending notes). A process killed between sending and saving leaves pending notes; the next cycle
first reads the topics to find which of those records arrived (:mod:`connectors.rss.delivery`), so
it sends each of them exactly once.

One record never stops the rest: a record still too large once cut, or one Kafka rejects, goes to
``news.dlq`` with a reason; an exception while sending one record, or any bug while handling one
feed, fails that feed alone (its confirmed records are saved, the rest retried next cycle).

Results are emitted in batches (whatever feeds finished since the last batch) without waiting for
Kafka: a feed's state is saved, in one SQLite transaction per batch, once every one of its records
is confirmed; the cycle waits for the broker only at its end (or when too much is unconfirmed).
Items that cannot be identified go to ``news.dlq`` with a reason (once per item); feed-level
problems become the feed's status, counted in the cycle summary and published as a health record
on ``news.feed-health``.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import multiprocessing
import os
import random
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from kafka import KafkaProducer
from kafka.admin import ConfigResource, ConfigResourceType
from kafka.errors import (
    CorruptRecordException,
    InvalidRecordError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)

from connectors import kafka as kafka_clients
from connectors.rss import delivery
from connectors.rss.feeds import Feed
from connectors.rss.fetch import FetchResult, fetch, make_client, user_agent
from connectors.rss.netguard import Guard, Reach, Resolver, system_resolver
from connectors.rss.normalize import ID_SCHEME, epoch_to_iso
from connectors.rss.pages import PageFetcher, PageJob, PageResult, with_page
from connectors.rss.parse import ParsedFeed, Rejected, detect_language, parse_feed
from connectors.rss.politeness import HostBudget, PoliteRunner, Session, host_key
from connectors.rss.schedule import Policy, adaptive_interval, next_after_success, plan_failure
from connectors.rss.state import Emitted, FeedState, FeedUpdate, StateStore, StoredPage
from newsflow.config import Settings
from newsflow.records import (
    Article,
    DeadLetter,
    FeedHealth,
    FeedStatus,
    RecordTooLarge,
    SourceCoordinates,
    encode,
    fit,
)
from newsflow.telemetry import instruments

log = logging.getLogger(__name__)

POOL_MIN_FEEDS = 16  # below this many due feeds, parsing in the fetch threads is cheaper than a pool
MAX_IN_FLIGHT = 20_000  # unconfirmed records before the cycle waits for Kafka to catch up
RECHECK_WINDOW_S = 2 * 86400.0  # pages of articles first extracted longer ago are not re-checked
TOPIC_OVERHEAD = 1024  # a record batch's header, the key and headers, beside the record's value
REFUSED_PAYLOAD_BYTES = 100_000  # a dead letter for a record Kafka refused keeps this much of it
# Kafka errors that are about one record, not the broker: that record is dead-lettered.
RECORD_ERRORS = (
    MessageSizeTooLargeError,
    RecordListTooLargeError,
    InvalidRecordError,
    CorruptRecordException,
)


@dataclass
class FeedOutcome:
    feed: Feed
    status: FeedStatus
    new: int = 0
    items: int = 0
    rejected: int = 0
    bozo: bool = False
    error: str = ""
    http_status: int | None = None
    next_poll: float | None = None
    disabled_reason: str | None = None
    moved_to: str | None = None
    cut: int = 0  # records cut to fit the record size limit (marked in their ``truncated`` field)
    # article pages this poll: "extracted", "unchanged" or why the article kept its feed text
    pages: Counter[str] = field(default_factory=Counter)


@dataclass
class CycleSummary:
    outcomes: list[FeedOutcome] = field(default_factory=list)
    seconds: float = 0.0
    not_due: int = 0  # enabled feeds skipped because their next poll is later
    disabled: int = 0  # feeds skipped because they are disabled (see ``newsflow feeds status``)
    held: int = 0  # feeds skipped because their host asked to wait (Retry-After)
    recovered: delivery.Recovery | None = None  # records a killed run left unconfirmed, settled first

    @property
    def new_articles(self) -> int:
        return sum(o.new for o in self.outcomes)

    @property
    def by_status(self) -> Counter[FeedStatus]:
        return Counter(o.status for o in self.outcomes)

    @property
    def errors(self) -> Counter[FeedStatus]:
        return Counter(o.status for o in self.outcomes if not o.status.healthy)

    @property
    def rejected(self) -> int:
        return sum(o.rejected for o in self.outcomes)

    @property
    def errors_line(self) -> str:
        """Failed polls by status, e.g. ``http_404 2, timeout 1``; ``none`` when none failed."""
        return ", ".join(f"{k} {v}" for k, v in sorted(self.errors.items())) or "none"

    @property
    def unchanged(self) -> int:
        """Feeds that answered 304, or the same bytes as last time: nothing parsed or produced."""
        return sum(1 for o in self.outcomes if o.status.unchanged)

    @property
    def bozo(self) -> int:
        return sum(1 for o in self.outcomes if o.bozo)

    @property
    def pages(self) -> Counter[str]:
        """Article pages by outcome: extracted, unchanged, or the reason the feed text was kept."""
        total: Counter[str] = Counter()
        for outcome in self.outcomes:
            total.update(outcome.pages)
        return total

    def describe(self) -> str:
        """One line: feeds polled, 304s, new articles, errors by kind."""
        text = (
            f"polled {len(self.outcomes)} feeds in {self.seconds:.1f}s: {self.new_articles} new articles, "
            f"{self.by_status[FeedStatus.NOT_MODIFIED]} not modified (304), "
            f"{self.by_status[FeedStatus.UNCHANGED]} unchanged bodies, {self.bozo} malformed but recovered, "
            f"{self.rejected} items dead-lettered; errors: {self.errors_line}"
        )
        if self.not_due or self.disabled:
            text += f"; {self.not_due} not due yet, {self.disabled} disabled"
        if self.held:
            text += f"; {self.held} held back by their host's Retry-After"
        pages = self.pages
        if pages:
            kept = {k: v for k, v in pages.items() if k not in ("extracted", "unchanged")}
            reasons = ", ".join(f"{k} {v}" for k, v in sorted(kept.items())) or "none"
            text += (
                f"; article pages: {pages['extracted']} extracted, {pages['unchanged']} unchanged, "
                f"{sum(kept.values())} kept the feed's text ({reasons})"
            )
        if self.recovered and self.recovered.pending:
            text += (
                f"; {self.recovered.pending} records left unconfirmed by the last run: "
                f"{self.recovered.delivered} had arrived, the rest are sent again"
            )
        return text


@dataclass
class _Polled:
    feed: Feed
    state: FeedState
    fetched: FetchResult
    parsed: ParsedFeed | None = None
    body_hash: str | None = None
    error_status: FeedStatus | None = None  # a failure after the fetch succeeded (parse_error)
    error: str = ""
    held: bool = False  # not polled: the host is under a Retry-After


@dataclass
class _Out:
    """One record to produce, and what the state store notes once Kafka confirmed it."""

    topic: str
    key: bytes | None
    value: bytes
    emitted: Emitted
    future: Any = None
    payload: str = ""  # for a dead letter, if Kafka refuses this record itself


class _Refused:
    """A send() that raised: a done, failed future."""

    is_done = True

    def __init__(self, exc: BaseException) -> None:
        self.exception = exc

    def failed(self) -> bool:
        return True


@dataclass
class _Sending:
    """A feed whose records were sent and whose state is saved once Kafka confirmed them all."""

    polled: _Polled
    new: int
    outs: list[_Out]
    cut: int = 0
    pages: Counter[str] = field(default_factory=Counter)


@dataclass
class _Gathering:
    """A parsed feed whose records are sent once its articles' pages are in."""

    polled: _Polled
    articles: list[Article]  # new or edited, as the feed carried them
    letters: dict[str, Rejected]  # items to dead-letter, by key
    rechecks: dict[str, tuple[Article, str]] = field(default_factory=dict)  # id -> (article, hash sent)
    pages: dict[str, StoredPage] = field(default_factory=dict)  # article id -> its page's text
    outcomes: Counter[str] = field(default_factory=Counter)
    waiting: int = 0


Job = tuple[Feed, FeedState] | PageJob
Result = _Polled | PageResult


@dataclass
class _Cycle:
    session: Session[Job, Result] | None = None
    claimed: set[str] = field(default_factory=set)  # ids sent this cycle (by the first feed that had them)
    in_flight: list[_Sending] = field(default_factory=list)
    gathering: dict[int, _Gathering] = field(default_factory=dict)  # id(page job) -> its feed
    pages_per_host: Counter[str] = field(default_factory=Counter)
    marked: bool = False  # scan marks for crash recovery are stored


def _was_cut(value: bytes) -> bool:
    return b'"truncated":{}' not in value


def _epoch(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def _warm_parser() -> None:
    """Pool initializer: load the language model once per process, not on the first feed."""
    detect_language("warming up the language identifier for the feed parser")


def _processes(setting: int) -> int:
    if setting >= 0:
        return setting
    cpus = os.cpu_count() or 1
    return 0 if cpus < 2 else min(4, cpus)


class Ingestor:
    """Polls feeds and produces articles; create once, call :meth:`run_cycle` per tick.

    ``clock`` (epoch seconds) and ``rng`` drive scheduling, ``budget`` the per-host politeness;
    tests inject them to run without sleeping. ``resolver`` (host, port → addresses) is what the
    address guard resolves names with; tests inject one to give names private addresses.
    """

    def __init__(
        self,
        settings: Settings,
        producer: KafkaProducer | None = None,
        workers: int | None = None,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        budget: HostBudget | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        self.settings = settings
        cfg = settings.ingest
        self.policy = Policy.from_settings(cfg)
        self.workers = workers or cfg.workers
        self.clock = clock
        self.rng = rng or random.Random()
        self.budget = budget or HostBudget(cfg.per_host_concurrency, cfg.per_host_spacing_s)
        self.state = StateStore(settings.data_dir / "ingest" / "state.db")
        self.client = make_client(
            cfg.connect_timeout_s,
            cfg.read_timeout_s,
            cfg.max_redirects,
            user_agent(cfg.contact_url),
            max_connections=max(32, self.workers),
            headers_timeout=cfg.headers_timeout_s,
            guard=Guard(resolver),
        )
        self._reach: dict[str, Reach] = {}
        self.pages = PageFetcher(self.client, self.budget, self.state, cfg, clock, self._hold)
        self._own_producer = producer is None
        if producer is None:
            kafka_clients.require_broker(settings.kafka)
            kafka_clients.ensure_topics(settings.kafka, settings.topics)
        # The cycle does not wait per feed, so larger, later batches cost nothing in latency and
        # save a third of the producer's CPU (measured: 20k articles, gzip).
        self.record_limit = self._record_limit() if producer is None else settings.kafka.max_record_bytes
        # A batch must fit the topic as a whole: the producer splits a refused batch and retries,
        # and kafka-python's split never confirms (measured), so batches stay under the record limit.
        self.producer = producer or kafka_clients.producer(
            settings.kafka, linger_ms=20, batch_size=min(256 * 1024, self.record_limit)
        )
        self._processes = _processes(cfg.parse_processes)
        self._pool: ProcessPoolExecutor | None = None
        self._cycle_pool: ProcessPoolExecutor | None = None

    def _record_limit(self) -> int:
        """NEWSFLOW_KAFKA_MAX_RECORD_BYTES, lowered to what the raw and dead-letter topics accept.

        A record the broker refuses for its size is worse than one cut before sending: the producer
        splits and retries the whole batch around it, innocent records included.
        """
        limit = self.settings.kafka.max_record_bytes
        topics = [self.settings.topics.raw, self.settings.topics.dlq]
        try:
            client = kafka_clients.admin(self.settings.kafka)
            try:
                described = client.describe_configs(
                    [ConfigResource(ConfigResourceType.TOPIC, t, ["max.message.bytes"]) for t in topics]
                )
            finally:
                client.close()
            for topic in topics:
                value = described.get("topic", {}).get(topic, {}).get("max.message.bytes", {}).get("value")
                if value and str(value).isdigit() and int(value) - TOPIC_OVERHEAD < limit:
                    log.warning(
                        "topic %s accepts records of at most %s bytes, less than "
                        "NEWSFLOW_KAFKA_MAX_RECORD_BYTES (%d): records are cut to fit the topic",
                        topic,
                        value,
                        limit,
                    )
                    limit = int(value) - TOPIC_OVERHEAD
        except Exception as exc:  # the setting stands; a refused record is still dead-lettered
            log.warning("could not read the topics' max.message.bytes: %s", exc)
        return max(limit, 10_000)

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.client.close()
        if self._own_producer:
            self.producer.close()
        self.state.close()

    # -- scheduling -----------------------------------------------------------------------------
    def due(self, feeds: Sequence[Feed], force: bool = False) -> list[tuple[Feed, FeedState]]:
        """Feeds to poll now: enabled and due (``force``: every enabled, non-disabled feed).

        A disabled feed is only polled when its probe is due (never after a 410).
        """
        return self._select(feeds, force)[0]

    def _select(self, feeds: Sequence[Feed], force: bool) -> tuple[list[tuple[Feed, FeedState]], int, int]:
        """(due jobs, enabled feeds not due yet, disabled feeds not probed now)."""
        enabled = [f for f in feeds if f.enabled]
        states = self.state.states(f.url for f in enabled)
        now = self.clock()
        picked = []
        not_due = disabled = 0
        for feed in enabled:
            state = states[feed.url]
            if state.disabled:
                if state.next_poll is not None and state.next_poll <= now:
                    picked.append((feed, state))
                else:
                    disabled += 1
            elif force or state.next_poll is None or state.next_poll <= now:
                picked.append((feed, state))
            else:
                not_due += 1
        return picked, not_due, disabled

    def next_poll(self, feeds: Sequence[Feed]) -> float | None:
        """The earliest scheduled poll among the enabled feeds (epoch seconds), None if none."""
        states = self.state.states(f.url for f in feeds if f.enabled)
        times = [s.next_poll for s in states.values() if s.next_poll is not None]
        if len(times) < len(states):
            return self.clock()  # a feed never polled is due now
        return min(times) if times else None

    # -- the cycle ------------------------------------------------------------------------------
    def run_cycle(
        self,
        feeds: list[Feed],
        progress: Callable[[FeedOutcome], None] | None = None,
        force: bool = False,
    ) -> CycleSummary:
        """Poll the due feeds (all enabled, non-disabled ones with ``force``) and emit their news."""
        start = time.perf_counter()
        summary = CycleSummary()
        if self.state.has_pending():  # a run stopped between sending and saving: settle that first
            summary.recovered = delivery.recover(self.settings, self.state)
        jobs, summary.not_due, summary.disabled = self._select(feeds, force)
        jobs = self._without_held_hosts(jobs, summary)
        self._cycle_pool = self._parser_pool(len(jobs))
        self._reach = {}
        runner: PoliteRunner[Job, Result] = PoliteRunner(self.budget, self.workers)
        cycle = _Cycle()

        def report(outcomes: list[FeedOutcome]) -> None:
            for outcome in outcomes:
                summary.outcomes.append(outcome)
                instruments.feed_polled(outcome.status, outcome.new, outcome.feed.url)
                if progress is not None:
                    progress(outcome)

        session = cycle.session = runner.session(self._work, on_held=self._held)
        try:
            for job in jobs:
                session.submit(job[1].fetch_url, job)
            for batch in session.batches():
                polled = [r for r in batch if isinstance(r, _Polled)]
                summary.held += sum(p.held for p in polled)
                report(self._emit([p for p in polled if not p.held], cycle))
                self._pages_done([r for r in batch if isinstance(r, PageResult)], cycle)
                report(self._settle(cycle, wait=False))
            report(self._settle(cycle, wait=True))
        finally:
            session.close()
            self._cycle_pool = None
            self._flush_health()
            self.state.clear_marks_if_idle()
        summary.seconds = time.perf_counter() - start
        instruments.succeeded("ingest")
        return summary

    def _without_held_hosts(
        self, jobs: list[tuple[Feed, FeedState]], summary: CycleSummary
    ) -> list[tuple[Feed, FeedState]]:
        """Drop the feeds whose host asked us to wait (Retry-After), even under ``--once``."""
        now = self.clock()
        held = self.state.held_hosts(now)
        self.budget.clear_holds()
        for host, until in held.items():
            self.budget.hold(host, until - now)
        kept = [job for job in jobs if host_key(job[1].fetch_url) not in held]
        summary.held += len(jobs) - len(kept)
        for feed, state in jobs:
            host = host_key(state.fetch_url)
            if host in held:
                log.info(
                    "feed %s skipped: %s asked to wait until %s (Retry-After)",
                    feed.url,
                    host,
                    epoch_to_iso(held[host]),
                )
        return kept

    def _work(self, job: Job) -> Result:
        """One request's work on a fetch thread: a feed poll or an article page."""
        if isinstance(job, PageJob):
            return self.pages.run(job)
        return self._poll(job)

    def _held(self, job: Job) -> Result:
        """Work whose host became held (Retry-After) during this cycle: not done now."""
        if isinstance(job, PageJob):
            return PageResult(job, "retry_after", held=True)
        return _Polled(job[0], job[1], FetchResult(job[1].fetch_url, FeedStatus.HELD), held=True)

    def reach(self, feed: Feed) -> Reach:
        """Which non-public networks the feed's requests may touch: those its configured URL is on."""
        found = self._reach.get(feed.url)
        if found is None:
            found = self._reach[feed.url] = self.client.guard.reach_of(
                feed.url, timeout=self.settings.ingest.connect_timeout_s
            )
        return found

    def _parser_pool(self, due: int) -> ProcessPoolExecutor | None:
        if self._pool is None and self._processes > 0 and due >= POOL_MIN_FEEDS:
            self._pool = ProcessPoolExecutor(
                self._processes, mp_context=multiprocessing.get_context("spawn"), initializer=_warm_parser
            )
        return self._pool

    # -- per feed, on a fetch thread ------------------------------------------------------------
    def _poll(self, job: tuple[Feed, FeedState]) -> _Polled:
        try:
            return self._poll_feed(job)
        except Exception as exc:  # a bug must cost this feed only, never the cycle
            log.exception("polling %s failed", job[0].url)
            polled = _Polled(job[0], job[1], FetchResult(job[1].fetch_url, FeedStatus.OK))
            polled.error_status, polled.error = FeedStatus.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
            return polled

    def _poll_feed(self, job: tuple[Feed, FeedState]) -> _Polled:
        feed, state = job
        cfg = self.settings.ingest
        fetched = fetch(
            self.client,
            state.fetch_url,
            state.etag,
            state.last_modified,
            max_bytes=cfg.max_bytes,
            total_timeout=cfg.total_timeout_s,
            reach=self.reach(feed),
        )
        if fetched.retry_after_s is not None:  # a 429 or 503 that says when to come back
            self._hold(state.fetch_url, fetched.retry_after_s)
        polled = _Polled(feed, state, fetched)
        if not fetched.ok:
            return polled
        polled.body_hash = hashlib.sha256(fetched.content).hexdigest()[:32]
        if polled.body_hash == state.body_hash:
            return polled  # the same bytes as last time: nothing to parse
        call = functools.partial(
            parse_feed,
            fetched.content,
            feed.url,
            source=feed.name,
            language=feed.language,
            content_type=fetched.content_type,
            fetched_at=epoch_to_iso(self.clock()),
            base_url=fetched.final_url,
            legacy_scheme=self.state.oldest_id_scheme if self.state.oldest_id_scheme < ID_SCHEME else None,
        )
        pool = self._cycle_pool
        try:
            polled.parsed = pool.submit(call).result() if pool is not None else call()
        except BrokenProcessPool as exc:
            log.error("the parser process pool broke while parsing %s: %s; it is restarted", feed.url, exc)
            if self._pool is pool and pool is not None:
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = self._cycle_pool = None  # the rest of this cycle parses in the fetch threads
            polled.error_status, polled.error = FeedStatus.PARSE_ERROR, f"parser process died: {exc}"
        except Exception as exc:  # a parser bug must not stop the cycle; the feed reports it
            log.exception("parsing %s failed", feed.url)
            polled.error_status, polled.error = FeedStatus.PARSE_ERROR, f"{type(exc).__name__}: {exc}"
        return polled

    # -- per batch, on the calling thread -------------------------------------------------------
    def _emit(self, batch: list[_Polled], cycle: _Cycle) -> list[FeedOutcome]:
        """Settle the feeds that need no Kafka delivery; send the others' records (not waiting)."""
        now = self.clock()
        settled: list[tuple[FeedOutcome, FeedUpdate]] = []
        for polled in batch:
            try:
                self._emit_one(polled, cycle, settled, now)
            except Exception as exc:  # a bug must cost this feed only, never the cycle
                log.exception("emitting %s failed", polled.feed.url)
                settled.append(
                    self._failure(polled, FeedStatus.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}", now)
                )
        return self._save(settled)

    def _emit_one(
        self, polled: _Polled, cycle: _Cycle, settled: list[tuple[FeedOutcome, FeedUpdate]], now: float
    ) -> None:
        fetched, parsed = polled.fetched, polled.parsed
        if polled.error_status is not None:
            settled.append(self._failure(polled, polled.error_status, polled.error, now))
        elif fetched.status is FeedStatus.NOT_MODIFIED or (
            fetched.ok and polled.body_hash == polled.state.body_hash
        ):
            status = (
                FeedStatus.NOT_MODIFIED if fetched.status is FeedStatus.NOT_MODIFIED else FeedStatus.UNCHANGED
            )
            settled.append(self._success(polled, status, now, [], 0))
        elif not fetched.ok:
            settled.append(self._failure(polled, fetched.status, fetched.error, now))
        elif parsed is None:
            settled.append(self._failure(polled, FeedStatus.PARSE_ERROR, "the parser returned nothing", now))
        elif parsed.status is not FeedStatus.OK:
            error = parsed.bozo_reason or "no RSS/Atom content (an HTML page or an empty body?)"
            settled.append(self._failure(polled, parsed.status, error, now))
        else:
            gathering = self._gather(polled, cycle)
            if not gathering.waiting:
                cycle.in_flight.append(self._send(gathering, cycle))

    def _settle(self, cycle: _Cycle, wait: bool) -> list[FeedOutcome]:
        """Save the feeds whose records Kafka confirmed (or failed); with ``wait``, all of them.

        A record Kafka refused for itself (too large for the topic, invalid) is replaced by a dead
        letter and the feed waits for that; a feed with records Kafka did not confirm (broker
        trouble) saves the ones it did and is retried next cycle.
        """
        unconfirmed = sum(1 for s in cycle.in_flight for o in s.outs if not o.future.is_done)
        if wait or unconfirmed > MAX_IN_FLIGHT:
            self._flush()
        replaced = [self._dead_letter_refused(sending) for sending in cycle.in_flight]
        if wait and any(replaced):
            self._flush()  # the dead letters that replace refused records
        now = self.clock()
        settled: list[tuple[FeedOutcome, FeedUpdate]] = []
        pending: list[_Sending] = []
        for sending in cycle.in_flight:
            if any(not o.future.is_done for o in sending.outs) and not wait:
                pending.append(sending)
                continue
            polled = sending.polled
            confirmed = [o.emitted for o in sending.outs if o.future.is_done and not o.future.failed()]
            failed = [o for o in sending.outs if not (o.future.is_done and not o.future.failed())]
            if failed:
                first = failed[0].future
                reason = first.exception if first.is_done else "no confirmation in time"
                error = f"Kafka did not confirm {len(failed)} of {len(sending.outs)} records: {reason}"
                log.error(
                    "feed %s: %s; its %d confirmed records are saved, the rest are retried next cycle",
                    polled.feed.url,
                    error,
                    len(confirmed),
                )
                failure = self._failure(polled, FeedStatus.KAFKA_ERROR, error, now, emitted=confirmed)
                failure[0].pages = sending.pages
                settled.append(failure)
            else:
                new = sum(e.topic == self.settings.topics.raw for e in confirmed)
                outcome, update = self._success(polled, FeedStatus.OK, now, confirmed, new)
                outcome.cut, outcome.pages = sending.cut, sending.pages
                settled.append((outcome, update))
        cycle.in_flight = pending
        return self._save(settled)

    def _dead_letter_refused(self, sending: _Sending) -> bool:
        """Replace records Kafka refused for themselves by dead letters; True if any was sent now."""
        replaced = False
        for out in sending.outs:
            future = out.future
            if not (future.is_done and future.failed()) or out.emitted.topic == self.settings.topics.dlq:
                continue
            if not isinstance(future.exception, (*RECORD_ERRORS, TypeError, ValueError)):
                continue
            letter = DeadLetter(
                stage="ingest",
                reason="kafka_rejected",
                error=f"Kafka refused the record: {type(future.exception).__name__}: {future.exception}",
                payload=out.payload or out.value.decode("utf-8", "replace"),
                source=SourceCoordinates(feed_url=sending.polled.feed.url),
            )
            out.topic = self.settings.topics.dlq
            out.emitted = replace(out.emitted, topic=out.topic)
            out.value = self._fit(letter, REFUSED_PAYLOAD_BYTES)
            instruments.dead_letter("ingest", "kafka_rejected", feed=sending.polled.feed.url)
            self.state.intend(sending.polled.feed.url, [out.emitted])
            out.future = self._produce(out)
            replaced = True
        return replaced

    def _flush(self) -> None:
        """Wait for Kafka to confirm what was sent, for at most the producer's delivery timeout."""
        timeout = 2 * self.settings.kafka.request_timeout_ms / 1000 + 10
        try:
            self.producer.flush(timeout=timeout)
        except Exception as exc:  # what is still unconfirmed fails its feed; it is retried
            log.error("Kafka did not confirm every record within %.0fs: %s", timeout, exc)

    def _save(self, settled: list[tuple[FeedOutcome, FeedUpdate]]) -> list[FeedOutcome]:
        self.state.save([update for _, update in settled])
        for outcome, update in settled:
            self._publish_health(outcome, update.state)
        return [outcome for outcome, _ in settled]

    def _gather(self, polled: _Polled, cycle: _Cycle) -> _Gathering:
        """A feed's new or edited articles and rejects; the page fetches they need are submitted."""
        feed, parsed, claimed = polled.feed, polled.parsed, cycle.claimed
        assert parsed is not None
        if parsed.legacy_ids:
            parsed.articles = self._keep_legacy_ids(parsed.articles, parsed.legacy_ids)
        letters = {
            "dlq:" + hashlib.sha256(f"{feed.url}\x00{r.payload}".encode()).hexdigest()[:32]: r
            for r in parsed.rejected
        }
        candidates = [(a.id, a.content_hash) for a in parsed.articles] + [(k, "rejected") for k in letters]
        fresh = self.state.unseen(feed.url, candidates)
        to_send: dict[str, Article] = {}
        for article in parsed.articles:  # one send per id, even if the feed repeats an item
            if article.id in fresh and article.id not in claimed:
                to_send.setdefault(article.id, article)
        claimed.update(to_send)
        gathering = _Gathering(
            polled, list(to_send.values()), {k: r for k, r in letters.items() if k in fresh}
        )
        mode = feed.full_text or self.settings.ingest.full_text
        if mode == "never":
            return gathering
        cfg = self.settings.ingest
        wanted = [
            a
            for a in to_send.values()
            if a.url and (mode == "always" or len(a.content) < cfg.full_text_min_chars)
        ]
        wanted += self._rechecks(feed, parsed, gathering, claimed)
        for article in wanted:
            self._ask_page(PageJob(feed, article, self.reach(feed)), gathering, cycle)
        return gathering

    def _keep_legacy_ids(self, articles: list[Article], legacy_ids: dict[str, str]) -> list[Article]:
        """Articles first sent under an older id scheme keep the id they were sent under.

        An article whose current id the state store has not seen, but whose id under the older
        scheme it has, goes by that older id: it is not sent again as new, and an edit of it
        replaces the record consumers hold (docs/INGEST.md, "Id schemes").
        """
        moved = [a for a in articles if a.id in legacy_ids]
        seen_now = self.state.known((a.id, "") for a in moved)
        seen_before = self.state.known((legacy_ids[a.id], "") for a in moved if a.id not in seen_now)
        return [
            a.model_copy(update={"id": legacy_ids[a.id]})
            if a.id not in seen_now and legacy_ids.get(a.id) in seen_before
            else a
            for a in articles
        ]

    def _rechecks(
        self, feed: Feed, parsed: ParsedFeed, gathering: _Gathering, claimed: set[str]
    ) -> list[Article]:
        """Recent articles of this feed, already sent, whose page is due for a conditional re-check."""
        recheck = self.settings.ingest.page_recheck_s
        others = [a for a in parsed.articles if a.url and a.id not in claimed]
        if not recheck or not others:
            return []
        now = self.clock()
        due = self.state.pages_to_recheck(
            [a.url for a in others if a.url], now - recheck, epoch_to_iso(now - RECHECK_WINDOW_S)
        )
        known = self.state.known([(a.id, a.content_hash) for a in others if a.url in due])
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

    def _ask_page(self, job: PageJob, gathering: _Gathering, cycle: _Cycle) -> None:
        host = host_key(job.url)
        if cycle.pages_per_host[host] >= self.settings.ingest.max_pages_per_host:
            gathering.outcomes["budget"] += 1
            return
        cycle.pages_per_host[host] += 1
        assert cycle.session is not None
        cycle.gathering[id(job)] = gathering
        gathering.waiting += 1
        cycle.session.submit(job.url, job)

    def _pages_done(self, results: list[PageResult], cycle: _Cycle) -> None:
        """Record page results; send each feed whose pages are all in."""
        for result in results:
            gathering = cycle.gathering.pop(id(result.job))
            gathering.waiting -= 1
            gathering.outcomes[result.status] += 1
            if result.page is not None:
                gathering.pages[result.job.article.id] = result.page
            elif not result.ok:
                log.info("page %s: %s %s", result.job.url, result.status, result.error)
            if not gathering.waiting:
                try:
                    cycle.in_flight.append(self._send(gathering, cycle))
                except Exception as exc:  # a bug must cost this feed only, never the cycle
                    log.exception("sending %s failed", gathering.polled.feed.url)
                    outcome, update = self._failure(
                        gathering.polled,
                        FeedStatus.INTERNAL_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        self.clock(),
                    )
                    self._save([(outcome, update)])

    def _send(self, gathering: _Gathering, cycle: _Cycle) -> _Sending:
        """Produce one feed's articles (with their page text) and rejects, not waiting for Kafka."""
        polled, feed = gathering.polled, gathering.polled.feed
        topics = self.settings.topics
        final = [
            (with_page(a, gathering.pages[a.id]) if a.id in gathering.pages else a, a)
            for a in gathering.articles
        ]
        for article_id, (article, sent_hash) in gathering.rechecks.items():
            page = gathering.pages.get(article_id)
            if page is not None and (updated := with_page(article, page)).content_hash != sent_hash:
                final.append((updated, article))  # the page's text changed: a new version
        outs: list[_Out] = []
        cut = 0
        for article, as_fed in final:
            out = self._article_out(feed, article, as_fed.content_hash)
            cut += out.topic == topics.raw and _was_cut(out.value)
            outs.append(out)
        for key, rejected in gathering.letters.items():
            letter = DeadLetter(
                stage="ingest",
                reason=rejected.reason,
                error=rejected.error,
                payload=rejected.payload,
                source=SourceCoordinates(feed_url=feed.url),
            )
            outs.append(
                _Out(topics.dlq, key.encode(), self._fit(letter), Emitted(key, "rejected", None, topics.dlq))
            )
            instruments.dead_letter("ingest", rejected.reason, feed=feed.url)
        if outs:
            self._mark(cycle)
            self.state.intend(feed.url, [o.emitted for o in outs])
            for out in outs:
                out.future = self._produce(out)
        return _Sending(polled, sum(o.topic == topics.raw for o in outs), outs, cut, gathering.outcomes)

    def _article_out(self, feed: Feed, article: Article, item_hash: str) -> _Out:
        """The article's record, cut to the size limit; a dead letter if it cannot be cut enough."""
        topics = self.settings.topics
        try:
            cut, value = fit(article, self.record_limit)
        except RecordTooLarge as exc:
            log.warning("article %s from %s is too large even cut: %s", article.id, feed.url, exc)
            instruments.dead_letter("ingest", "record_too_large", feed=feed.url)
            letter = DeadLetter(
                stage="ingest",
                reason="record_too_large",
                error=str(exc),
                payload=encode(article).decode("utf-8", "replace"),
                source=SourceCoordinates(feed_url=feed.url),
            )
            return _Out(
                topics.dlq,
                article.id.encode(),
                self._fit(letter),
                Emitted(article.id, article.content_hash, item_hash, topics.dlq),
            )
        if cut.truncated:
            log.info(
                "article %s from %s cut to fit the record size limit: %s", article.id, feed.url, cut.truncated
            )
        return _Out(
            topics.raw,
            article.id.encode(),
            value,
            Emitted(article.id, article.content_hash, item_hash, topics.raw),
        )

    def _fit(self, letter: DeadLetter, limit: int | None = None) -> bytes:
        try:
            return fit(letter, min(limit or self.record_limit, self.record_limit))[1]
        except RecordTooLarge:  # only its feed URL or reason can be that long: keep the reason alone
            bare = letter.model_copy(
                update={"payload": "", "error": letter.error[:1000], "source": SourceCoordinates()}
            )
            return encode(bare)

    def _produce(self, out: _Out) -> Any:
        try:
            return self.producer.send(out.topic, key=out.key, value=out.value)
        except Exception as exc:  # whatever one record triggers, it fails that record only
            log.warning("sending %s to %s failed: %s", out.emitted.key, out.topic, exc)
            return _Refused(exc)

    def _mark(self, cycle: _Cycle) -> None:
        """Before the cycle's first send: where crash recovery will scan the topics from."""
        if cycle.marked:
            return
        topics = self.settings.topics
        self.state.set_marks(delivery.end_offsets(self.settings, [topics.raw, topics.dlq]))
        cycle.marked = True

    def _hold(self, url: str, retry_after: float) -> None:
        """A Retry-After from ``url``'s host: nothing more is requested from it until then."""
        seconds = max(0.0, min(retry_after, self.policy.backoff_max))
        host = host_key(url)
        self.budget.hold(host, seconds)
        self.state.hold_host(host, self.clock() + seconds)
        log.info(
            "%s asked to wait %.0fs (Retry-After); nothing more is requested from it until then",
            host,
            seconds,
        )

    def _success(
        self, polled: _Polled, status: FeedStatus, now: float, emitted: list[Emitted], new: int
    ) -> tuple[FeedOutcome, FeedUpdate]:
        feed, state, fetched, parsed = polled.feed, polled.state, polled.fetched, polled.parsed
        if parsed is not None:
            published = [_epoch(a.published_at) for a in parsed.articles if a.published_at]
            interval = adaptive_interval(published, self.policy, feed.interval_s)
            if parsed.ttl_minutes:  # the feed asks not to be polled more often than its ttl
                interval = max(interval, min(parsed.ttl_minutes * 60.0, self.policy.max_interval))
            skip_hours = ",".join(str(h) for h in sorted(parsed.skip_hours)) or None
            skip_days = ",".join(sorted(parsed.skip_days)) or None
        else:
            interval = state.interval_s or adaptive_interval([], self.policy, feed.interval_s)
            if feed.interval_s is not None:
                interval = max(interval, self.policy.clamp(feed.interval_s))
            skip_hours, skip_days = state.skip_hours, state.skip_days
        next_poll = next_after_success(
            now,
            interval,
            self.policy,
            fresh_for=fetched.fresh_for_s,
            skip_hours=frozenset(int(h) for h in skip_hours.split(",")) if skip_hours else frozenset(),
            skip_days=frozenset(skip_days.split(",")) if skip_days else frozenset(),
        )
        moved_to = fetched.moved_to or state.moved_to
        if moved_to == feed.url:
            moved_to = None
        if fetched.moved_to and fetched.moved_to != state.moved_to:
            log.warning(
                "feed %s moved permanently to %s; polling the new URL from now on", feed.url, moved_to
            )
        if state.disabled:
            log.warning("disabled feed %s answered again (%s); it is enabled", feed.url, status)
        bozo, error = False, ""
        if parsed is not None and parsed.bozo:
            bozo = True
            error = f"malformed feed, recovered {len(parsed.articles)} items: {parsed.bozo_reason}"
            log.info("feed %s: %s", feed.url, error)
        new_state = replace(
            state,
            etag=fetched.etag or state.etag,
            last_modified=fetched.last_modified or state.last_modified,
            last_status=status,
            last_error=error or None,
            last_success=epoch_to_iso(now),
            last_polled=epoch_to_iso(now),
            consecutive_failures=0,
            hard_failures=0,
            next_poll=next_poll,
            interval_s=interval,
            disabled_reason=None,
            disabled_at=None,
            moved_to=moved_to,
            last_http_status=fetched.http_status,
            body_hash=polled.body_hash or state.body_hash,
            skip_hours=skip_hours,
            skip_days=skip_days,
        )
        items = len(parsed.articles) if parsed else 0
        outcome = FeedOutcome(
            feed,
            status,
            new=new,
            items=items,
            rejected=len(parsed.rejected) if parsed else 0,
            bozo=bozo,
            error=error,
            http_status=fetched.http_status,
            next_poll=next_poll,
            moved_to=moved_to,
        )
        return outcome, FeedUpdate(new_state, emitted, items=items, bozo=bozo)

    def _failure(
        self,
        polled: _Polled,
        status: FeedStatus,
        error: str,
        now: float,
        emitted: list[Emitted] | None = None,
    ) -> tuple[FeedOutcome, FeedUpdate]:
        feed, state, fetched = polled.feed, polled.state, polled.fetched
        interval = state.interval_s or adaptive_interval([], self.policy, feed.interval_s)
        plan = plan_failure(
            now,
            status,
            error,
            state.consecutive_failures,
            state.hard_failures,
            interval,
            self.policy,
            self.rng,
            retry_after=fetched.retry_after_s,
        )
        reason = plan.disabled_reason
        next_poll: float | None = plan.next_poll
        if status is FeedStatus.HTTP_410:
            next_poll = None  # gone for good: only 'newsflow feeds reset' brings it back
        elif state.disabled:  # a failed probe: stay disabled, probe again later
            reason, next_poll = state.disabled_reason, now + self.policy.disabled_probe
        if reason and not state.disabled:
            log.warning("feed %s is disabled: %s", feed.url, reason)
        elif status.transient:
            log.info(
                "feed %s: %s (%s); retrying at %s", feed.url, status, error, epoch_to_iso(next_poll or now)
            )
        else:
            log.info("feed %s failed: %s (%s)", feed.url, status, error)
        new_state = replace(
            state,
            last_status=status,
            last_error=error[:1000],
            last_polled=epoch_to_iso(now),
            consecutive_failures=plan.consecutive_failures,
            hard_failures=plan.hard_failures,
            next_poll=next_poll,
            interval_s=interval,
            disabled_reason=reason,
            disabled_at=state.disabled_at or (epoch_to_iso(now) if reason else None),
            last_http_status=fetched.http_status,
            # a stored permanent redirect that now leads somewhere refused is forgotten
            moved_to=None if status is FeedStatus.BLOCKED else state.moved_to,
        )
        outcome = FeedOutcome(
            feed,
            status,
            new=len([e for e in emitted or () if e.topic == self.settings.topics.raw]),
            error=error,
            http_status=fetched.http_status,
            next_poll=next_poll,
            disabled_reason=reason,
            moved_to=new_state.moved_to,
        )
        return outcome, FeedUpdate(new_state, emitted or ())

    # -- health ---------------------------------------------------------------------------------
    def _publish_health(self, outcome: FeedOutcome, state: FeedState) -> None:
        record = FeedHealth(
            feed_url=outcome.feed.url,
            fetch_url=state.fetch_url,
            name=outcome.feed.name,
            status=outcome.status,
            http_status=outcome.http_status,
            error=outcome.error[:1000] or None,
            new_articles=outcome.new,
            items=outcome.items,
            rejected=outcome.rejected,
            cut=outcome.cut,
            pages=dict(outcome.pages),
            bozo=outcome.bozo,
            bozo_count=state.bozo_count + int(outcome.bozo),
            items_seen=state.items_seen + outcome.items,
            consecutive_failures=state.consecutive_failures,
            last_success=state.last_success,
            next_poll=epoch_to_iso(state.next_poll) if state.next_poll is not None else None,
            disabled_reason=state.disabled_reason,
            at=state.last_polled or epoch_to_iso(self.clock()),
        )
        try:
            self.producer.send(
                self.settings.topics.feed_health, key=outcome.feed.url.encode(), value=encode(record)
            )
        except Exception as exc:  # health is best-effort; articles are not
            log.warning("could not publish feed health for %s: %s", outcome.feed.url, exc)

    def _flush_health(self) -> None:
        try:
            self.producer.flush(timeout=self.settings.kafka.request_timeout_ms / 1000 + 5)
        except Exception as exc:
            log.warning("could not flush feed health records: %s", exc)
