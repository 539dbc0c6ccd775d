"""Progress when output is not a terminal: a clean line per step, and the enrich view of the metrics."""

import pytest
from rich.console import Console

from newsflow.progress import EnrichProgress, StepProgress
from newsflow.telemetry import instruments


def _console() -> Console:
    return Console(width=200, record=True, force_terminal=False)


def test_a_line_per_step_then_the_last():
    console = _console()
    with StepProgress(console, "predicting topics", 600, "articles") as bar:
        for size in (256, 256, 88):
            bar.advance(size)
        bar.note("a note")
    assert console.export_text().splitlines() == [
        "predicting topics: 256/600 articles (42.7%)",
        "predicting topics: 512/600 articles (85.3%)",
        "predicting topics: 600/600 articles (100.0%)",
        "a note",
    ]


def test_unknown_totals_and_rate_limited_lines():
    console = _console()
    with StepProgress(console, "training", None, "steps", min_interval_s=3600) as bar:
        bar.update(1)
        bar.update(2)  # within the interval: no line
        bar.update(3, total=3)  # finished: always a line
    assert console.export_text().splitlines() == ["training: 1 steps", "training: 3/3 steps (100.0%)"]


def test_enrich_progress_reads_the_plan_and_the_pipeline_counters():
    console = _console()
    with EnrichProgress(console, poll_s=3600):  # no polling: only the final refresh prints
        instruments.enrich_planned(4)
        instruments.enriched()
        instruments.enriched()
        instruments.dead_letter("decode", "bad_json")
    assert console.export_text().strip() == "enriching: 3/4 offsets (75.0%)"
    assert instruments.value("newsflow_enrich_planned_offsets") == 0  # no run in progress now


@pytest.mark.integration
def test_a_bounded_enrich_run_shows_offsets_done_of_planned(kafka_settings):
    """``newsflow enrich`` (piped) prints the run's progress from the live counters, then its summary."""
    from typer.testing import CliRunner

    from connectors import kafka as kafka_clients
    from newsflow import cli
    from newsflow.records import Article, content_hash, encode

    settings = kafka_settings
    kafka_clients.ensure_topics(settings.kafka, settings.topics)
    producer = kafka_clients.producer(settings.kafka, retries=40, retry_backoff_ms=250)
    for n in range(6):
        article = Article(
            id=f"progress-{n:04d}",
            feed_url="http://feeds.test/x.rss",
            title=f"Election officials warn of foreign interference, item {n}",
            summary="Investigators say a foreign influence operation ran fake accounts.",
            fetched_at="2026-11-01T00:00:00Z",
            content_hash=content_hash(str(n)),
        )
        producer.send(settings.topics.raw, key=article.id.encode(), value=encode(article))
    producer.send(settings.topics.raw, key=b"broken", value=b"{not json")
    producer.flush()
    producer.close()
    env = {
        "NEWSFLOW_KAFKA_GROUP_ID": settings.kafka.group_id,
        "NEWSFLOW_TOPICS_RAW": settings.topics.raw,
        "NEWSFLOW_TOPICS_ENRICHED": settings.topics.enriched,
        "NEWSFLOW_TOPICS_DLQ": settings.topics.dlq,
        "NEWSFLOW_TOPICS_FEED_HEALTH": settings.topics.feed_health,
        "NEWSFLOW_MODELS_STANCE_MODEL": "gate-only",
    }
    args = ["--data-dir", str(settings.data_dir), "--bootstrap", settings.kafka.bootstrap, "enrich"]
    result = CliRunner().invoke(cli.app, args, env=env)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "enriching: 7/7 offsets (100.0%)" in lines
    flat = " ".join(result.output.split())  # the summary may wrap at the terminal width
    assert "read 7 = enriched 6 + dead-lettered 1" in flat, lines
