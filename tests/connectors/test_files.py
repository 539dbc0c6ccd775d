"""The file sink in memory: layout, atomic writes, and exactly one row per id across replays."""

import json
import os
import subprocess
import sys

import apache_beam as beam
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline

from connectors import files
from connectors.files import (
    PARQUET_SCHEMA,
    EnrichedRow,
    WriteFiles,
    _WriteFilesFn,
    parse_part_name,
    part_files,
    partition_date,
    read_jsonl,
    read_parquet,
    remove_stale_tmp,
)
from newsflow.records import (
    Article,
    Enriched,
    HeadlineStance,
    StanceResult,
    TopicScore,
    content_hash,
    encode,
)

TOPIC = "news.raw"


def enriched(i, run_id="run-1", published="2026-11-02T10:00:00Z", title=None, fetched="2026-11-01T00:00:00Z"):
    title = title if title is not None else f"Story {i}"
    return Enriched(
        article=Article(
            id=f"{i:032x}",
            feed_url="http://feeds.test/a.rss",
            source="Test",
            title=title,
            summary="Body",
            published_at=published,
            fetched_at=fetched,
            content_hash=content_hash(title),
        ),
        topics=[TopicScore(label="other", score=0.9)],
        primary_topic="other",
        scores={"other": 0.9, "syria_conflict": 0.1},
        stances=[StanceResult(claim_id="c1", claim="A claim", label="unrelated", score=0.8)],
        headline_stance=HeadlineStance(label="agree", score=0.7),
        model={"encoder": "minilm", "topics": "head@1"},
        enriched_at="2026-11-03T00:00:00Z",
        run_id=run_id,
    )


def row(i, offset=None, partition=0, **kwargs):
    record = enriched(i, **kwargs)
    return EnrichedRow(TOPIC, partition, i if offset is None else offset, record, encode(record))


def write_bundles(directory, bundles, formats=("jsonl", "parquet")):
    """Run the sink's DoFn through its lifecycle, one bundle per list of rows."""
    fn = _WriteFilesFn(str(directory), formats)
    fn.setup()
    for bundle in bundles:
        fn.start_bundle()
        for r in bundle:
            fn.process(r)
        fn.finish_bundle()
    fn.teardown()


def ids_in(directory):
    jsonl = sorted(x["article"]["id"] for x in read_jsonl(directory))
    parquet = sorted(read_parquet(directory).column("id").to_pylist())
    assert jsonl == parquet
    return jsonl


def test_one_file_per_partition_date_and_format_named_by_offsets(tmp_path):
    rows = [row(i, partition=i % 2) for i in range(6)] + [row(9, published=None)]
    with TestPipeline(runner="FnApiRunner") as p:
        p | beam.Create(rows) | WriteFiles(tmp_path)
    names = {str(p.relative_to(tmp_path)) for p in part_files(tmp_path)}
    assert names == {
        f"dt={day}/part-news.raw-{partition}-{first:012d}-{last:012d}.{ext}"
        for day, partition, first, last in [
            ("2026-11-02", 0, 0, 9),
            ("2026-11-01", 0, 0, 9),  # no published date: the fetched date
            ("2026-11-02", 1, 1, 5),
        ]
        for ext in ("jsonl", "parquet")
    }
    assert ids_in(tmp_path) == sorted(r.id for r in rows)
    # JSON Lines hold exactly the validated bytes; no temporary file is left behind.
    lines = [line for f in part_files(tmp_path, "jsonl") for line in f.read_bytes().splitlines()]
    assert sorted(lines) == sorted(r.payload for r in rows)
    assert not list(tmp_path.rglob(".*.tmp"))


def test_parquet_rows_are_the_record_flattened(tmp_path):
    r = row(3, offset=42, partition=1)
    write_bundles(tmp_path, [[r]], formats=("parquet",))
    (path,) = part_files(tmp_path)
    table = pq.read_table(path)
    assert table.schema.equals(PARQUET_SCHEMA)
    got = table.to_pylist()[0]
    assert got["id"] == r.id and got["primary_topic"] == "other"
    assert got["topics"] == [{"label": "other", "score": 0.9}]
    assert got["stances"][0]["claim_id"] == "c1" and got["headline_stance_label"] == "agree"
    assert dict(got["model"]) == r.record.model and dict(got["scores"])["other"] == 0.9
    assert got["published_at"].isoformat() == "2026-11-02T10:00:00+00:00"
    assert (got["kafka_topic"], got["kafka_partition"], got["kafka_offset"]) == (TOPIC, 1, 42)
    assert not list(tmp_path.rglob("*.jsonl"))


def test_a_bundle_read_again_replaces_its_own_files(tmp_path):
    bundle = [row(i) for i in range(10)]
    write_bundles(tmp_path, [bundle])
    before = sorted(p.name for p in part_files(tmp_path))
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(10)]])
    assert sorted(p.name for p in part_files(tmp_path)) == before
    assert ids_in(tmp_path) == sorted(r.id for r in bundle)
    assert {x["run_id"] for x in read_jsonl(tmp_path)} == {"run-2"}


def test_a_replay_with_other_bundle_boundaries_supersedes_the_earlier_files(tmp_path):
    # The first attempt wrote three bundles (the last one uncommitted when it was killed) ...
    write_bundles(tmp_path, [[row(i) for i in range(a, a + 10)] for a in (0, 10, 20)])
    # ... the restart (or a --from-beginning re-score) reads with other bundle boundaries.
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(a, a + 15)] for a in (0, 15)])
    assert ids_in(tmp_path) == [f"{i:032x}" for i in range(30)]
    assert {x["run_id"] for x in read_jsonl(tmp_path)} == {"run-2"}
    ranges = sorted((n.first, n.last) for n in map(parse_part_name, (p.name for p in part_files(tmp_path))))
    assert ranges == [(0, 14), (0, 14), (15, 29), (15, 29)]


def test_a_replay_from_inside_a_file_trims_the_older_file(tmp_path):
    write_bundles(tmp_path, [[row(i) for i in range(10)]])
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(5, 15)]])  # e.g. --offset 0=5
    assert ids_in(tmp_path) == [f"{i:032x}" for i in range(15)]
    runs = {x["article"]["id"]: x["run_id"] for x in read_jsonl(tmp_path)}
    assert [runs[f"{i:032x}"] for i in range(15)] == ["run-1"] * 5 + ["run-2"] * 10


def test_a_replay_that_stops_inside_an_older_uncommitted_file_trims_it(tmp_path):
    write_bundles(tmp_path, [[row(i) for i in range(20, 36)]])  # uncommitted attempt: 20..35
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(20, 30)]])  # restart, bundle 20..29
    assert ids_in(tmp_path) == [f"{i:032x}" for i in range(20, 36)]
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(30, 40)]])  # next bundle: 30..39
    assert ids_in(tmp_path) == [f"{i:032x}" for i in range(20, 40)]
    assert {x["run_id"] for x in read_jsonl(tmp_path)} == {"run-2"}
    assert all(parse_part_name(p.name).first >= 20 for p in part_files(tmp_path))


def test_an_id_twice_in_one_bundle_keeps_the_record_from_the_highest_offset(tmp_path):
    write_bundles(
        tmp_path, [[row(1, offset=0, title="old"), row(2, offset=1), row(1, offset=2, title="new")]]
    )
    records = read_jsonl(tmp_path)
    assert sorted(x["article"]["id"] for x in records) == [f"{1:032x}", f"{2:032x}"]
    assert {x["article"]["title"] for x in records} == {"new", "Story 2"}
    assert ids_in(tmp_path) == [f"{1:032x}", f"{2:032x}"]


def test_a_failed_bundle_leaves_no_file(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "JSONL_CHUNK_BYTES", 1)  # write through to the temporary files
    monkeypatch.setattr(files, "PARQUET_ROW_GROUP", 1)
    fn = _WriteFilesFn(str(tmp_path), ("jsonl", "parquet"))
    fn.setup()
    fn.start_bundle()
    for i in range(3):
        fn.process(row(i))
    assert len(list(tmp_path.rglob(".*.tmp"))) == 2 and not part_files(tmp_path)
    fn.teardown()  # the runner gives up on the bundle: no finish_bundle
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]


def test_large_bundles_write_in_chunks_and_row_groups(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "JSONL_CHUNK_BYTES", 2_000)
    monkeypatch.setattr(files, "PARQUET_ROW_GROUP", 4)
    write_bundles(tmp_path, [[row(i) for i in range(10)]])
    assert ids_in(tmp_path) == [f"{i:032x}" for i in range(10)]
    (parquet,) = part_files(tmp_path, "parquet")
    assert pq.ParquetFile(parquet).num_row_groups == 3


def test_temporary_files_of_dead_processes_are_removed_at_start(tmp_path):
    folder = tmp_path / "dt=2026-11-02"
    folder.mkdir()
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    )
    stale = folder / f".part-news.raw-0-000000000000-000000000000.jsonl.ab12cd34.{dead.stdout.strip()}.tmp"
    live = folder / f".part-news.raw-1-000000000000-000000000000.jsonl.ab12cd34.{os.getpid()}.tmp"
    stale.write_text("partial")
    live.write_text("being written")
    assert remove_stale_tmp(tmp_path) == [stale]
    assert live.exists() and not stale.exists()


def test_partition_date_is_the_published_date_then_the_fetched_date():
    assert partition_date(enriched(1, published="2026-10-30T23:30:00-02:00")) == "2026-10-31"
    assert partition_date(enriched(1, published=None)) == "2026-11-01"
    assert partition_date(enriched(1, published="not a date")) == "2026-11-01"
    assert partition_date(enriched(1, published=None, fetched="??")) == "2026-11-03"


def test_part_names_round_trip_with_dashes_in_the_topic():
    name = parse_part_name("part-news.feed-health-2-3-000000000000-000000000017.parquet")
    assert name == ("news.feed-health-2", 3, 0, 17, "parquet")
    assert parse_part_name("notes.txt") is None


def test_unknown_formats_are_refused():
    with pytest.raises(Exception, match="jsonl and/or parquet"):
        _WriteFilesFn("/tmp/x", ("csv",))


def test_records_in_files_are_the_exact_json_of_the_record(tmp_path):
    r = row(7, title="\x00 control \x1b")
    write_bundles(tmp_path, [[r]])
    (line,) = read_jsonl(tmp_path)
    assert Enriched.model_validate(line) == r.record
    assert json.loads(r.payload) == line
