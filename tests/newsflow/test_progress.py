"""Progress when output is not a terminal: a clean line per step, and the enrich view of the metrics."""

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
