"""The hooks' arithmetic, and the counters of runs whose workers ran in other processes."""

from newsflow.telemetry import instruments as m


def test_hooks_record_what_they_are_told():
    before = m.snapshot()
    enriched = m.value("newsflow_articles_enriched_total")
    latencies = m.value("newsflow_produce_to_enriched_seconds_count")
    m.enriched(produced_ms=None)  # no Kafka timestamp: counted, no latency observed
    m.enriched(produced_ms=1)
    m.dead_letter("decode", "bad_json", topic="t", partition=0, offset=5)
    m.feed_polled("http_error", 0, "https://x.test/feed")
    assert m.value("newsflow_articles_enriched_total") == enriched + 2
    assert m.value("newsflow_produce_to_enriched_seconds_count") == latencies + 1
    after = m.snapshot()
    assert (
        after[("dead_letter", "decode", "bad_json")]
        == before.get(("dead_letter", "decode", "bad_json"), 0) + 1
    )
    assert m.value("newsflow_feeds_polled_total", {"status": "http_error"}) >= 1


def test_a_run_on_workers_elsewhere_adds_its_beam_counters_once():
    counters = {"enriched": 7, "dead_lettered.decode": 2, "dlq_reason.decode.schema_invalid": 2}
    before = m.snapshot()
    assert m.account_run(before, counters) is True  # nothing recorded here: all of it is added
    after = m.snapshot()
    assert after[("enriched",)] == before[("enriched",)] + 7
    key = ("dead_letter", "decode", "schema_invalid")
    assert after[key] == before.get(key, 0) + 2


def test_a_run_on_workers_in_this_process_adds_nothing():
    before = m.snapshot()
    for _ in range(3):
        m.enriched()
    m.dead_letter("build", "inconsistent_labels")
    counters = {"enriched": 3, "dlq_reason.build.inconsistent_labels": 1}
    assert m.account_run(before, counters) is False
    assert m.snapshot()[("enriched",)] == before[("enriched",)] + 3
