"""The report page in a real browser: every chart renders, nothing is fetched from the network."""

from __future__ import annotations

import pytest

from tests.newsflow.report.chromium import inspect_page

pytestmark = pytest.mark.integration

CHECK = """
(() => {
  const charts = Array.from(document.querySelectorAll('img.chart')).map(img => ({
    id: img.id, complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
    shown: img.getBoundingClientRect().width }));
  return {charts, numbers: document.querySelectorAll('[data-key]').length, title: document.title};
})()
"""


def test_every_chart_renders_offline(written_report, tmp_path):
    _, _records, _, result = written_report
    page, requested = inspect_page(result.page, CHECK, screenshot=tmp_path / "report.png")
    charts = {c["id"]: c for c in page["charts"]}
    # topic volume, one per claim, top sources, feed health
    assert list(charts) == result.charts and len(result.charts) == 1 + 2 + 1 + 1
    for chart in charts.values():
        assert chart["complete"] and chart["width"] > 300 and chart["height"] > 100, chart
        assert chart["shown"] > 300, chart
    assert page["numbers"] >= len([c for c in result.report.cells().values() if c.count])
    # self-contained: the page itself, and data: URIs for its charts; nothing else
    assert requested and all(url.startswith(("file://", "data:")) for url in requested), requested
    assert (tmp_path / "report.png").stat().st_size > 10_000
