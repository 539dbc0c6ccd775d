"""The per-host politeness budget: concurrency and spacing per host, shared by all its feeds."""

import itertools
import threading
from collections import defaultdict

import httpx
import pytest

from connectors.rss.politeness import HostBudget, PoliteRunner, host_key
from newsflow.feedserver import FeedServer, Reply


class FakeClock:
    """Monotonic time that only moves when someone sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def _starts_by_host(budget):
    starts = defaultdict(list)
    for host, at in budget.starts:
        starts[host].append(at)
    return starts


def test_host_key_includes_the_port():
    assert host_key("http://Example.COM:8080/feed") == "example.com:8080"
    assert host_key("https://a.example/x") == "a.example"


def test_request_starts_to_one_host_are_spaced_and_other_hosts_are_not_delayed():
    clock = FakeClock()
    budget = HostBudget(concurrency=4, spacing=2.0, clock=clock, sleep=clock.sleep)
    urls = [f"http://a.example/{i}" for i in range(5)] + [f"http://b.example/{i}" for i in range(3)]
    done = [url for batch in PoliteRunner(budget, workers=6).run(urls, str, lambda u: u) for url in batch]
    assert sorted(done) == sorted(urls)
    starts = _starts_by_host(budget)
    a, b = sorted(starts["a.example"]), sorted(starts["b.example"])
    assert all(y - x >= 2.0 for x, y in itertools.pairwise(a))
    assert all(y - x >= 2.0 for x, y in itertools.pairwise(b))
    assert a[0] == 1000.0 and b[0] == 1000.0  # both hosts start at once


def test_fn_errors_reach_the_caller():
    budget = HostBudget(concurrency=1, spacing=0.0)

    def boom(url):
        raise RuntimeError(url)

    with pytest.raises(RuntimeError, match=r"http://a\.example/1"):
        list(PoliteRunner(budget, workers=2).run(["http://a.example/1"], str, boom))


def test_concurrency_per_host_is_capped_on_a_real_server():
    with FeedServer() as slow, FeedServer() as other:
        for i in range(6):
            slow.route(f"/{i}", Reply(body=b"ok", hold=0.05))
            other.route(f"/{i}", Reply(body=b"ok", hold=0.05))
        urls = [slow.url(f"/{i}") for i in range(6)] + [other.url(f"/{i}") for i in range(6)]
        budget = HostBudget(concurrency=2, spacing=0.0)
        with httpx.Client() as client:
            results = [
                r
                for batch in PoliteRunner(budget, workers=8).run(urls, str, lambda u: client.get(u))
                for r in batch
            ]
        assert [r.status_code for r in results] == [200] * 12
        assert slow.max_in_flight <= 2 and other.max_in_flight <= 2
        assert len(slow.requests) == 6 and len(other.requests) == 6


def test_batches_never_exceed_the_maximum():
    budget = HostBudget(concurrency=8, spacing=0.0)
    urls = [f"http://h{i % 4}.example/{i}" for i in range(40)]
    batches = list(PoliteRunner(budget, workers=4).run(urls, str, lambda u: u, max_batch=5))
    assert all(1 <= len(b) <= 5 for b in batches)
    assert sorted(u for b in batches for u in b) == sorted(urls)
