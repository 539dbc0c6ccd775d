"""CLI output that other tools read: the enrich run's one-line reconciliation."""

from rich.console import Console

from newsflow import cli
from pipelines.enrich import EnrichReport


def test_an_enrich_run_prints_the_reports_summary(monkeypatch):
    console = Console(width=300, record=True)
    monkeypatch.setattr(cli, "console", console)
    counters = {
        "kafka_records_read": 30,
        "enriched": 24,
        "dead_lettered.decode": 6,
        "written.kafka": 24,
        "written.files": 24,
        "written.dlq": 6,
    }
    report = EnrichReport("run-7", "batch", [], counters, seconds=2.5, sinks=("kafka", "files"))
    cli._print_enrich(report)
    assert console.export_text().strip() == f"run run-7 (2.5s): {report.summary()}; offsets committed"
