"""One ingest cycle: poll the feeds that are due, produce new articles to ``news.raw``, save state.

Order of operations per feed, so that a crash loses nothing and sends nothing twice: fetch
(conditional GET, within the per-host politeness budget, every hop address-guarded and under
deadlines) → parse (in a process pool when many feeds changed) → keep items that are new or
changed and fetch the article pages they need (:mod:`connectors.rss.gather`) → cut each record to
the size limit, note it as pending, produce it (:mod:`connectors.rss.delivery`) → once Kafka
confirmed every record of the feed, save its validators, schedule and emitted ids
(:mod:`connectors.rss.outcome`) and publish its health record. A process killed between sending
and saving leaves pending notes; the next cycle first reads the topics to find which of those
records arrived, so it sends each of them exactly once.

Feeds are emitted in batches (whatever finished since the last batch) without waiting for Kafka;
the cycle waits for the broker only at its end, or when too much is unconfirmed. One record never
stops the rest (a record too large even cut, or refused by Kafka, is dead-lettered), and a bug
while handling one feed fails that feed alone (its confirmed records are saved, the rest retried).
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
from dataclasses import dataclass, field

from kafka import KafkaProducer

from connectors.rss import delivery, outcome
from connectors.rss.delivery import Out, Sender
from connectors.rss.feeds import Feed
from connectors.rss.fetch import FetchResult, fetch, make_client, user_agent
from connectors.rss.gather import Gathering, gather
from connectors.rss.netguard import Guard, Reach, Resolver, system_resolver
from connectors.rss.normalize import ID_SCHEME, epoch_to_iso
from connectors.rss.outcome import CycleSummary, FeedOutcome, Polled
from connectors.rss.pages import PageFetcher, PageJob, PageResult
from connectors.rss.parse import detect_language, parse_feed
from connectors.rss.politeness import HostBudget, PoliteRunner, Session, host_key
from connectors.rss.schedule import Policy
from connectors.rss.state import Emitted, FeedState, FeedUpdate, StateStore
from newsflow.config import Settings
from newsflow.records import FeedStatus
from newsflow.telemetry import instruments

__all__ = ["CycleSummary", "FeedOutcome", "Ingestor"]

log = logging.getLogger(__name__)

POOL_MIN_FEEDS = 16  # below this many due feeds, parsing in the fetch threads is cheaper than a pool
MAX_IN_FLIGHT = 20_000  # unconfirmed records before the cycle waits for Kafka to catch up


@dataclass
class _Sending:
    """A feed whose records were sent and whose state is saved once Kafka confirmed them all."""

    polled: Polled
    outs: list[Out]
    pages: Counter[str] = field(default_factory=Counter)


Job = tuple[Feed, FeedState] | PageJob
Result = Polled | PageResult


@dataclass
class _Cycle:
    session: Session[Job, Result] | None = None
    claimed: set[str] = field(default_factory=set)  # ids sent this cycle (by the first feed that had them)
    in_flight: list[_Sending] = field(default_factory=list)
    gathering: dict[int, Gathering] = field(default_factory=dict)  # id(page job) -> its feed
    pages_per_host: Counter[str] = field(default_factory=Counter)


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
        self.sender = Sender(settings, self.state, producer)
        self.producer, self.record_limit = self.sender.producer, self.sender.record_limit
        self._processes = _processes(cfg.parse_processes)
        self._pool: ProcessPoolExecutor | None = None
        self._cycle_pool: ProcessPoolExecutor | None = None

    def __enter__(self) -> Ingestor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.client.close()
        self.sender.close()
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
        self.sender.new_cycle()

        def report(outcomes: list[FeedOutcome]) -> None:
            for done in outcomes:
                summary.outcomes.append(done)
                instruments.feed_polled(done.status, done.new, done.feed.url)
                if progress is not None:
                    progress(done)

        session = cycle.session = runner.session(self._work, on_held=self._held)
        try:
            for job in jobs:
                session.submit(job[1].fetch_url, job)
            for batch in session.batches():
                polled = [r for r in batch if isinstance(r, Polled)]
                summary.held += sum(p.held for p in polled)
                report(self._emit([p for p in polled if not p.held], cycle))
                self._pages_done([r for r in batch if isinstance(r, PageResult)], cycle)
                report(self._settle(cycle, wait=False))
            report(self._settle(cycle, wait=True))
        finally:
            session.close()
            self._cycle_pool = None
            self.sender.flush_health()
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
        return Polled(job[0], job[1], FetchResult(job[1].fetch_url, FeedStatus.HELD), held=True)

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
    def _poll(self, job: tuple[Feed, FeedState]) -> Polled:
        try:
            return self._poll_feed(job)
        except Exception as exc:  # a bug must cost this feed only, never the cycle
            log.exception("polling %s failed", job[0].url)
            polled = Polled(job[0], job[1], FetchResult(job[1].fetch_url, FeedStatus.OK))
            polled.error_status, polled.error = FeedStatus.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}"
            return polled

    def _poll_feed(self, job: tuple[Feed, FeedState]) -> Polled:
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
        polled = Polled(feed, state, fetched)
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
    def _emit(self, batch: list[Polled], cycle: _Cycle) -> list[FeedOutcome]:
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
        self, polled: Polled, cycle: _Cycle, settled: list[tuple[FeedOutcome, FeedUpdate]], now: float
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
            settled.append(outcome.succeeded(polled, status, now, self.policy))
        elif not fetched.ok:
            settled.append(self._failure(polled, fetched.status, fetched.error, now))
        elif parsed is None:
            settled.append(self._failure(polled, FeedStatus.PARSE_ERROR, "the parser returned nothing", now))
        elif parsed.status is not FeedStatus.OK:
            error = parsed.bozo_reason or "no RSS/Atom content (an HTML page or an empty body?)"
            settled.append(self._failure(polled, parsed.status, error, now))
        else:
            gathering, wanted = gather(polled, self.state, self.settings.ingest, cycle.claimed, self.clock())
            for article in wanted:
                self._ask_page(PageJob(polled.feed, article, self.reach(polled.feed)), gathering, cycle)
            if not gathering.waiting:
                cycle.in_flight.append(self._send(gathering))

    def _settle(self, cycle: _Cycle, wait: bool) -> list[FeedOutcome]:
        """Save the feeds whose records Kafka confirmed (or failed); with ``wait``, all of them.

        A record Kafka refused for itself (too large for the topic, invalid) is replaced by a dead
        letter and the feed waits for that; a feed with records Kafka did not confirm (broker
        trouble) saves the ones it did and is retried next cycle.
        """
        unconfirmed = sum(1 for s in cycle.in_flight for o in s.outs if not o.future.is_done)
        if wait or unconfirmed > MAX_IN_FLIGHT:
            self.sender.flush()
        replaced = [self.sender.replace_refused(s.polled.feed.url, s.outs) for s in cycle.in_flight]
        if wait and any(replaced):
            self.sender.flush()  # the dead letters that replace refused records
        now = self.clock()
        settled: list[tuple[FeedOutcome, FeedUpdate]] = []
        pending: list[_Sending] = []
        for sending in cycle.in_flight:
            if any(not o.future.is_done for o in sending.outs) and not wait:
                pending.append(sending)
                continue
            polled = sending.polled
            confirmed = [o.emitted for o in sending.outs if o.confirmed]
            failed = [o for o in sending.outs if not o.confirmed]
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
                done, update = outcome.succeeded(polled, FeedStatus.OK, now, self.policy, confirmed, new)
                done.cut, done.pages = sum(o.cut for o in sending.outs), sending.pages
                settled.append((done, update))
        cycle.in_flight = pending
        return self._save(settled)

    def _save(self, settled: list[tuple[FeedOutcome, FeedUpdate]]) -> list[FeedOutcome]:
        self.state.save([update for _, update in settled])
        now = self.clock()
        for done, update in settled:
            self.sender.publish_health(outcome.health(done, update.state, now))
        return [done for done, _ in settled]

    def _ask_page(self, job: PageJob, gathering: Gathering, cycle: _Cycle) -> None:
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
                    cycle.in_flight.append(self._send(gathering))
                except Exception as exc:  # a bug must cost this feed only, never the cycle
                    log.exception("sending %s failed", gathering.polled.feed.url)
                    failure = self._failure(
                        gathering.polled,
                        FeedStatus.INTERNAL_ERROR,
                        f"{type(exc).__name__}: {exc}",
                        self.clock(),
                    )
                    self._save([failure])

    def _send(self, gathering: Gathering) -> _Sending:
        """Produce one feed's articles (with their page text) and rejects, not waiting for Kafka."""
        feed = gathering.polled.feed
        outs = [self.sender.article(feed.url, a, as_fed.content_hash) for a, as_fed in gathering.final()]
        outs += [
            self.sender.dead_letter(feed.url, key, r.reason, r.error, r.payload)
            for key, r in gathering.letters.items()
        ]
        self.sender.send(feed.url, outs)
        return _Sending(gathering.polled, outs, gathering.outcomes)

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

    def _failure(
        self, polled: Polled, status: FeedStatus, error: str, now: float, emitted: Sequence[Emitted] = ()
    ) -> tuple[FeedOutcome, FeedUpdate]:
        new = sum(e.topic == self.settings.topics.raw for e in emitted)
        return outcome.failed(polled, status, error, now, self.policy, self.rng, emitted, new)
