"""PostgreSQL sink: enriched records upserted by article id (psycopg 3).

Enabled by setting ``NEWSFLOW_SINKS_POSTGRES_DSN`` (a secret: it never prints; errors name only
host, port, database and user). The table (``NEWSFLOW_SINKS_POSTGRES_TABLE``, default
``enriched_articles``) is created if missing::

    id text PRIMARY KEY, primary_topic text, topics jsonb, stances jsonb, headline_stance jsonb,
    model jsonb, run_id text, enriched_at timestamptz, published_at timestamptz, title text, url text,
    source text, language text, record jsonb

:class:`WriteToPostgres` opens one connection per DoFn instance in ``setup``, collects a bundle's rows
(one per id: the record from the highest offset), upserts them with
``INSERT … ON CONFLICT (id) DO UPDATE`` in batches and commits in ``finish_bundle``, i.e. before the
reader commits the bundle's Kafka offsets. A failed commit fails the bundle, so its offsets stay
uncommitted and a restart writes the same rows again; the upsert makes that harmless. A row the
database refuses for a reason of its own (a ``DataError`` or ``IntegrityError``) does not fail the
bundle: the bundle is upserted again row by row (a savepoint each), the refused rows come out as
:class:`~connectors.files.SinkRejection` (the pipeline dead-letters them) and the rest is
committed. ``record`` is the full ``newsflow.enriched.v2`` document. PostgreSQL cannot store the
NUL character in ``text`` or ``jsonb``; it becomes U+FFFD there (the Kafka and file sinks keep it).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, suppress
from typing import Any

import apache_beam as beam
import psycopg
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue
from psycopg import sql
from psycopg.types.json import Jsonb
from pydantic import SecretStr

from connectors.files import EnrichedRow, SinkRejection, parse_time
from newsflow import scrub
from newsflow.errors import PipelineError

log = logging.getLogger(__name__)

COLUMNS: tuple[tuple[str, str], ...] = (
    ("id", "text PRIMARY KEY"),
    ("primary_topic", "text NOT NULL"),
    ("topics", "jsonb NOT NULL"),
    ("stances", "jsonb NOT NULL"),
    ("headline_stance", "jsonb"),
    ("model", "jsonb NOT NULL"),
    ("run_id", "text NOT NULL"),
    ("enriched_at", "timestamptz"),
    ("published_at", "timestamptz"),
    ("title", "text"),
    ("url", "text"),
    ("source", "text"),
    ("language", "text"),
    ("record", "jsonb NOT NULL"),
)
CONNECT_TIMEOUT_S = 10


def describe_dsn(dsn: str) -> str:
    """``user@host:port/dbname`` of a connection string, without the password."""
    try:
        parts = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "an unreadable connection string"
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    user = f"{parts['user']}@" if parts.get("user") else ""
    return f"{user}{host}:{parts.get('port') or 5432}/{parts.get('dbname') or ''}"


def _identifier(table: str) -> sql.Identifier:
    return sql.Identifier(*table.split("."))


def _secret(dsn: SecretStr | str) -> str:
    """The connection string, its secrets registered with the scrubber (they never print)."""
    secret = dsn.get_secret_value() if isinstance(dsn, SecretStr) else dsn
    scrub.register(*scrub.dsn_secrets(secret))
    return secret


def _detail(exc: BaseException, dsn: str) -> str:
    """A library error's text, scrubbed of the DSN's secrets (libpq quotes what it cannot parse)."""
    text = str(exc).strip()
    return scrub.scrub(
        f"{type(exc).__name__}: {text}" if text else type(exc).__name__, scrub.dsn_secrets(dsn)
    )


def connect(dsn: SecretStr | str) -> psycopg.Connection[Any]:
    """A connection (autocommit off), or a :class:`PipelineError` that says what to check."""
    secret = _secret(dsn)
    try:
        return psycopg.connect(secret, connect_timeout=CONNECT_TIMEOUT_S, application_name="newsflow")
    except psycopg.Error as exc:
        detail = _detail(exc, secret).splitlines()[-1]
        # from None: the library's exception, which may quote the password, stays out of tracebacks
        raise PipelineError(
            f"cannot connect to PostgreSQL at {describe_dsn(secret)} ({detail}); check that the server "
            "runs and NEWSFLOW_SINKS_POSTGRES_DSN, or unset it to disable the PostgreSQL sink"
        ) from None


def create_table_sql(table: str) -> sql.Composed:
    columns = sql.SQL(", ").join(
        sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(kind)) for name, kind in COLUMNS
    )
    return sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(_identifier(table), columns)


def upsert_sql(table: str) -> sql.Composed:
    names = [name for name, _ in COLUMNS]
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names if n != "id"
    )
    return sql.SQL("INSERT INTO {} ({}) VALUES ({}) ON CONFLICT (id) DO UPDATE SET {}").format(
        _identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, names)),
        sql.SQL(", ").join(sql.Placeholder() * len(names)),
        updates,
    )


def ensure_table(conn: psycopg.Connection[Any], table: str) -> None:
    """Create the table (and its topic index) if missing; safe when several workers race to do it."""
    with conn.transaction(), conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"newsflow:{table}",))
        cur.execute(create_table_sql(table))
        index = sql.Identifier(f"{table.split('.')[-1]}_primary_topic_idx")
        cur.execute(
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (primary_topic)").format(index, _identifier(table))
        )


def check(dsn: SecretStr | str, table: str) -> None:
    """Connect and create the table: run once before a pipeline starts, so a bad DSN fails fast."""
    with connect(dsn) as conn, _errors(dsn, table, "create the table"):
        ensure_table(conn, table)


@contextmanager
def _errors(dsn: SecretStr | str, table: str, action: str) -> Iterator[None]:
    try:
        yield
    except psycopg.Error as exc:
        secret = _secret(dsn)
        raise PipelineError(
            f"PostgreSQL at {describe_dsn(secret)} could not {action} on table {table}: "
            f"{_detail(exc, secret)[:500]}"
        ) from None


def _no_nul(value: Any) -> Any:
    """``value`` with NUL characters in strings replaced (PostgreSQL text and jsonb reject them)."""
    if isinstance(value, str):
        return value.replace("\x00", "\ufffd")
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    if isinstance(value, dict):
        return {_no_nul(k): _no_nul(v) for k, v in value.items()}
    return value


def row_values(row: EnrichedRow) -> tuple[Any, ...]:
    """The column values of one enriched record, in :data:`COLUMNS` order."""
    record, article = row.record, row.record.article
    document = json.loads(row.payload)
    if b"\\u0000" in row.payload:
        document = _no_nul(document)
    headline = document["headline_stance"]
    values = (
        article.id,
        record.primary_topic,
        Jsonb(document["topics"]),
        Jsonb(document["stances"]),
        Jsonb(headline) if headline is not None else None,
        Jsonb(document["model"]),
        record.run_id,
        parse_time(record.enriched_at),
        parse_time(article.published_at),
        article.title,
        article.url,
        article.source,
        article.language,
        Jsonb(document),
    )
    return tuple(_no_nul(v) if isinstance(v, str) else v for v in values)


class _UpsertFn(beam.DoFn):
    def __init__(self, dsn: SecretStr, table: str, batch_rows: int) -> None:
        self.dsn = dsn
        self.table = table
        self.batch_rows = batch_rows
        self._conn: psycopg.Connection[Any] | None = None
        self._rows: dict[str, tuple[int, EnrichedRow]] = {}

    def setup(self) -> None:
        self.written = Metrics.counter("newsflow", "written.postgres")
        self._statement = upsert_sql(self.table)
        self._connect()

    def _connect(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self.dsn)
            with _errors(self.dsn, self.table, "create the table"):
                ensure_table(self._conn, self.table)
        return self._conn

    def start_bundle(self) -> None:
        self._rows = {}
        self._received = 0

    def process(self, row: EnrichedRow) -> None:
        self._received += 1
        held = self._rows.get(row.id)
        if held is None or row.offset >= held[0]:
            self._rows[row.id] = (row.offset, row)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        if not self._rows:
            return
        held = [row for _, row in self._rows.values()]
        self._rows = {}
        conn = self._connect()
        refused: list[SinkRejection] = []
        try:
            with _errors(self.dsn, self.table, f"upsert {len(held)} rows"):
                try:
                    upsert(conn, self._statement, [row_values(row) for row in held], self.batch_rows)
                except RECORD_ERRORS:
                    conn.rollback()
                    refused = upsert_each(conn, self._statement, held)
        except PipelineError:
            with suppress(psycopg.Error):
                conn.rollback()
            if conn.closed or conn.broken:
                self._conn = None  # reconnect for the next bundle
            raise
        self.written.inc(self._received - len(refused))
        for rejection in refused:
            log.warning("PostgreSQL refused %s: %s", rejection.row.id, rejection.error)
            yield WindowedValue(rejection, MIN_TIMESTAMP, (GlobalWindow(),))

    def teardown(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


#: Errors that are one row's own fault (a value the column rejects): that row is refused, not the bundle.
RECORD_ERRORS = (psycopg.DataError, psycopg.IntegrityError)


def upsert_each(
    conn: psycopg.Connection[Any], statement: sql.Composed, rows: Sequence[EnrichedRow]
) -> list[SinkRejection]:
    """Upsert rows one by one (a savepoint each) and commit; returns the rows PostgreSQL refused."""
    refused = []
    with conn.cursor() as cur:
        for row in rows:
            try:
                with conn.transaction():
                    cur.execute(statement, row_values(row))
            except RECORD_ERRORS as exc:
                refused.append(
                    SinkRejection(row, "invalid_value", f"{type(exc).__name__}: {str(exc).strip()}")
                )
    conn.commit()
    return refused


def upsert(
    conn: psycopg.Connection[Any], statement: sql.Composed, rows: Sequence[tuple[Any, ...]], batch_rows: int
) -> None:
    """Upsert ``rows`` in batches of ``batch_rows`` and commit once (all or nothing)."""
    with conn.cursor() as cur:
        for start in range(0, len(rows), batch_rows):
            cur.executemany(statement, rows[start : start + batch_rows])
    conn.commit()


class WriteToPostgres(beam.PTransform):
    """Upsert :class:`~connectors.files.EnrichedRow` elements into ``table`` by article id."""

    def __init__(self, dsn: SecretStr, table: str = "enriched_articles", batch_rows: int = 500) -> None:
        super().__init__()
        self.dsn = dsn
        self.table = table
        self.batch_rows = batch_rows

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        """The output is the :class:`~connectors.files.SinkRejection` of every row PostgreSQL refused."""
        return pcoll | "Upsert" >> beam.ParDo(_UpsertFn(self.dsn, self.table, self.batch_rows))
