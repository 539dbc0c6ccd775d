"""``newsflow feeds ...``: import/export OPML, show feed health, re-enable feeds; and the ingest loop.

Registered in :mod:`newsflow.cli` with ``app.add_typer(feeds_app, name="feeds")``. The settings and
consoles come from :mod:`newsflow.cli` inside each command (imported lazily: cli imports this module).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

if TYPE_CHECKING:
    from connectors.rss.feeds import Feed
    from connectors.rss.ingest import CycleSummary, FeedOutcome, Ingestor
    from newsflow.config import Settings

feeds_app = typer.Typer(
    help="Manage the feeds list (YAML/OPML) and inspect each feed's health.", no_args_is_help=True
)

FeedsOption = Annotated[
    Path | None,
    typer.Option(
        "--feeds",
        envvar="NEWSFLOW_FEEDS_FILE",
        show_default="examples/feeds.yaml",
        help="feeds list (.yaml or .opml)",
    ),
]


def _when(ts: float | None) -> str:
    if ts is None:
        return "-"
    return datetime.fromtimestamp(ts, tz=UTC).strftime("%Y-%m-%d %H:%M")


@feeds_app.command("import")
def import_opml(
    opml: Annotated[Path, typer.Argument(help="OPML file to import (e.g. exported from a feed reader)")],
    into: Annotated[
        Path | None,
        typer.Option(
            "--into", envvar="NEWSFLOW_FEEDS_FILE", show_default="examples/feeds.yaml", help="YAML feeds file"
        ),
    ] = None,
) -> None:
    """Merge an OPML file's feeds into the YAML feeds list (duplicates by URL are skipped)."""
    from connectors.rss.feeds import Feed, load_feeds, merge_feeds, opml_entries, write_feeds_yaml
    from newsflow.cli import console, settings
    from newsflow.errors import ConfigError

    target = into or settings().feeds_file
    try:
        raw = opml.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise ConfigError(f"OPML file {opml} not found") from exc
    incoming = [Feed.model_validate(e) for e in opml_entries(raw, opml)]
    existing = load_feeds(target) if target.exists() else []
    merged, added = merge_feeds(existing, incoming)
    write_feeds_yaml(target, merged, added)
    console.print(
        f"imported {len(added)} new feeds into {target} "
        f"({len(incoming) - len(added)} already listed; {len(merged)} feeds in all)"
    )


@feeds_app.command("export")
def export_opml(
    output: Annotated[Path, typer.Option("--output", "-o", help="OPML file to write")],
    feeds: FeedsOption = None,
) -> None:
    """Write the feeds list as OPML 2.0 (for feed readers, or to import elsewhere)."""
    from connectors.rss.feeds import load_feeds, to_opml
    from newsflow.cli import console, settings

    source = feeds or settings().feeds_file
    feed_list = load_feeds(source)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(to_opml(feed_list), encoding="utf-8")
    console.print(f"wrote {len(feed_list)} feeds to {output}")


@feeds_app.command("status")
def status(feeds: FeedsOption = None) -> None:
    """A table of every feed's health: last status and success, failures, bozo count, next poll."""
    from connectors.rss.feeds import load_feeds
    from connectors.rss.state import FeedState, StateStore
    from newsflow.cli import console, settings

    cfg = settings()
    feed_list = load_feeds(feeds or cfg.feeds_file)
    store = StateStore(cfg.data_dir / "ingest" / "state.db")
    try:
        states = store.states(f.url for f in feed_list)
    finally:
        store.close()
    table = Table(title=f"{len(feed_list)} feeds ({cfg.data_dir / 'ingest' / 'state.db'})")
    for column in ("feed", "last status", "last success", "failures", "bozo", "items seen", "next poll"):
        table.add_column(column, justify="right" if column in ("failures", "bozo", "items seen") else "left")
    table.add_column("disabled / moved", overflow="fold")
    for feed in feed_list:
        state: FeedState = states[feed.url]
        name = feed.name or feed.url
        if not feed.enabled:
            next_poll = "off in feeds file"
        elif state.disabled and state.next_poll is None:
            next_poll = "never (reset it)"
        else:
            next_poll = _when(state.next_poll) if state.last_polled else "now"
        note = f"[red]{state.disabled_reason}[/]" if state.disabled else ""
        if state.moved_to:
            note = (note + "; " if note else "") + f"moved to {state.moved_to}"
        colour = "green" if state.last_status is not None and state.last_status.healthy else "yellow"
        table.add_row(
            f"{name}\n[dim]{feed.url}[/]" if feed.name else name,
            f"[{colour}]{state.last_status or 'never polled'}[/]",
            (state.last_success or "-").replace("T", " ").removesuffix("Z"),
            str(state.consecutive_failures),
            str(state.bozo_count),
            str(state.items_seen),
            next_poll,
            note,
        )
    console.print(table)


@feeds_app.command("reset")
def reset(url: Annotated[str, typer.Argument(help="the feed's URL as written in the feeds file")]) -> None:
    """Re-enable a disabled feed, clear its failures and forget where it moved: polled at the next ingest."""
    from connectors.rss.state import StateStore
    from newsflow.cli import console, settings
    from newsflow.errors import ConfigError

    store = StateStore(settings().data_dir / "ingest" / "state.db")
    try:
        if not store.reset(url):
            raise ConfigError(f"no ingest state for {url}; check the URL with 'newsflow feeds status'")
    finally:
        store.close()
    console.print(
        f"{url} re-enabled, failures and any stored redirect cleared; it is polled at the next ingest"
    )


# -- the ingest loop (newsflow ingest) -------------------------------------------------------------
def run_ingest(cfg: Settings, once: bool, every: str | None) -> None:
    """Poll feeds, show progress and a summary; with ``every``, repeat on that tick.

    ``--once`` (or no schedule at all) polls every enabled feed that is not disabled; each tick of
    ``--every`` polls only the feeds that are due, so restarting a scheduler hammers no host.
    With ``NEWSFLOW_METRICS_PORT`` (``--metrics-port``) it serves the live metrics meanwhile.
    """
    from connectors.rss.feeds import load_feeds
    from connectors.rss.ingest import Ingestor
    from connectors.rss.schedule import parse_duration
    from newsflow.cli import announce_endpoint, console
    from newsflow.records import new_run_id
    from newsflow.telemetry import logs
    from newsflow.telemetry.endpoint import live_endpoint

    interval = parse_duration(every) if every else None
    with live_endpoint(cfg, None, lag=False, models=False) as server:
        announce_endpoint(server)
        with Ingestor(cfg) as ingestor:
            first = True
            while True:
                tick = time.monotonic()
                logs.set_run(new_run_id())
                feed_list = load_feeds(cfg.feeds_file)  # re-read each cycle: edits apply without a restart
                summary = _cycle(ingestor, feed_list, force=once or (first and interval is None))
                console.print(summary.describe())
                _print_problems(summary)
                first = False
                if once or interval is None:
                    return
                next_due = ingestor.next_poll(feed_list)
                wait = interval - (time.monotonic() - tick)
                console.print(
                    f"next cycle in {max(0.0, wait):.0f}s (earliest feed due {_when(next_due)} UTC)"
                )
                time.sleep(max(0.0, wait))


def _cycle(ingestor: Ingestor, feed_list: list[Feed], force: bool) -> CycleSummary:
    from newsflow.cli import console

    due = len(ingestor.due(feed_list, force))
    if not console.is_terminal or due == 0:
        return ingestor.run_cycle(feed_list, force=force)
    columns = (
        TextColumn("polling feeds"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[new]} new, {task.fields[errors]} errors"),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("poll", total=due, new=0, errors=0)
        counts = {"new": 0, "errors": 0}

        def advance(outcome: FeedOutcome) -> None:
            counts["new"] += outcome.new
            counts["errors"] += not outcome.status.healthy
            bar.update(task, advance=1, new=counts["new"], errors=counts["errors"])

        return ingestor.run_cycle(feed_list, progress=advance, force=force)


def _print_problems(summary: CycleSummary) -> None:
    from newsflow.cli import console

    problems = [o for o in summary.outcomes if not o.status.healthy]
    if not problems:
        return
    table = Table(title="feeds with errors this cycle")
    table.add_column("feed")
    table.add_column("status")
    table.add_column("error", overflow="fold")
    for outcome in problems[:50]:
        error = outcome.error + (
            f" [red](disabled: {outcome.disabled_reason})[/]" if outcome.disabled_reason else ""
        )
        table.add_row(outcome.feed.name or outcome.feed.url, outcome.status, error)
    console.print(table)
    if len(problems) > 50:
        console.print(f"... and {len(problems) - 50} more; see 'newsflow feeds status'")
