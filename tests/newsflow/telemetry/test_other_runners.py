"""A run whose Beam workers are other processes: its counters still reach /metrics when it ends.

``--direct_running_mode multi_processing`` runs the FnApiRunner's workers as subprocesses, like
Prism's PROCESS environment or a cluster: the hooks in the DoFns record there, not here. After the
run, ``account_run`` adds the run's Beam counters (articles enriched, dead letters by stage and
reason); the histograms stay empty, as docs/OPERATIONS.md says.
"""

import pytest

from connectors import kafka as kafka_clients
from newsflow import cli
from newsflow.records import Article, content_hash, encode
from newsflow.telemetry import instruments
from newsflow.telemetry.runners import workers_in_process

pytestmark = pytest.mark.integration

ARGS = ["--direct_num_workers=2", "--direct_running_mode=multi_processing"]  # on the default fnapi runner


def test_counters_of_workers_in_other_processes_are_added_when_the_run_ends(kafka_settings):
    settings = kafka_settings.with_overrides(**{"models.stance_model": "gate-only"})
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    producer = kafka_clients.producer(settings.kafka, retries=40, retry_backoff_ms=250)
    for n in range(5):
        article = Article(
            id=f"other-runner-{n:04d}",
            feed_url="http://feeds.test/x.rss",
            title=f"Airstrikes hit a hospital in Idlib, report {n}",
            summary="Rescuers said strikes hit a hospital in Syria's Idlib province.",
            fetched_at="2026-11-01T00:00:00Z",
            content_hash=content_hash(str(n)),
        )
        producer.send(settings.topics.raw, key=article.id.encode(), value=encode(article))
    producer.send(settings.topics.raw, key=b"broken", value=b"{not json")
    producer.flush()
    producer.close()

    assert not workers_in_process(ARGS)
    before = instruments.snapshot()
    batches = instruments.value("newsflow_model_batch_seconds_count")
    report = cli._enrich_once(settings, mode="batch", beam_args=ARGS)
    assert report.enriched == 5 and report.dead_lettered == 1
    after = instruments.snapshot()
    assert after[("enriched",)] - before[("enriched",)] == 5
    key = ("dead_letter", "decode", "bad_json")
    assert after[key] - before.get(key, 0) == 1
    assert instruments.value("newsflow_model_batch_seconds_count") == batches  # recorded in the workers
    assert instruments.value("newsflow_last_success_timestamp_seconds", {"job": "enrich"}) > 0
