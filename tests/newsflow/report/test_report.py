"""Every number on the report is traced to the records it counts, and the counts are right.

The expected numbers are recomputed here from the corpus itself (tests/newsflow/report/conftest.py),
not from the report's code: per topic and hour, per claim, label and hour, per topic and source, per
feed-health status and hour, per feed; the report's ``data.json`` must list exactly those ids for
each number, and the page must show each number next to its key.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from connectors.files import parse_time
from tests.newsflow.report.conftest import NOW, corpus

pytestmark = pytest.mark.integration

SINCE = NOW - timedelta(days=3)


def _hour(when) -> str:
    return when.strftime("%Y-%m-%dT%H")


def expected_cells() -> dict[str, set[str]]:
    records, polls = corpus()
    cells: dict[str, set[str]] = defaultdict(set)
    for r in records:
        at = parse_time(r.article.published_at) or parse_time(r.article.fetched_at)
        if at < SINCE:
            continue
        cells["records"].add(r.article.id)
        for t in r.topics:
            cells[f"topic/{t.label}"].add(r.article.id)
            cells[f"volume/{t.label}/{_hour(at)}"].add(r.article.id)
            cells[f"source/{t.label}/{r.article.source}"].add(r.article.id)
        for s in r.stances:
            cells[f"stance/{s.claim_id}/{s.label}/{_hour(at)}"].add(r.article.id)
            cells[f"stance_total/{s.claim_id}/{s.label}"].add(r.article.id)
    for p in polls:
        if p.at < SINCE:
            continue
        poll_id = f"{p.feed_url}@{p.at.isoformat().replace('+00:00', 'Z')}"
        status = "unchanged" if p.status == "not_modified" else p.status
        cells[f"health/{status}/{_hour(p.at)}"].add(poll_id)
        cells[f"feed_polls/{p.feed_url}"].add(poll_id)
        if status not in ("ok", "unchanged"):
            cells[f"feed_errors/{p.feed_url}/{status}"].add(poll_id)
    return cells


def _page_numbers(html: str) -> dict[str, int]:
    found = re.findall(r"data-key=[\"']([^\"']+)[\"']>(\d+)<", html)
    return {key.replace("&amp;", "&"): int(n) for key, n in found}


def check_report(page_text: str, trace: dict) -> None:
    cells = trace["cells"]
    for key, cell in cells.items():
        assert cell["count"] == len(cell["ids"]) == len(set(cell["ids"])), key
    expected = expected_cells()
    got = {k: set(c["ids"]) for k, c in cells.items() if c["count"] and not k.startswith("spike/")}
    assert got.keys() == expected.keys(), got.keys() ^ expected.keys()
    for key, ids in expected.items():
        assert got[key] == ids, key
    # the spike: the 12 Syria articles of one hour two days before, plus nothing else at that hour
    spike = f"spike/syria_conflict/{_hour(NOW - timedelta(days=2, hours=3))}"
    assert (
        set(cells[spike]["ids"])
        == expected[f"volume/syria_conflict/{_hour(NOW - timedelta(days=2, hours=3))}"]
    )
    assert cells[spike]["count"] >= 12
    # every number on the page is one of data.json's, with the same value, and every non-zero one is shown
    shown = _page_numbers(page_text)
    assert shown, "no numbers on the page"
    for key, number in shown.items():
        assert cells[key]["count"] == number, key
    assert {k for k, c in cells.items() if c["count"]} <= shown.keys()


def test_the_counts_trace_to_the_records(written_report):
    _, _, _, result = written_report
    check_report(result.page.read_text(), json.loads(result.data.read_text()))
    assert result.report.bucket == "hour"
    assert result.report.feeds[0].name == "World Desk"  # the disabled feed first
    assert result.report.feeds[0].disabled_reason == "5 failures in a row"


def test_the_cli_writes_the_report_and_says_where(written_report, tmp_path):
    from newsflow import cli

    settings, _, _, _ = written_report
    env = {
        "NEWSFLOW_TOPICS_FEED_HEALTH": settings.topics.feed_health,
        "NEWSFLOW_LOG_LEVEL": "WARNING",
    }
    out = tmp_path / "cli-report"
    result = CliRunner().invoke(
        cli.app,
        [
            "--data-dir",
            str(settings.data_dir),
            "--bootstrap",
            settings.kafka.bootstrap,
            "report",
            "--output",
            str(out),
            "--since",
            "all",
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    assert (out / "index.html").exists() and (out / "data.json").exists()
    assert out.resolve().as_uri() in result.output.replace("\n", "")
    trace = json.loads((out / "data.json").read_text())
    assert trace["cells"]["records"]["count"] == 64  # --since all: the older articles too
    assert trace["bucket"] == "day"


def test_the_same_report_from_postgresql(written_report, postgres_dsn, tmp_path, unique):
    """Written by the PostgreSQL sink's own upsert, read back: the same numbers as from the files."""
    from connectors import postgres
    from connectors.files import EnrichedRow
    from newsflow.records import encode
    from newsflow.report.build import build_report

    settings, records, _, result = written_report
    table = f"report_{unique}"
    settings = settings.with_overrides(**{"sinks.postgres_dsn": postgres_dsn, "sinks.postgres_table": table})
    postgres.check(postgres_dsn, table)
    rows = [postgres.row_values(EnrichedRow("news.raw", 0, i, r, encode(r))) for i, r in enumerate(records)]
    with postgres.connect(postgres_dsn) as conn:
        postgres.upsert(conn, postgres.upsert_sql(table), rows, 100)
    from_pg = build_report(settings, tmp_path / "pg", since="3d", source="postgres", now=NOW)
    check_report(from_pg.page.read_text(), json.loads(from_pg.data.read_text()))
    files_cells = json.loads(result.data.read_text())["cells"]
    pg_cells = json.loads(from_pg.data.read_text())["cells"]
    assert {k: sorted(v["ids"]) for k, v in pg_cells.items()} == {
        k: sorted(v["ids"]) for k, v in files_cells.items()
    }
