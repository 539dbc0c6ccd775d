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
    """Run the sink's DoFn through its lifecycle, one bundle per list of rows; returns what it refused."""
    fn = _WriteFilesFn(str(directory), formats)
    fn.setup()
    refused = []
    for bundle in bundles:
        fn.start_bundle()
        for r in bundle:
            fn.process(r)
        refused += [w.value for w in fn.finish_bundle()]
    fn.teardown()
    return refused


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
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.name != files.INDEX_NAME]


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


# -- an article edited by its publisher: the same id again at a later offset -----------------------
def titles_in(directory):
    """id -> title from JSON Lines and from Parquet (which must agree), each id at most once."""
    jsonl = {x["article"]["id"]: x["article"]["title"] for x in read_jsonl(directory)}
    parquet = read_parquet(directory)
    assert sorted(parquet.column("id").to_pylist()) == sorted(jsonl) == ids_in(directory)
    assert (
        dict(zip(parquet.column("id").to_pylist(), parquet.column("title").to_pylist(), strict=True)) == jsonl
    )
    return jsonl


def test_an_edited_article_at_a_later_offset_replaces_its_older_copy(tmp_path):
    write_bundles(tmp_path, [[row(i) for i in range(10)]])
    # The publisher edited story 3 (and gave it a publication date: another dt= folder) and story 5.
    edits = [
        row(3, offset=50, title="Story 3, corrected", published="2026-11-05T08:00:00Z"),
        row(5, offset=51),
    ]
    write_bundles(tmp_path, [[row(i) for i in range(40, 45)] + edits])
    titles = titles_in(tmp_path)
    assert len(titles) == 15 and titles[f"{3:032x}"] == "Story 3, corrected"
    (old_jsonl,) = [p for p in part_files(tmp_path, "jsonl") if parse_part_name(p.name).first == 0]
    assert len(old_jsonl.read_bytes().splitlines()) == 8  # rewritten without stories 3 and 5
    kept = read_parquet(tmp_path).to_pylist()
    assert {r["id"]: r["kafka_offset"] for r in kept}[f"{3:032x}"] == 50

    # Re-running the same offsets changes nothing; replaying the older offsets keeps the edit.
    before = sorted(p.name for p in part_files(tmp_path))
    write_bundles(tmp_path, [[row(i) for i in range(40, 45)] + edits])
    assert sorted(p.name for p in part_files(tmp_path)) == before and titles_in(tmp_path) == titles
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(10)]])  # e.g. --from-beginning
    assert titles_in(tmp_path) == titles
    runs = {x["article"]["id"]: x["run_id"] for x in read_jsonl(tmp_path)}
    assert runs[f"{3:032x}"] == "run-1" and runs[f"{4:032x}"] == "run-2"


def test_a_replay_that_overlaps_a_file_holding_a_later_version_keeps_that_version(tmp_path):
    # Offsets 0-4, then 5-9 with story 3 edited at offset 15, in one bundle: the file spans 5..15.
    write_bundles(
        tmp_path,
        [[row(i) for i in range(5)], [row(i) for i in range(5, 10)] + [row(3, offset=15, title="edited")]],
    )
    write_bundles(tmp_path, [[row(i, run_id="run-2") for i in range(10)]])  # a replay of 0..9
    titles = titles_in(tmp_path)
    assert titles[f"{3:032x}"] == "edited" and len(titles) == 10
    runs = {x["article"]["id"]: x["run_id"] for x in read_jsonl(tmp_path)}
    assert runs[f"{3:032x}"] == "run-1" and {runs[f"{i:032x}"] for i in range(10) if i != 3} == {"run-2"}


def test_an_id_that_moved_partition_keeps_the_copy_from_the_higher_partition_and_offset(tmp_path):
    write_bundles(tmp_path, [[row(1, offset=100, partition=0, title="before")]])
    write_bundles(tmp_path, [[row(1, offset=2, partition=3, title="after")]])  # more partitions now
    assert titles_in(tmp_path) == {f"{1:032x}": "after"}
    write_bundles(tmp_path, [[row(1, offset=100, partition=0, title="before", run_id="run-2")]])  # replay
    assert titles_in(tmp_path) == {f"{1:032x}": "after"}


def test_bundles_consult_the_index_instead_of_reading_every_file(tmp_path, monkeypatch):
    write_bundles(tmp_path, [[row(i) for i in range(a, a + 5)] for a in range(0, 50, 5)])
    reads = []
    original = files.file_rows
    monkeypatch.setattr(files, "file_rows", lambda path: reads.append(path) or original(path))
    write_bundles(tmp_path, [[row(7, offset=60, title="edited")]])
    assert reads == []  # the index was up to date: no file read when the sink started or wrote
    assert titles_in(tmp_path)[f"{7:032x}"] == "edited" and len(titles_in(tmp_path)) == 50


def test_a_lost_or_stale_index_is_rebuilt_from_the_files(tmp_path):
    write_bundles(tmp_path, [[row(i) for i in range(10)]])
    index = tmp_path / files.INDEX_NAME
    index.unlink()  # lost
    write_bundles(tmp_path, [[row(2, offset=20, title="edited")]])
    assert titles_in(tmp_path)[f"{2:032x}"] == "edited" and len(titles_in(tmp_path)) == 10

    saved = index.read_bytes()
    write_bundles(tmp_path, [[row(4, offset=30, title="edited too")]])
    index.write_bytes(saved)  # an index from before the last bundle: it trimmed a file and added one
    write_bundles(tmp_path, [[row(6, offset=40, title="and this")]])
    titles = titles_in(tmp_path)
    assert [titles[f"{i:032x}"] for i in (2, 4, 6)] == ["edited", "edited too", "and this"]

    index.write_bytes(b"not a database")  # unreadable
    write_bundles(tmp_path, [[row(8, offset=50, title="last edit")]])
    assert titles_in(tmp_path)[f"{8:032x}"] == "last edit" and len(titles_in(tmp_path)) == 10


KILL_MID_BUNDLE = """
import os, signal, sys
sys.path[:0] = [{root!r}]
from connectors import files
from tests.connectors.test_files import row, write_bundles

def killed(*args, **kwargs):  # the new files are in place; the older copy is not trimmed yet
    os.kill(os.getpid(), signal.SIGKILL)

files._WriteFilesFn._supersede_ids = killed
write_bundles({directory!r}, [[row(3, offset=50, title="edited")]])
"""


def test_kill_minus_nine_between_writing_and_superseding_leaves_each_id_once_after_a_restart(tmp_path):
    from newsflow.config import REPO_ROOT

    write_bundles(tmp_path, [[row(i) for i in range(10)]])
    script = KILL_MID_BUNDLE.format(root=str(REPO_ROOT), directory=str(tmp_path))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == -9, done.stderr[-2000:]
    assert len(read_jsonl(tmp_path)) == 11  # both versions of story 3 are on disk for now
    write_bundles(tmp_path, [])  # the restart: the sink starts (its offsets were not committed)
    assert titles_in(tmp_path)[f"{3:032x}"] == "edited" and len(titles_in(tmp_path)) == 10


def test_a_row_parquet_cannot_hold_is_refused_by_every_format_and_the_rest_written(tmp_path):
    """A record Arrow cannot convert: a SinkRejection (the pipeline dead-letters it), not a failed bundle."""
    good = [row(i) for i in range(5)]
    bad_record = enriched(9).model_copy(update={"scores": {"other": "not a number"}})  # skips validation
    bad = EnrichedRow(TOPIC, 0, 9, bad_record, encode(enriched(9)))
    refused = write_bundles(tmp_path, [[*good[:3], bad, *good[3:]]])
    assert [(r.row.id, r.reason) for r in refused] == [(bad.id, "invalid_value")]
    assert "Parquet" in refused[0].error
    assert ids_in(tmp_path) == sorted(r.id for r in good)
    assert sorted(read_parquet(tmp_path).column("id").to_pylist()) == sorted(r.id for r in good)
    assert sorted(x["article"]["id"] for x in read_jsonl(tmp_path)) == sorted(r.id for r in good)
