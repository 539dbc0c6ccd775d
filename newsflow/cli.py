"""The ``newsflow`` command line.

Every option that maps to a setting shows its environment variable in ``--help``; anything not
given on the command line comes from ``NEWSFLOW_*`` variables or the defaults (``newsflow config``
prints the effective values). Errors a user can fix print one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import re
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from newsflow.config import Settings, describe
from newsflow.errors import NewsflowError

console = Console()
err_console = Console(stderr=True)

app = typer.Typer(
    name="newsflow",
    help="Streaming news ingestion: RSS/Atom feeds -> Kafka -> Beam topic and stance enrichment -> sinks.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(
    help="Run a local single-node Kafka broker (KRaft) from Maven Central jars.", no_args_is_help=True
)
app.add_typer(kafka_app, name="kafka")


class _State:
    overrides: dict[str, Any] = {}  # noqa: RUF012 - process-wide CLI state
    settings: Settings | None = None


def settings() -> Settings:
    if _State.settings is None:
        try:
            _State.settings = Settings().with_overrides(**_State.overrides)
        except ValueError as exc:  # pydantic ValidationError is a ValueError
            raise NewsflowError(f"invalid settings: {exc}") from exc
    return _State.settings


@app.callback()
def _main(
    data_dir: Annotated[
        Path | None,
        typer.Option(
            envvar="NEWSFLOW_DATA_DIR",
            show_default=".newsflow",
            help="all local state: broker, ingest state, file sinks",
        ),
    ] = None,
    bootstrap: Annotated[
        str | None,
        typer.Option(
            envvar="NEWSFLOW_KAFKA_BOOTSTRAP", show_default="127.0.0.1:9092", help="Kafka bootstrap servers"
        ),
    ] = None,
    taxonomy: Annotated[
        Path | None,
        typer.Option(
            envvar="NEWSFLOW_TAXONOMY_FILE",
            show_default="config/taxonomy.yaml",
            help="topics and claims (YAML)",
        ),
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="debug logging")] = False,
) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    for noisy in ("kafka", "apache_beam", "urllib3", "httpx", "httpcore"):
        logging.getLogger(noisy).setLevel(logging.INFO if verbose else logging.ERROR)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _State.overrides = {"data_dir": data_dir, "kafka.bootstrap": bootstrap, "taxonomy_file": taxonomy}
    _State.settings = None


# -- kafka -------------------------------------------------------------------------------------
@kafka_app.command("up")
def kafka_up() -> None:
    """Start the local broker (formats storage on first use; a no-op if one already answers)."""
    from newsflow.broker import LocalBroker

    with console.status("starting Kafka (first run resolves the jars with Maven)..."):
        status = LocalBroker(settings()).up()
    console.print(status.describe())


@kafka_app.command("down")
def kafka_down() -> None:
    """Stop the local broker started from this data directory."""
    from newsflow.broker import LocalBroker

    stopped = LocalBroker(settings()).down()
    console.print("Kafka broker stopped" if stopped else "no local Kafka broker was running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Show whether the broker runs and answers; exit 1 if it does not answer."""
    from newsflow.broker import LocalBroker

    status = LocalBroker(settings()).status()
    console.print(status.describe())
    if status.log_file.exists():
        console.print(f"log: {status.log_file}")
    raise typer.Exit(0 if status.reachable else 1)


# -- pipeline ----------------------------------------------------------------------------------
def parse_interval(text: str) -> float:
    """'15m' -> 900.0 seconds (s, m, h suffixes; a bare number is seconds)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise NewsflowError(f"cannot read interval {text!r}; use e.g. 30s, 15m or 1h")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"s": 1, "m": 60, "h": 3600}[unit]


@app.command()
def ingest(
    feeds: Annotated[
        Path | None,
        typer.Option(
            envvar="NEWSFLOW_FEEDS_FILE",
            show_default="examples/feeds.yaml",
            help="feeds list (.yaml or .opml)",
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="poll every feed once and exit")] = False,
    every: Annotated[str | None, typer.Option(help="poll on a schedule, e.g. 15m")] = None,
) -> None:
    """Poll feeds and produce new articles to the raw topic."""
    from connectors.rss.feeds import load_feeds
    from connectors.rss.ingest import Ingestor

    cfg = settings().with_overrides(feeds_file=feeds)
    feed_list = load_feeds(cfg.feeds_file)
    ingestor = Ingestor(cfg)
    try:
        while True:
            summary = ingestor.run_cycle(feed_list)
            console.print(
                f"polled {len(summary.outcomes)} feeds in {summary.seconds:.1f}s: "
                f"{summary.new_articles} new articles, "
                f"{summary.by_status.get('not_modified', 0)} unchanged (304), "
                f"errors {dict(summary.errors) or 'none'}"
            )
            if once or every is None:
                return
            time.sleep(parse_interval(every))
    finally:
        ingestor.close()


@app.command()
def enrich(
    mode: Annotated[
        str, typer.Option(help="batch: read up to the end offsets seen at start, then exit")
    ] = "batch",
    from_beginning: Annotated[bool, typer.Option(help="replay the raw topic from its first offset")] = False,
    runner: Annotated[str, typer.Option(help="Beam runner")] = "FnApiRunner",
) -> None:
    """Run the Beam enrichment pipeline over the raw topic (resumes from committed offsets)."""
    from connectors.beam_kafka import StartPosition
    from pipelines.enrich import run_enrich

    with console.status("enriching..."):
        report = run_enrich(
            settings(),
            mode=mode,
            start=StartPosition(from_beginning=from_beginning),
            beam_args=[f"--runner={runner}"],
        )
    _print_enrich(report)


def _print_enrich(report: Any) -> None:
    if report.skipped:
        offsets = ", ".join(f"p{s.partition}@{s.start}" for s in report.slices)
        console.print(f"nothing new to enrich: the group is caught up ({offsets or 'no partitions'})")
        return
    parts = ", ".join(f"p{p}: {n}" for p, n in sorted(report.per_partition().items()))
    console.print(
        f"run {report.run_id}: read {report.read} ({parts}), enriched {report.enriched}, "
        f"dead-lettered {report.dead_lettered} in {report.seconds:.1f}s; offsets committed"
    )


@app.command()
def demo() -> None:
    """Offline end-to-end demo on the bundled sample feeds (what `make run` runs)."""
    from newsflow.demo import run_demo

    cfg = settings()
    with console.status("running the demo: broker, feeds, ingest, Beam enrichment..."):
        result = run_demo(cfg)
    _print_demo(cfg, result)


def _print_demo(cfg: Settings, result: Any) -> None:
    ingest, report = result.ingest, result.enrich
    console.print(
        f"[bold]ingest[/]: {len(ingest.outcomes)} feeds, {ingest.new_articles} new articles, "
        f"{ingest.by_status.get('not_modified', 0)} unchanged (304), {ingest.rejected} rejected items, "
        f"errors: {dict(ingest.errors) or 'none'}"
    )
    if report.skipped:
        committed = sum(s.start for s in report.slices)
        console.print(
            f"[bold]enrich[/]: nothing new: all {committed} raw messages were already enriched "
            f"(offsets committed for group {cfg.kafka.group_id}); same ids, nothing enriched twice"
        )
    else:
        _print_enrich(report)
    topics = Table(
        title=f"Enriched articles in {cfg.topics.enriched}: {len(result.records)} "
        f"({len(result.this_run)} this run)"
    )
    topics.add_column("topic")
    topics.add_column("articles", justify="right")
    for label, count in result.topic_counts().most_common():
        topics.add_row(label, str(count))
    console.print(topics)
    stances = Table(title="Stance toward configured claims")
    stances.add_column("claim")
    for label in ("agree", "disagree", "discuss", "unrelated"):
        stances.add_column(label, justify="right")
    for claim, counts in result.stance_counts().items():
        stances.add_row(
            claim, *(str(counts.get(x, 0)) for x in ("agree", "disagree", "discuss", "unrelated"))
        )
    console.print(stances)
    timing = Table(title="Time per stage")
    timing.add_column("stage")
    timing.add_column("seconds", justify="right")
    for stage, seconds in result.timings.items():
        timing.add_row(stage, f"{seconds:.1f}")
    console.print(timing)
    console.print(
        f"[bold]outputs[/]: Kafka {cfg.kafka.bootstrap} topics {cfg.topics.enriched} "
        f"(enriched), {cfg.topics.dlq} (dead letters); files under {cfg.enriched_dir}"
    )
    if result.records:
        model = result.records[0]["model"]
        console.print("models: " + ", ".join(f"{k}={v}" for k, v in model.items()))
    console.print(f"read them: newsflow tail --from-beginning, or make consume TOPIC={cfg.topics.enriched}")


@app.command()
def tail(
    topic: Annotated[str | None, typer.Option(help="topic to read; default the enriched topic")] = None,
    from_beginning: Annotated[bool, typer.Option(help="start at the first offset, not the end")] = False,
    max_records: Annotated[int, typer.Option("--max", help="stop after this many records (0 = never)")] = 0,
    timeout: Annotated[float, typer.Option(help="stop after this many idle seconds (0 = never)")] = 0.0,
) -> None:
    """Show records live as they arrive (one line each: time, source, topic, stances, title)."""
    import json

    from connectors import kafka as kafka_clients

    cfg = settings()
    name = topic or cfg.topics.enriched
    kafka_clients.require_broker(cfg.kafka)
    consumer = kafka_clients.consumer(
        cfg.kafka, group_id=None, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    consumer.subscribe([name])
    seen = 0
    idle_since = time.monotonic()
    try:
        while True:
            batches = consumer.poll(timeout_ms=500)
            if not batches and timeout and time.monotonic() - idle_since > timeout:
                return
            for records in batches.values():
                idle_since = time.monotonic()
                for message in records:
                    console.print(_tail_line(json.loads(message.value)), markup=False, soft_wrap=True)
                    seen += 1
                    if max_records and seen >= max_records:
                        return
    except KeyboardInterrupt:
        return
    finally:
        consumer.close()


def _tail_line(record: dict[str, Any]) -> str:
    article = record.get("article")
    if not isinstance(article, dict):
        return str(record)[:200]
    stances = " ".join(
        f"{s['claim_id']}={s['label']}" for s in record.get("stances", []) if s["label"] != "unrelated"
    )
    return (
        f"{record.get('enriched_at', '')}  {article.get('source', '')[:18]:18}  "
        f"{record.get('primary_topic', ''):22}  {stances or '-':30}  {article.get('title', '')[:90]}"
    )


@app.command("config")
def show_config() -> None:
    """Print the effective settings and the environment variable for each (secrets hidden)."""
    table = Table(title="newsflow settings")
    table.add_column("environment variable")
    table.add_column("value")
    table.add_column("meaning")
    for env, value, meaning in describe(settings()):
        table.add_row(env, value, meaning)
    console.print(table)


def main() -> None:
    try:
        app()
    except NewsflowError as exc:
        err_console.print(f"[red]error:[/] {exc}", highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
