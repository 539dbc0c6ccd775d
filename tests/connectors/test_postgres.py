"""The PostgreSQL sink against a real server (Debian's PostgreSQL, started by tests/fixtures_pg.py)."""

import apache_beam as beam
import pytest
from apache_beam.testing.test_pipeline import TestPipeline
from apache_beam.testing.util import assert_that, equal_to
from pydantic import SecretStr

psycopg = pytest.importorskip(
    "psycopg", reason="psycopg 3 is not installed; pip install 'psycopg[binary]>=3.1'"
)

from connectors import postgres  # noqa: E402 - needs psycopg
from connectors.files import EnrichedRow  # noqa: E402
from newsflow.errors import PipelineError  # noqa: E402
from newsflow.records import Enriched, encode  # noqa: E402
from tests.connectors.test_files import enriched, row  # noqa: E402

SPEC_COLUMNS = {
    "id": "text",
    "primary_topic": "text",
    "topics": "jsonb",
    "stances": "jsonb",
    "headline_stance": "jsonb",
    "model": "jsonb",
    "run_id": "text",
    "enriched_at": "timestamp with time zone",
    "published_at": "timestamp with time zone",
    "title": "text",
    "url": "text",
    "source": "text",
    "language": "text",
    "record": "jsonb",
}


@pytest.fixture
def table(unique):
    return f"enriched_{unique}"


def _write(dsn, table, rows, batch_rows=500):
    with TestPipeline(runner="FnApiRunner") as p:
        p | beam.Create(rows) | postgres.WriteToPostgres(SecretStr(dsn), table, batch_rows)


def _rows(dsn, table):
    with psycopg.connect(dsn) as conn:
        return {
            r[0]: r[1:]
            for r in conn.execute(
                f"SELECT id, run_id, title, record, headline_stance FROM {table}"
            ).fetchall()
        }


@pytest.mark.integration
def test_check_creates_the_table_as_specified_and_is_idempotent(postgres_dsn, table):
    postgres.check(SecretStr(postgres_dsn), table)
    postgres.check(postgres_dsn, table)  # already there: nothing to do
    with psycopg.connect(postgres_dsn) as conn:
        columns = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s",
                (table,),
            ).fetchall()
        )
        key = conn.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = %s::regclass AND i.indisprimary",
            (table,),
        ).fetchall()
    assert columns == SPEC_COLUMNS
    assert key == [("id",)]


@pytest.mark.integration
def test_upserts_one_row_per_id_and_a_replay_updates_it(postgres_dsn, table):
    _write(postgres_dsn, table, [row(i) for i in range(5)], batch_rows=2)
    first = _rows(postgres_dsn, table)
    assert sorted(first) == [f"{i:032x}" for i in range(5)]
    assert {v[0] for v in first.values()} == {"run-1"}

    _write(postgres_dsn, table, [row(i, run_id="run-2") for i in range(3, 8)])
    second = _rows(postgres_dsn, table)
    assert sorted(second) == [f"{i:032x}" for i in range(8)]
    assert [second[f"{i:032x}"][0] for i in range(8)] == ["run-1"] * 3 + ["run-2"] * 5
    record = second[f"{4:032x}"][2]
    assert Enriched.model_validate(record) == enriched(4, run_id="run-2")
    assert second[f"{4:032x}"][3] == {"label": "agree", "score": 0.7}


@pytest.mark.integration
def test_an_id_twice_in_a_bundle_keeps_the_highest_offset(postgres_dsn, table):
    _write(postgres_dsn, table, [row(1, offset=5, title="new"), row(1, offset=2, title="old"), row(2)])
    got = _rows(postgres_dsn, table)
    assert sorted(got) == [f"{1:032x}", f"{2:032x}"]
    assert got[f"{1:032x}"][1] == "new"


@pytest.mark.integration
def test_nul_characters_are_stored_as_replacement_characters(postgres_dsn, table):
    record = enriched(9, title="\x00 control \x1b characters")
    _write(postgres_dsn, table, [EnrichedRow("news.raw", 0, 9, record, encode(record))])
    (values,) = _rows(postgres_dsn, table).values()
    assert values[1] == "\ufffd control \x1b characters"
    assert values[2]["article"]["title"] == "\ufffd control \x1b characters"


@pytest.mark.integration
def test_a_row_the_database_refuses_is_an_output_and_the_others_are_committed(postgres_dsn, table):
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(postgres.create_table_sql(table))
        conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT short_title CHECK (length(title) < 10)")
    rows = [row(i) for i in range(3)] + [row(3, title="a title that is far too long")]
    with TestPipeline(runner="FnApiRunner") as p:
        refused = p | beam.Create(rows) | postgres.WriteToPostgres(SecretStr(postgres_dsn), table, 2)
        assert_that(
            refused | beam.Map(lambda r: (r.row.id, r.reason, "short_title" in r.error)),
            equal_to([(rows[3].id, "invalid_value", True)]),
        )
    assert sorted(_rows(postgres_dsn, table)) == sorted(r.id for r in rows[:3])


@pytest.mark.integration
def test_a_failure_that_is_not_a_rows_fault_fails_the_bundle(postgres_dsn, table):
    """Not a row's fault (the table is gone): the bundle fails, so its offsets are not committed."""
    postgres.check(postgres_dsn, table)
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f"DROP TABLE {table}")
    fn = postgres._UpsertFn(SecretStr(postgres_dsn), table, 500)
    fn.setup()
    with psycopg.connect(postgres_dsn) as conn:
        conn.execute(f"DROP TABLE {table}")  # setup created it again; drop it under the open connection
    fn.start_bundle()
    fn.process(row(1))
    with pytest.raises(PipelineError, match="could not upsert 1 rows"):
        list(fn.finish_bundle())
    fn.teardown()


def test_connection_errors_name_the_server_but_never_the_password():
    from newsflow.broker import free_port

    dsn = f"postgresql://writer:s3cret-pw@127.0.0.1:{free_port()}/news"
    with pytest.raises(PipelineError) as err:
        postgres.check(SecretStr(dsn), "enriched_articles")
    message = str(err.value)
    assert "writer@127.0.0.1:" in message and "/news" in message
    assert "NEWSFLOW_SINKS_POSTGRES_DSN" in message
    assert "s3cret" not in message


def test_a_dsn_libpq_cannot_parse_never_shows_its_password():
    """libpq quotes an invalid percent-encoded password in its error (issue 11, item 8)."""
    dsn = "postgresql://writer:p%zzs3cret@127.0.0.1:5432/news"
    with pytest.raises(PipelineError) as err:
        postgres.connect(SecretStr(dsn))
    assert "s3cret" not in str(err.value) and "invalid percent-encoded token" in str(err.value)
    assert err.value.__cause__ is None and err.value.__suppress_context__  # no chained libpq text
