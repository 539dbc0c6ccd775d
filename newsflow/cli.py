"""The ``newsflow`` command line.

Every option that maps to a setting shows its environment variable in ``--help``; anything not
given on the command line comes from ``NEWSFLOW_*`` variables or the defaults (``newsflow config``
prints the effective values). Errors a user can fix print one line that says what to do.
"""

from __future__ import annotations

import logging
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from newsflow import scrub
from newsflow.cli_feeds import feeds_app  # imports newsflow.cli lazily: no cycle
from newsflow.cli_report import report
from newsflow.config import Settings, describe
from newsflow.errors import NewsflowError
from newsflow.records import FeedStatus

if TYPE_CHECKING:
    from pipelines.enrich import EnrichReport

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
app.add_typer(feeds_app, name="feeds")


class _State:
    overrides: dict[str, Any] = {}  # noqa: RUF012 - process-wide CLI state
    settings: Settings | None = None
    ran_pipeline = False  # main() exits at once after an enrich run


def settings() -> Settings:
    if _State.settings is None:
        try:
            _State.settings = Settings().with_overrides(**_State.overrides)
        except ValueError as exc:  # pydantic ValidationError is a ValueError
            raise NewsflowError(f"invalid settings: {exc}") from exc
    return _State.settings


MetricsPortOption = Annotated[
    int | None,
    typer.Option(
        envvar="NEWSFLOW_METRICS_PORT",
        show_default="off",
        help="serve Prometheus /metrics, /healthz and /readyz on this port (127.0.0.1; 0 = any free port)",
    ),
]


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
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="debug logging (NEWSFLOW_LOG_LEVEL=DEBUG)")
    ] = False,
) -> None:
    from newsflow.telemetry import logs

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    _State.overrides = {"data_dir": data_dir, "kafka.bootstrap": bootstrap, "taxonomy_file": taxonomy}
    _State.settings = None
    cfg = settings()  # NEWSFLOW_LOG_FORMAT / NEWSFLOW_LOG_LEVEL; its secrets are masked in every line
    logs.configure(cfg.log, logs.secrets_of(cfg), verbose=verbose)


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
    """'15m' -> 900.0 seconds (s, m, h, d suffixes; a bare number is seconds)."""
    from connectors.rss.schedule import parse_duration

    return parse_duration(text)  # raises ConfigError, a NewsflowError, with what to write


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
    metrics_port: MetricsPortOption = None,
) -> None:
    """Poll feeds and produce new articles to the raw topic (progress bar and a summary per cycle)."""
    from newsflow.cli_feeds import run_ingest

    cfg = settings().with_overrides(feeds_file=feeds, **{"metrics.port": metrics_port})
    run_ingest(cfg, once=once, every=every)


def _start_position(
    from_beginning: bool, from_timestamp: str | None, offsets: list[str] | None, policy: str
) -> Any:
    from datetime import datetime

    from connectors.beam_kafka import StartPosition

    ts_ms = None
    if from_timestamp:
        try:
            ts_ms = int(datetime.fromisoformat(from_timestamp.replace("Z", "+00:00")).timestamp() * 1000)
        except ValueError as exc:
            raise NewsflowError(f"--from-timestamp {from_timestamp!r} is not ISO-8601") from exc
    explicit: dict[int, int] = {}
    for item in offsets or []:
        part, _, off = item.partition("=")
        if not (part.isdigit() and off.isdigit()):
            raise NewsflowError(f"--offset {item!r}: use PARTITION=OFFSET, e.g. --offset 0=1200")
        explicit[int(part)] = int(off)
    if policy not in ("earliest", "latest"):
        raise NewsflowError("--start-policy must be earliest or latest")
    return StartPosition(
        policy=policy, from_beginning=from_beginning, from_timestamp_ms=ts_ms, offsets=explicit
    )


STOP_GRACE_S = 25.0  # after a stop signal, the run has this long to finish its bundles and commit


def run_enrich_until_signalled(cfg: Settings, **kwargs: Any) -> EnrichReport:
    """Run enrich in a thread; SIGINT/SIGTERM stop it cleanly, within 30 s whatever happens.

    The first signal asks the run to stop (:class:`pipelines.enrich.RunControl`: every reader ends
    its bundle, the sinks flush, the offsets commit). If the run has not returned
    :data:`STOP_GRACE_S` later (a sink that hangs, a broker that is down), or on a second signal, the
    process exits at once with status 3: bundles that did not finish are not committed, so the next
    run reads them again (nothing is lost; Kafka may get them twice, see docs/SINKS.md).
    """
    import signal
    import threading

    from pipelines.enrich import RunControl

    control = RunControl()
    outcome: dict[str, Any] = {}
    _State.ran_pipeline = True

    def work() -> None:
        try:
            outcome["report"] = _enrich_once(cfg, control=control, **kwargs)
        except BaseException as exc:  # handed to the main thread
            outcome["error"] = exc

    def give_up(why: str) -> None:
        err_console.print(
            f"[red]{why}[/]: exiting now; bundles that did not finish are not committed and are read "
            "again by the next run",
            highlight=False,
        )
        sys.stderr.flush()
        os._exit(3)

    def stop(signum: int, _frame: Any) -> None:
        if "report" in outcome or "error" in outcome:
            return  # the run is over; the process is on its way out
        if control.requested.is_set():
            give_up(f"{signal.Signals(signum).name} again")
        err_console.print(f"{signal.Signals(signum).name}: finishing the bundles, committing, stopping")
        control.request_stop()
        timer = threading.Timer(
            STOP_GRACE_S, give_up, args=(f"the run did not stop within {STOP_GRACE_S:.0f}s",)
        )
        timer.daemon = True
        timer.start()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)  # kept until the process exits: a late signal does not cut the output
    thread = threading.Thread(target=work, name="enrich", daemon=True)
    thread.start()
    while thread.is_alive():
        thread.join(0.5)  # the main thread stays free to handle signals
    if "error" in outcome:
        raise outcome["error"]
    report: EnrichReport = outcome["report"]
    return report


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def enrich(
    ctx: typer.Context,
    mode: Annotated[
        str,
        typer.Option(
            help="batch: up to the end offsets seen at start, then exit; stream: until SIGINT/SIGTERM"
        ),
    ] = "batch",
    from_beginning: Annotated[bool, typer.Option(help="replay the raw topic from its first offset")] = False,
    from_timestamp: Annotated[str | None, typer.Option(help="replay from this time (ISO-8601)")] = None,
    offset: Annotated[
        list[str] | None, typer.Option(help="explicit start, PARTITION=OFFSET (repeatable)")
    ] = None,
    start_policy: Annotated[str, typer.Option(help="where the group has no committed offset")] = "earliest",
    runner: Annotated[
        str | None,
        typer.Option(
            envvar="NEWSFLOW_BEAM_RUNNER",
            show_default="fnapi",
            help="fnapi (in this process), prism (workers in their own processes; make prism), flink, "
            "dataflow; other Beam options pass through",
        ),
    ] = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Run the Beam enrichment pipeline over the raw topic (resumes from committed offsets).

    Extra arguments go to Beam unchanged, e.g. --direct_num_workers 2 (fnapi) or --flink_master
    host:8081 (flink); see docs/SCALING.md. SIGINT/SIGTERM stop either mode within 30 s, with the
    offsets of everything written committed.
    """
    from newsflow.progress import EnrichProgress
    from newsflow.telemetry.endpoint import live_endpoint
    from newsflow.telemetry.runners import workers_in_process
    from pipelines import runners

    start = _start_position(from_beginning, from_timestamp, offset, start_policy)
    cfg = settings().with_overrides(**{"beam.runner": runner, "metrics.port": metrics_port})
    beam_args = list(ctx.args)
    # prism, flink and dataflow run the workers in processes of their own (pipelines.runners)
    in_process = cfg.beam.runner == "fnapi" and workers_in_process(runners.beam_args(cfg.beam, beam_args))
    with live_endpoint(cfg, None, lag=True, models=in_process) as server:
        announce_endpoint(server)
        if mode == "stream":
            console.print("streaming from the raw topic; Ctrl-C or SIGTERM stops after the current bundles")
            report = run_enrich_until_signalled(cfg, mode=mode, start=start, beam_args=beam_args)
        else:
            with EnrichProgress(console, in_process):
                report = run_enrich_until_signalled(cfg, mode=mode, start=start, beam_args=beam_args)
    _print_enrich(report)


def announce_endpoint(server: Any) -> None:
    if server is not None:
        console.print(f"metrics: {server.url}/metrics (health: {server.url}/healthz, {server.url}/readyz)")


def _enrich_once(cfg: Settings, run_id: str | None = None, **kwargs: Any) -> EnrichReport:
    """One enrich run under its own run id (in every log line), its counters on the live metrics."""
    from newsflow.records import new_run_id
    from newsflow.telemetry import instruments, logs
    from pipelines.enrich import run_enrich

    run_id = run_id or new_run_id()
    logs.set_run(run_id)
    before = instruments.snapshot()
    report = run_enrich(cfg, run_id=run_id, **kwargs)
    if instruments.account_run(before, report.counters):
        logging.getLogger("newsflow.run").info(
            "the pipeline's workers ran outside this process: its counters were added at the run's end"
        )
    instruments.succeeded("enrich")
    return report


@app.command("run")
def run_scheduled(
    every: Annotated[
        str | None, typer.Option(help="repeat on this interval, e.g. 15m; once if omitted")
    ] = None,
    feeds: Annotated[
        Path | None,
        typer.Option(
            envvar="NEWSFLOW_FEEDS_FILE",
            show_default="examples/feeds.yaml",
            help="feeds list (.yaml or .opml)",
        ),
    ] = None,
    metrics_port: MetricsPortOption = None,
) -> None:
    """Ingest, then a bounded enrich, on a schedule; a failed run is logged and retried next tick."""
    from newsflow.telemetry.endpoint import live_endpoint

    cfg = settings().with_overrides(feeds_file=feeds, **{"metrics.port": metrics_port})
    interval = parse_interval(every) if every else None
    with live_endpoint(cfg, None, lag=True, models=True) as server:
        announce_endpoint(server)
        _run_loop(cfg, interval)


def _run_loop(cfg: Settings, interval: float | None) -> None:
    from connectors.rss.feeds import load_feeds
    from connectors.rss.ingest import Ingestor
    from newsflow.progress import EnrichProgress
    from newsflow.records import new_run_id
    from newsflow.telemetry import instruments, logs

    while True:
        tick = time.monotonic()
        run_id = new_run_id()
        logs.set_run(run_id)
        try:
            with Ingestor(cfg) as ingestor:
                # On a schedule poll only the feeds that are due; a one-off run polls them all.
                summary = ingestor.run_cycle(load_feeds(cfg.feeds_file), force=interval is None)
            console.print(
                f"ingest: {summary.new_articles} new articles from {len(summary.outcomes)} feeds, "
                f"errors: {summary.errors_line}"
            )
            with EnrichProgress(console):
                report = run_enrich_until_signalled(cfg, run_id=run_id, mode="batch")
            _print_enrich(report)
            instruments.succeeded("run")
            if report.stopped:
                return
        except NewsflowError as exc:
            if interval is None:
                raise
            err_console.print(f"[red]run failed:[/] {exc}; retrying at the next tick", highlight=False)
        except Exception as exc:  # a supervisor: log any failure and try again next tick
            if interval is None:
                raise
            logging.getLogger("newsflow.run").exception("run failed; retrying at the next tick")
            err_console.print(f"[red]run failed:[/] {type(exc).__name__}: {exc}", highlight=False)
        if interval is None:
            return
        time.sleep(max(0.0, interval - (time.monotonic() - tick)))


def _print_enrich(report: EnrichReport) -> None:
    if report.skipped:
        offsets = ", ".join(f"p{s.partition}@{s.start}" for s in report.slices)
        console.print(f"nothing new to enrich: the group is caught up ({offsets or 'no partitions'})")
        return
    console.print(
        f"run {report.run_id} ({report.seconds:.1f}s on {report.runner}): {report.summary()}; "
        "offsets committed",
        highlight=False,
    )


@app.command()
def demo() -> None:
    """Offline end-to-end demo on the bundled sample feeds (what `make run` runs)."""
    from newsflow.demo import run_demo
    from newsflow.report.build import build_report

    cfg = settings()
    with console.status("running the demo: broker, feeds, ingest, Beam enrichment..."):
        result = run_demo(cfg)
    _print_demo(cfg, result)
    with console.status("writing the report..."):
        # the sample feeds' articles are weeks old: the demo's report covers all of them
        report_dir = cfg.data_dir / "report"
        written = build_report(cfg, report_dir, since="all")
    console.print(
        f"[bold]report[/]: {written.report.records.count} articles per {written.report.bucket}, "
        f"topics, stance per claim, sources, spikes, feed health: {written.page.resolve().as_uri()}\n"
        f"open it in a browser (e.g. xdg-open {written.page}), or again later with "
        f"newsflow report --output {report_dir} --since all",
        soft_wrap=True,
    )


def _print_demo(cfg: Settings, result: Any) -> None:
    ingest, report = result.ingest, result.enrich
    console.print(
        f"[bold]ingest[/]: {len(ingest.outcomes)} feeds, {ingest.new_articles} new articles, "
        f"{ingest.by_status[FeedStatus.NOT_MODIFIED]} unchanged (304), {ingest.rejected} rejected items, "
        f"errors: {ingest.errors_line}"
    )
    pages = ingest.pages
    if pages:
        kept = sum(v for k, v in pages.items() if k not in ("extracted", "unchanged"))
        console.print(
            f"[bold]full text[/]: {pages['extracted']} article pages fetched and extracted, "
            f"{pages['unchanged']} unchanged, {kept} kept their feed text"
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
    rows: Annotated[int, typer.Option(help="rows the live table keeps (on a terminal)")] = 25,
) -> None:
    """Show records live as a table: time, source, primary topic, stances toward claims, title.

    On a terminal the table redraws in place with the latest rows; piped, each record is one line.
    Dead letters (--topic news.dlq) show their stage, reason and error instead.
    """
    from collections import deque

    from rich.live import Live

    from connectors import kafka as kafka_clients

    cfg = settings()
    name = topic or cfg.topics.enriched
    kafka_clients.require_broker(cfg.kafka)
    consumer = kafka_clients.consumer(
        cfg.kafka, group_id=None, auto_offset_reset="earliest" if from_beginning else "latest"
    )
    consumer.subscribe([name])
    recent: deque[tuple[str, ...]] = deque(maxlen=max(1, rows))
    live = (
        Live(_tail_table(name, recent), console=console, auto_refresh=False) if console.is_terminal else None
    )
    if live is None:
        console.print(_tail_text(TAIL_COLUMNS), markup=False, highlight=False, soft_wrap=True)
    seen = 0
    idle_since = time.monotonic()
    try:
        if live is not None:
            live.start()
        while True:
            batches = consumer.poll(timeout_ms=500)
            if not batches and timeout and time.monotonic() - idle_since > timeout:
                return
            try:
                for records in batches.values():
                    idle_since = time.monotonic()
                    for message in records:
                        row = tail_row(message.value)
                        if live is None:
                            console.print(_tail_text(row), markup=False, highlight=False, soft_wrap=True)
                        else:
                            recent.append(row)
                        seen += 1
                        if max_records and seen >= max_records:
                            return
            finally:
                if live is not None and batches:
                    live.update(_tail_table(name, recent), refresh=True)  # once per poll, not per record
    except KeyboardInterrupt:
        return
    finally:
        if live is not None:
            live.stop()
        consumer.close()


TAIL_COLUMNS = ("time", "source", "topic", "stances", "title")
_TAIL_WIDTHS = (16, 18, 22, 30, 0)


def tail_row(value: bytes | None) -> tuple[str, str, str, str, str]:
    """One Kafka value as the tail's columns: an enriched record, a dead letter, or anything else."""
    import json

    if value is None:
        return ("", "", "", "", "(tombstone)")
    try:
        record = json.loads(value)
    except ValueError:
        return ("", "", "", "", value[:200].decode("utf-8", "replace"))
    if not isinstance(record, dict):
        return ("", "", "", "", str(record)[:200])
    if str(record.get("schema", "")).startswith("newsflow.deadletter."):
        source = record.get("source") or {}
        where = f"{source.get('topic') or ''}[{source.get('partition')}]@{source.get('offset')}"
        return (
            _short_time(record.get("at")),
            where,
            record.get("stage", ""),
            record.get("reason", ""),
            str(record.get("error", ""))[:200],
        )
    article = record.get("article")
    if not isinstance(article, dict):
        return ("", "", "", "", str(record)[:200])
    stances = " ".join(
        f"{s.get('claim_id')}={s.get('label')}"
        for s in record.get("stances") or []
        if isinstance(s, dict) and s.get("label") != "unrelated"
    )
    when = article.get("published_at") or article.get("fetched_at") or record.get("enriched_at")
    return (
        _short_time(when),
        str(article.get("source") or article.get("feed_url") or ""),
        str(record.get("primary_topic", "")),
        stances or "-",
        str(article.get("title") or "").replace("\n", " "),
    )


def _short_time(text: Any) -> str:
    """``2026-11-01T08:30:00Z`` -> ``2026-11-01 08:30`` (anything else unchanged)."""
    if not isinstance(text, str):
        return ""
    return text[:16].replace("T", " ") if len(text) >= 16 and text[10:11] == "T" else text


def _tail_text(row: tuple[str, ...]) -> str:
    cells = [
        f"{cell[:width]:{width}}" if width else cell[:120]
        for cell, width in zip(row, _TAIL_WIDTHS, strict=True)
    ]
    return "  ".join(cells)


def _tail_table(name: str, rows: Any) -> Table:
    table = Table(title=f"{name} (latest {len(rows)})", expand=True)
    for column, width in zip(TAIL_COLUMNS, _TAIL_WIDTHS, strict=True):
        table.add_column(
            column, no_wrap=True, max_width=width or None, overflow="ellipsis", ratio=None if width else 1
        )
    for row in rows:
        table.add_row(*row)
    return table


app.command("report")(report)  # newsflow/cli_report.py


# -- models ------------------------------------------------------------------------------------
train_app = typer.Typer(help="Train the topic head or the stance pair model.", no_args_is_help=True)
predict_app = typer.Typer(help="Label files offline (formats in docs/CLI.md).", no_args_is_help=True)
eval_app = typer.Typer(
    help="Predict and score against gold labels: P/R/F1, confusion PNG.", no_args_is_help=True
)
app.add_typer(train_app, name="train")
app.add_typer(predict_app, name="predict")
app.add_typer(eval_app, name="eval")


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    import json

    try:
        with open(path, encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]
    except FileNotFoundError as exc:
        raise NewsflowError(f"{path} not found") from exc
    except ValueError as exc:
        raise NewsflowError(f"{path} is not JSON Lines: {exc}") from exc


def _write_jsonl(path: Path, lines: list[dict[str, Any]]) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for line in lines:
            fh.write(json.dumps(line, ensure_ascii=False) + "\n")


def _encoder(cfg: Settings) -> Any:
    from models.encoder import Encoder

    m = cfg.models
    return Encoder(
        m.encoder,
        max_tokens=m.max_tokens,
        batch_size=m.batch_size,
        precision=m.precision,
        runtime=m.runtime,
        threads=m.threads,
    )


def _topic_labeller(cfg: Settings) -> Any:
    """The configured topic backend (NEWSFLOW_MODELS_TOPIC_BACKEND) behind the language-aware labeller."""
    from models.taxonomy import load_taxonomy
    from models.topic_labeller import build_topic_labeller

    encoder = _encoder(cfg) if cfg.models.topic_backend == "embedding" else None
    return build_topic_labeller(encoder, load_taxonomy(cfg.taxonomy_file), cfg.models)


@train_app.command("topics")
def train_topics_cmd(
    data: Annotated[Path, typer.Option(help="labelled JSON Lines: id, title, text, label (or labels)")],
    output: Annotated[Path, typer.Option(help="where to write head.json and its model card")] = Path(
        "models/artifacts/topic-head"
    ),
    folds: Annotated[int, typer.Option(help="cross-validation folds")] = 5,
    extra: Annotated[
        list[Path] | None, typer.Option(help="training-only labelled JSON Lines (repeatable)")
    ] = None,
    flood_fnc: Annotated[
        Path | None,
        typer.Option(
            help="FNC-1 train_stances.csv: its off-topic headlines become a flood of unrelated "
            "items, half for training, half to measure the false-positive rate"
        ),
    ] = None,
    flood: Annotated[
        Path | None,
        typer.Option(help="a pool of real feed items (JSON Lines: id, title, text, language, outlet)"),
    ] = None,
    flood_labels: Annotated[
        Path | None,
        typer.Option(
            help="labels for part of --flood (JSON Lines: id, labels, drawn, sure); items in covered "
            "languages train the head (out of fold by outlet), the others measure the anchors"
        ),
    ] = None,
    c: Annotated[float, typer.Option("--c", help="inverse L2 regularisation strength")] = 4.0,
    beta: Annotated[float, typer.Option(help="F-beta for thresholds (<1 favours precision)")] = 0.7,
) -> None:
    """Train the topic head on labelled articles; prints cross-validated metrics."""
    from models.taxonomy import load_taxonomy
    from models.topic_card import write_topic_card
    from models.train_topics import flood_pool_from_fnc, read_flood, read_labelled, train_topics
    from newsflow.progress import StepProgress

    cfg = settings()
    if flood_labels is not None and flood is None:
        raise NewsflowError("--flood-labels needs --flood, the pool its ids come from")
    extra_rows = [row for path in extra or [] for row in read_labelled(path)]
    _, labelled = read_flood(flood, flood_labels) if flood is not None else ([], [])
    # phases, each announced by a line: embedding every view, cross-validated, the labelled flood
    # (a heading and its table), the FNC-1 flood scored
    phases = 2 + (2 if labelled else 0) + (1 if flood_fnc else 0)
    with StepProgress(console, "training the topic head", phases, "phases") as bar:

        def step(message: str) -> None:
            bar.note(message)
            bar.advance()

        encoder = _encoder(cfg)
        taxonomy = load_taxonomy(cfg.taxonomy_file)
        result = train_topics(
            read_labelled(data),
            encoder,
            taxonomy,
            extra=extra_rows,
            flood=flood_pool_from_fnc(flood_fnc) if flood_fnc else (),
            flood_labelled=labelled,
            languages=cfg.models.languages,
            folds=folds,
            c=c,
            beta=beta,
            log_fn=step,
        )
    result.head.save(output / "head.json")
    pool = None
    if flood is not None:  # the new head on the whole pool, as the pipeline labels it: flag rates
        from models.flood_eval import evaluate_flood
        from models.topic_labeller import build_topic_labeller

        models = cfg.models.model_copy(update={"topic_head": str(output / "head.json")})
        with StepProgress(console, "labelling the flood with the new head", None, "items") as bar:
            pool = evaluate_flood(
                build_topic_labeller(encoder, taxonomy, models), flood, flood_labels, on_progress=bar.update
            )
        console.print(pool.format())
    write_topic_card(output, result, data, extra or [], flood_fnc, flood_labels, pool)
    console.print(f"cross-validated, title + short lead (an RSS item):\n{result.cv_short.format()}")
    console.print(f"saved {output / 'head.json'} (thresholds {result.head.thresholds})")


PROGRESS_CHUNK = 256  # articles or pairs per step of predict and eval (each step one progress update)


def _predict_topics(classifier: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """``predict_topics`` in steps of :data:`PROGRESS_CHUNK` articles, with a progress display."""
    from models.train_topics import predict_topics
    from newsflow.progress import StepProgress

    lines: list[dict[str, Any]] = []
    with StepProgress(console, "predicting topics", len(rows), "articles") as bar:
        for start in range(0, len(rows), PROGRESS_CHUNK):
            chunk = rows[start : start + PROGRESS_CHUNK]
            lines.extend(predict_topics(classifier, chunk))
            bar.advance(len(chunk))
    return lines


@predict_app.command("topics")
def predict_topics_cmd(
    input: Annotated[Path, typer.Option("--input", help='JSON Lines {"id","title","text"[,"language"]}')],  # noqa: A002
    output: Annotated[Path, typer.Option("--output", help="JSON Lines predictions")],
) -> None:
    """Topics for each article: primary_topic, assigned topics with scores and evidence, all raw scores,
    and the method that decided them (model, anchors, unsupported_language, no_text).

    Model: NEWSFLOW_MODELS_TOPIC_BACKEND (embedding, zero-shot, classifier), NEWSFLOW_MODELS_TOPIC_MODEL;
    languages it covers: NEWSFLOW_MODELS_LANGUAGES.
    """

    rows = _read_jsonl(input)
    lines = _predict_topics(_topic_labeller(settings()), rows)
    output.parent.mkdir(parents=True, exist_ok=True)
    _write_jsonl(output, lines)
    console.print(f"wrote {len(lines)} predictions to {output}")


@eval_app.command("topics")
def eval_topics_cmd(
    data: Annotated[
        Path | None, typer.Option(help="labelled JSON Lines (id, title, text, label or labels)")
    ] = None,
    flood: Annotated[
        Path | None,
        typer.Option(
            help="an unlabelled pool of feed items (JSON Lines: id, title, text, language): flag rates"
        ),
    ] = None,
    flood_labels: Annotated[
        Path | None, typer.Option(help="labels for part of --flood (id, labels): precision and recall there")
    ] = None,
    sample: Annotated[
        int | None, typer.Option(help="score a seeded random sample of the flood (plus its labelled items)")
    ] = None,
    output_dir: Annotated[
        Path | None, typer.Option(help="predictions, report and PNG; default <data_dir>/eval/topics")
    ] = None,
) -> None:
    """Score the configured topic model: on labelled data (--data: per-class P/R/F1, macro-F1, confusion
    PNG) and on a flood of real feed items (--flood: flag rate per topic and language; with
    --flood-labels, precision and recall on the labelled part).

    Model: NEWSFLOW_MODELS_TOPIC_BACKEND (embedding, zero-shot, classifier), NEWSFLOW_MODELS_TOPIC_MODEL;
    languages it covers: NEWSFLOW_MODELS_LANGUAGES.
    """
    import json

    from models.metrics import classification_report, plot_confusion

    if flood_labels is not None and flood is None:
        raise NewsflowError("--flood-labels needs --flood, the pool its ids come from")
    if data is None and flood is None:
        raise NewsflowError("give --data (labelled articles), --flood (a pool of feed items), or both")
    cfg = settings()
    labeller = _topic_labeller(cfg)
    out = output_dir or cfg.data_dir / "eval" / "topics"
    out.mkdir(parents=True, exist_ok=True)
    model = labeller.lineage["topics"]
    if data is not None:
        rows = _read_jsonl(data)
        lines = _predict_topics(labeller, rows)
        gold = []
        for row, line in zip(rows, lines, strict=True):
            labels = row.get("labels") or [row.get("label")]
            gold.append(line["primary_topic"] if line["primary_topic"] in labels else labels[0])
        report = classification_report(gold, [x["primary_topic"] for x in lines], labeller.labels)
        _write_jsonl(out / "predictions.jsonl", lines)
        (out / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
        png = plot_confusion(
            report.confusion, report.labels, out / "confusion.png", title=f"topics: {data.name}"
        )
        console.print(report.format())
        console.print(
            f"model {model}; macro-F1 {report.macro_f1:.3f} on {report.n} articles; confusion matrix {png}"
        )
        if getattr(labeller.backend, "head", None) is not None and data.resolve().name == "dev.jsonl":
            console.print(
                "[yellow]note:[/] the committed head was trained on dev.jsonl; these are in-sample "
                "figures. Cross-validated ones: 'newsflow train topics --data ...'."
            )
    if flood is not None:
        from models.flood_eval import evaluate_flood
        from newsflow.progress import StepProgress

        with StepProgress(console, "labelling the flood", None, "items") as bar:
            result = evaluate_flood(labeller, flood, flood_labels, sample=sample, on_progress=bar.update)
        _write_jsonl(out / "flood_predictions.jsonl", result.lines)
        (out / "flood_report.json").write_text(json.dumps(result.to_dict(), indent=1))
        console.print(result.format())
        console.print(f"model {model}; flood predictions {out / 'flood_predictions.jsonl'}")


def _stance_model(cfg: Settings) -> Any:
    from models.stance import StanceModel

    m = cfg.models
    return StanceModel(
        _encoder(cfg),
        m.stance_model,
        related_threshold=m.related_threshold,
        precision=m.precision,
        runtime=m.runtime,
        threads=m.threads,
    )


def _predict_stance(cfg: Settings, stances: Path, bodies: Path) -> tuple[list[Any], list[str], Any]:
    from models.fnc import load_pairs

    try:
        pairs = load_pairs(stances, bodies)
    except (OSError, KeyError, ValueError) as exc:
        raise NewsflowError(f"cannot read FNC-1 files {stances}, {bodies}: {exc}") from exc
    from newsflow.progress import StepProgress

    model = _stance_model(cfg)
    labels: list[str] = []
    with StepProgress(console, "labelling stance", len(pairs), "(headline, body) pairs") as bar:
        for start in range(0, len(pairs), PROGRESS_CHUNK):
            chunk = pairs[start : start + PROGRESS_CHUNK]
            labels.extend(label for label, _ in model.predict([(p.headline, p.body) for p in chunk]))
            bar.advance(len(chunk))
    return pairs, labels, model


@train_app.command("stance")
def train_stance_cmd(
    stances: Annotated[Path, typer.Option(help="FNC-1 train_stances.csv")],
    bodies: Annotated[Path, typer.Option(help="FNC-1 train_bodies.csv")],
    output: Annotated[Path, typer.Option(help="artifact directory")] = Path("models/artifacts/stance-minilm"),
    epochs: Annotated[int, typer.Option(help="fine-tuning epochs")] = 2,
    limit: Annotated[int | None, typer.Option(help="a random sample of N pairs (smoke runs)")] = None,
) -> None:
    """Fine-tune the stance cross-encoder on FNC-1 (body-disjoint dev split) and write its model card."""
    from models.train_stance import train_stance
    from newsflow.progress import StepProgress

    with StepProgress(console, "fine-tuning the stance model", None, "steps", min_interval_s=30.0) as bar:
        metrics = train_stance(
            stances, bodies, output, epochs=epochs, limit=limit, log=bar.note, progress=bar.update
        )
    console.print(f"saved {output}: {metrics}")


@predict_app.command("stance")
def predict_stance_cmd(
    stances: Annotated[Path, typer.Option(help="FNC-1 stances CSV: Headline,Body ID[,Stance]")],
    bodies: Annotated[Path, typer.Option(help="FNC-1 bodies CSV: Body ID,articleBody")],
    output: Annotated[Path, typer.Option(help="predictions CSV: Headline,Body ID,Stance")],
) -> None:
    """Stance of each body toward its headline: agree, disagree, discuss or unrelated."""
    from models.fnc import write_predictions

    pairs, labels, _ = _predict_stance(settings(), stances, bodies)
    count = write_predictions(output, pairs, labels)
    console.print(f"wrote {count} predictions to {output}")


@eval_app.command("stance")
def eval_stance_cmd(
    stances: Annotated[Path, typer.Option(help="FNC-1 stances CSV with a Stance column")],
    bodies: Annotated[Path, typer.Option(help="FNC-1 bodies CSV")],
    output_dir: Annotated[
        Path | None, typer.Option(help="predictions, report and PNG; default <data_dir>/eval/stance")
    ] = None,
) -> None:
    """Score the stance model: FNC score, per-class P/R/F1, macro-F1, confusion matrix PNG."""
    import json

    from models.fnc import write_predictions
    from models.metrics import classification_report, fnc_score, plot_confusion
    from newsflow.records import STANCE_LABELS

    cfg = settings()
    pairs, labels, model = _predict_stance(cfg, stances, bodies)
    gold = [p.stance for p in pairs]
    if any(g is None for g in gold):
        raise NewsflowError(
            f"{stances} has rows without a Stance; eval needs gold labels (use predict stance)"
        )
    score, best = fnc_score(gold, labels)
    report = classification_report(gold, labels, list(STANCE_LABELS))
    out = output_dir or cfg.data_dir / "eval" / "stance"
    write_predictions(out / "predictions.csv", pairs, labels)
    summary = {
        **report.to_dict(),
        "fnc_score": score,
        "fnc_max": best,
        "fnc_relative": score / best if best else 0,
    }
    summary["model"] = model.lineage
    (out / "report.json").write_text(json.dumps(summary, indent=1))
    png = plot_confusion(
        report.confusion, report.labels, out / "confusion.png", title=f"stance: {stances.name}"
    )
    console.print(report.format())
    console.print(
        f"FNC score {score:.2f} of {best:.2f} ({score / best:.1%}); macro-F1 {report.macro_f1:.3f}; "
        f"model {model.lineage}; confusion matrix {png}"
    )


@app.command("config")
def show_config() -> None:
    """Print the effective settings and the environment variable for each (secrets hidden)."""
    for env, value, meaning in describe(settings()):
        comment = f"  [dim]# {meaning}[/]" if meaning else ""
        console.print(f"{env}={value}{comment}", highlight=False, soft_wrap=True)


def main() -> None:
    code: int | str | None = 0
    try:
        app()
    except NewsflowError as exc:
        err_console.print(f"[red]error:[/] {scrub.scrub(str(exc))}", highlight=False)
        code = 2
    except KeyboardInterrupt:
        code = 130
    except SystemExit as exc:
        code = exc.code
    if _State.ran_pipeline:
        # A pipeline run is over (committed, or failed with nothing more to commit): exit now. A run
        # that failed can leave client threads behind (a consumer retrying a dead broker) that would
        # hold the interpreter's exit for minutes.
        sys.stdout.flush()
        sys.stderr.flush()
        logging.shutdown()
        os._exit(code if isinstance(code, int) else 1)
    sys.exit(code)
