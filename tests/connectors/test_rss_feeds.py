"""Feeds lists: OPML import (merge, dedupe), export round trip, overrides, and the feeds CLI."""

import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from connectors.rss.feeds import Feed, load_feeds, merge_feeds, opml_entries, to_opml, write_feeds_yaml
from connectors.rss.state import FeedState, FeedUpdate, StateStore
from newsflow import cli
from newsflow.cli_feeds import feeds_app
from newsflow.config import Settings
from newsflow.errors import ConfigError

OPML = """<?xml version="1.0"?>
<opml version="1.0"><head><title>Reader export</title></head><body>
  <outline text="News">
    <outline text="Alpha" title="Alpha Daily" type="rss" xmlUrl="https://alpha.example/rss"/>
    <outline text="Beta" type="rss" xmlUrl="HTTPS://Beta.example/feed.xml" language="fr"/>
  </outline>
  <outline text="A folder without feeds"/>
  <outline text="Dup" type="rss" xmlUrl="https://existing.example/rss#frag"/>
</body></opml>"""

YAML = """# my feeds, hand-curated
feeds:
  - url: https://existing.example/rss  # keep this comment
    name: Existing
    interval: 2h
"""


def test_overrides_are_validated_with_a_clear_message(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("feeds:\n  - url: https://a.example/rss\n    interval: often\n")
    with pytest.raises(ConfigError, match=r"entry 1: .*30s, 15m"):
        load_feeds(path)
    assert Feed(url="https://a.example/rss", interval="45m").interval_s == 2700


def test_opml_entries_at_any_depth_with_overrides():
    entries = opml_entries(OPML)
    assert [e["url"] for e in entries] == [
        "https://alpha.example/rss",
        "HTTPS://Beta.example/feed.xml",
        "https://existing.example/rss#frag",
    ]
    assert entries[0]["name"] == "Alpha Daily" and entries[1]["language"] == "fr"


def test_opml_with_entity_declarations_is_refused():
    with pytest.raises(ConfigError, match="entities"):
        opml_entries('<!DOCTYPE o [<!ENTITY a "b">]><opml><body/></opml>')


def test_merge_dedupes_by_canonical_url_and_keeps_existing_overrides():
    existing = [Feed(url="https://existing.example/rss", name="Existing", interval="2h")]
    incoming = [Feed.model_validate(e) for e in opml_entries(OPML)]
    merged, added = merge_feeds(existing, incoming)
    assert merged[0] == existing[0]
    assert [f.url for f in added] == ["https://alpha.example/rss", "HTTPS://Beta.example/feed.xml"]


def test_import_appends_and_keeps_comments(tmp_path):
    target = tmp_path / "feeds.yaml"
    target.write_text(YAML)
    existing = load_feeds(target)
    merged, added = merge_feeds(existing, [Feed(url="https://new.example/rss", name="New: one")])
    write_feeds_yaml(target, merged, added)
    text = target.read_text()
    assert "# keep this comment" in text and "# my feeds" in text
    assert load_feeds(target) == merged


def test_export_then_import_round_trips(tmp_path):
    feeds = [
        Feed(url="https://a.example/rss", name="A & B", language="en", interval="30m", full_text="always"),
        Feed(url="https://c.example/atom", enabled=False, full_text="never"),
    ]
    path = tmp_path / "out.opml"
    path.write_text(to_opml(feeds))
    assert 'newsflowFullText="always"' in path.read_text()
    assert load_feeds(path) == [
        feeds[0],
        Feed(url="https://c.example/atom", name="https://c.example/atom", enabled=False, full_text="never"),
    ]


def test_full_text_is_validated_in_yaml(tmp_path):
    path = tmp_path / "f.yaml"
    path.write_text("feeds:\n  - url: https://a.example/rss\n    full_text: sometimes\n")
    with pytest.raises(ConfigError, match="entry 1"):
        load_feeds(path)
    path.write_text("feeds:\n  - url: https://a.example/rss\n    full_text: never\n")
    assert load_feeds(path)[0].full_text == "never"


@pytest.fixture
def run_feeds(tmp_path, monkeypatch):
    """Invoke `newsflow feeds ...` with settings pointing at a temporary data dir and feeds file."""
    settings = Settings().with_overrides(data_dir=tmp_path / "data", feeds_file=tmp_path / "feeds.yaml")
    monkeypatch.setattr(cli._State, "settings", settings)
    monkeypatch.setattr(cli, "console", Console(width=250))  # CliRunner captures it; no wrapping
    app = typer.Typer()
    app.add_typer(feeds_app, name="feeds")

    def run(*args: str):
        result = CliRunner().invoke(app, ["feeds", *args], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        return result.output

    return run


def test_cli_import_export_and_status(tmp_path, run_feeds):
    (tmp_path / "feeds.yaml").write_text(YAML)
    (tmp_path / "in.opml").write_text(OPML)
    out = run_feeds("import", str(tmp_path / "in.opml"))
    assert "imported 2 new feeds" in out and "1 already listed" in out
    out = run_feeds("import", str(tmp_path / "in.opml"))
    assert "imported 0 new feeds" in out
    run_feeds("export", "--output", str(tmp_path / "all.opml"))
    assert len(load_feeds(tmp_path / "all.opml")) == 3

    store = StateStore(tmp_path / "data" / "ingest" / "state.db")
    store.save(
        [
            FeedUpdate(
                FeedState(
                    url="https://alpha.example/rss",
                    last_status="http_410",
                    consecutive_failures=1,
                    disabled_reason="gone: the server answered 410",
                    last_polled="2026-01-01T00:00:00Z",
                )
            ),
            FeedUpdate(
                FeedState(
                    url="https://existing.example/rss", last_status="ok", last_polled="2026-01-01T00:00:00Z"
                ),
                items=20,
                bozo=True,
            ),
        ]
    )
    store.close()
    out = run_feeds("status")
    for text in ("Alpha Daily", "http_410", "gone", "never (reset it)", "Existing", "20", "never polled"):
        assert text in out, (text, out)
    assert "re-enabled" in run_feeds("reset", "https://alpha.example/rss")
