"""File sinks: enriched records as JSON Lines and Parquet, one file per partition per bundle.

Layout::

    <dir>/dt=<YYYY-MM-DD>/part-<topic>-<partition>-<first offset>-<last offset>.jsonl
    <dir>/dt=<YYYY-MM-DD>/part-<topic>-<partition>-<first offset>-<last offset>.parquet

- ``dt`` is the article's *published* date (UTC), falling back to the date it was fetched when the
  feed gave none (or an unreadable one). It comes from the raw record, so a replay or a re-score
  with another model writes every record to the same folder again; the enriched date would move
  records on every re-score.
- One bundle writes, per Kafka partition it read, one file per ``dt`` and format, named after the
  first and last offset of the records it holds. Rows are written to hidden temporary files
  (``.part-….<pid>.tmp``), fsynced and renamed into place in ``finish_bundle``, which runs before
  the reader commits the bundle's offsets (bundle finalizer). Readers never see half a file; a
  bundle that fails leaves no file and its offsets uncommitted. Temporary files of dead processes
  (kill -9) are removed when the sink starts.

**Exactly once per article id**, across partitions and ``dt`` folders:

1. A bundle's file holds each id once (the record from the highest offset wins).
2. The same offsets produce the same file name: a bundle read again after a crash or a restart
   replaces its own file (atomic ``os.replace``) instead of adding a second one.
3. When a bundle's offset range ``[first, last]`` covers files written earlier for the same
   partition (an uncommitted attempt killed mid-run, a ``--from-beginning`` re-score read with
   other bundle boundaries, an ``--offset`` replay), those files are deleted right after the new
   ones are in place.
4. Every other copy of the bundle's ids is superseded: an article edited by its publisher comes
   again under the same id at a *later* offset (in the same partition: the id is the key), and its
   older row, in whatever file and ``dt`` folder, is removed by rewriting that file without it
   (temporary file, fsync, ``os.replace``; a file left empty is deleted). The newest copy wins: in
   the bundle's own partition a row past the bundle's range beats the bundle's row (a replay of
   older offsets does not bring an old version back); a row inside the range is the bundle's to
   replace, as in rule 3; across partitions (after a change of the partition count) the higher
   (partition, offset) wins.

Older copies are found through an index, ``<dir>/.index.sqlite`` (:class:`FileIndex`: id → file,
partition, offset), updated in the same SQLite transaction that wraps a bundle's file changes, so
a bundle reads only the files it has to rewrite. A kill -9 can leave the index behind the files;
when the sink starts it compares the index with the files (names, sizes, mtimes), reads again what
changed, trims an id left in two files from the older one, and rebuilds a missing or unreadable
index from the files. So after any replay, restart, re-score or edit, every id is in exactly one
file per format, its newest version. One pipeline (consumer group) writes a files directory at a
time (its workers may share it).

Parquet rows are the enriched record flattened: article fields as columns, ``topics`` and
``stances`` as lists of structs, ``scores`` (string → double) and ``model`` (string → string) as
maps, timestamps as ``timestamp[us, UTC]`` (null when unreadable; the JSON Lines file keeps the
original text), plus ``kafka_topic``/``kafka_partition``/``kafka_offset`` lineage. Memory per bundle
stays bounded: JSON Lines are appended in 1 MB chunks (no descriptor stays open, however many
``dt`` folders a bundle touches), Parquet goes out in row groups of 2,000 rows.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sqlite3
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics
from apache_beam.transforms.window import GlobalWindow
from apache_beam.utils.timestamp import MIN_TIMESTAMP
from apache_beam.utils.windowed_value import WindowedValue

from newsflow.broker import pid_alive
from newsflow.errors import PipelineError
from newsflow.records import ENRICHED_SCHEMA, Enriched

log = logging.getLogger(__name__)

FORMATS = ("jsonl", "parquet")
PARQUET_ROW_GROUP = 2_000
JSONL_CHUNK_BYTES = 1 << 20
_PART = re.compile(
    r"^part-(?P<topic>.+)-(?P<partition>\d+)-(?P<first>\d+)-(?P<last>\d+)\.(?P<ext>jsonl|parquet)$"
)
_TMP = re.compile(r"^\..+\.(?P<pid>\d+)\.tmp$")


class EnrichedRow(NamedTuple):
    """An enriched record on its way to the sinks: where it was read, the record, its validated JSON."""

    topic: str
    partition: int
    offset: int
    record: Enriched
    payload: bytes  # encode(record), validated against newsflow.enriched.v1

    @property
    def id(self) -> str:
        return self.record.article.id


class SinkRejection(NamedTuple):
    """An enriched record a sink refused for a reason of its own; the pipeline dead-letters it."""

    row: EnrichedRow
    reason: str
    error: str


class PartName(NamedTuple):
    topic: str
    partition: int
    first: int
    last: int
    ext: str


def part_name(topic: str, partition: int, first: int, last: int, ext: str) -> str:
    return f"part-{topic}-{partition}-{first:012d}-{last:012d}.{ext}"


def parse_part_name(name: str) -> PartName | None:
    """The (topic, partition, first, last, ext) a file name encodes, or None for other files."""
    match = _PART.match(name)
    if match is None:
        return None
    return PartName(
        match["topic"], int(match["partition"]), int(match["first"]), int(match["last"]), match["ext"]
    )


def parse_time(text: str | None) -> datetime | None:
    """An ISO-8601 time as an aware UTC datetime (naive = UTC), or None when absent or unreadable."""
    if not text:
        return None
    try:
        value = datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def partition_date(record: Enriched) -> str:
    """The ``dt=`` folder of a record: published date, else fetched date, else enriched date (UTC)."""
    for text in (record.article.published_at, record.article.fetched_at, record.enriched_at):
        value = parse_time(text)
        if value is not None:
            return value.date().isoformat()
    return datetime.now(UTC).date().isoformat()


# -- Parquet ----------------------------------------------------------------------------------------
_STRING_MAP = pa.map_(pa.string(), pa.string())
_TIME = pa.timestamp("us", tz="UTC")
PARQUET_SCHEMA = pa.schema(
    [
        ("id", pa.string()),
        ("schema", pa.string()),
        ("primary_topic", pa.string()),
        ("topics", pa.list_(pa.struct([("label", pa.string()), ("score", pa.float64())]))),
        ("scores", pa.map_(pa.string(), pa.float64())),
        (
            "stances",
            pa.list_(
                pa.struct(
                    [
                        ("claim_id", pa.string()),
                        ("claim", pa.string()),
                        ("label", pa.string()),
                        ("score", pa.float64()),
                    ]
                )
            ),
        ),
        ("headline_stance_label", pa.string()),
        ("headline_stance_score", pa.float64()),
        ("model", _STRING_MAP),
        ("run_id", pa.string()),
        ("enriched_at", _TIME),
        ("published_at", _TIME),
        ("fetched_at", _TIME),
        ("feed_url", pa.string()),
        ("source", pa.string()),
        ("url", pa.string()),
        ("canonical_url", pa.string()),
        ("guid", pa.string()),
        ("title", pa.string()),
        ("summary", pa.string()),
        ("content", pa.string()),
        ("authors", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("language", pa.string()),
        ("content_hash", pa.string()),
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
    ]
)


def parquet_row(row: EnrichedRow) -> dict[str, Any]:
    """One enriched record as a row of :data:`PARQUET_SCHEMA`."""
    record, article = row.record, row.record.article
    headline = record.headline_stance
    return {
        "id": article.id,
        "schema": ENRICHED_SCHEMA,
        "primary_topic": record.primary_topic,
        "topics": [{"label": t.label, "score": t.score} for t in record.topics],
        "scores": list(record.scores.items()),
        "stances": [
            {"claim_id": s.claim_id, "claim": s.claim, "label": s.label, "score": s.score}
            for s in record.stances
        ],
        "headline_stance_label": headline.label if headline else None,
        "headline_stance_score": headline.score if headline else None,
        "model": list(record.model.items()),
        "run_id": record.run_id,
        "enriched_at": parse_time(record.enriched_at),
        "published_at": parse_time(article.published_at),
        "fetched_at": parse_time(article.fetched_at),
        "feed_url": article.feed_url,
        "source": article.source,
        "url": article.url,
        "canonical_url": article.canonical_url,
        "guid": article.guid,
        "title": article.title,
        "summary": article.summary,
        "content": article.content,
        "authors": list(article.authors),
        "tags": list(article.tags),
        "language": article.language,
        "content_hash": article.content_hash,
        "kafka_topic": row.topic,
        "kafka_partition": row.partition,
        "kafka_offset": row.offset,
    }


# -- reading ---------------------------------------------------------------------------------------
def part_files(directory: Path | str, ext: str | None = None) -> list[Path]:
    """Every sink file under ``directory`` (``dt=*/part-*``), in (topic, partition, offset) order."""
    found = []
    for path in Path(directory).glob("dt=*/part-*"):
        name = parse_part_name(path.name)
        if name is not None and (ext is None or name.ext == ext):
            found.append((name.topic, name.partition, name.first, name.last, path.parent.name, path))
    return [item[-1] for item in sorted(found)]


def read_jsonl(directory: Path | str) -> list[dict[str, Any]]:
    """Every record in the JSON Lines files under ``directory``, in offset order per partition."""
    rows: list[dict[str, Any]] = []
    for path in part_files(directory, "jsonl"):
        with open(path, "rb") as fh:
            rows.extend(json.loads(line) for line in fh if line.strip())
    return rows


def read_parquet(directory: Path | str, columns: Sequence[str] | None = None) -> pa.Table:
    """All Parquet files under ``directory`` as one table (empty with the schema when none).

    ``columns`` reads only those (much faster when the text columns are not needed).
    """
    paths = part_files(directory, "parquet")
    wanted = list(columns) if columns is not None else None
    if not paths:
        empty = PARQUET_SCHEMA.empty_table()
        return empty.select(wanted) if wanted is not None else empty
    return pa.concat_tables([pq.read_table(p, schema=PARQUET_SCHEMA, columns=wanted) for p in paths])


# -- writing ---------------------------------------------------------------------------------------
def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _tmp_path(final: Path) -> Path:
    return final.parent / f".{final.name}.{uuid.uuid4().hex[:8]}.{os.getpid()}.tmp"


@dataclass
class _OpenFile:
    """One (dt, format) file of a partition's bundle, being written to a temporary path.

    JSON Lines are buffered and appended in chunks (no descriptor stays open, however many ``dt``
    folders a bundle touches); Parquet rows go out a row group at a time through one writer.
    """

    folder: Path
    ext: str
    tmp: Path
    lines: list[bytes] = field(default_factory=list)  # JSON Lines not yet appended
    buffered: int = 0
    writer: pq.ParquetWriter | None = None  # Parquet
    pending: list[dict[str, Any]] = field(default_factory=list)  # Parquet rows not yet in a row group
    pending_rows: list[EnrichedRow] = field(default_factory=list)  # the records of ``pending``
    keys: list[tuple[str, int]] = field(default_factory=list)  # (id, offset) of every row, in order
    refused: list[SinkRejection] = field(default_factory=list)  # rows Parquet could not hold

    def add(self, row: EnrichedRow) -> None:
        if self.ext == "jsonl":
            self.lines.append(row.payload + b"\n")
            self.buffered += len(row.payload) + 1
            if self.buffered >= JSONL_CHUNK_BYTES:
                self._append_lines()
        else:
            self.pending.append(parquet_row(row))
            self.pending_rows.append(row)
            if len(self.pending) >= PARQUET_ROW_GROUP:
                self._flush_parquet()
        self.keys.append((row.id, row.offset))

    def _append_lines(self) -> None:
        if self.lines:
            with open(self.tmp, "ab") as fh:
                fh.writelines(self.lines)
        self.lines, self.buffered = [], 0

    def _flush_parquet(self) -> None:
        if not self.pending:
            return
        try:
            table = pa.Table.from_pylist(self.pending, schema=PARQUET_SCHEMA)
        except (pa.ArrowException, TypeError, ValueError, OverflowError):
            table = self._without_refused()
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, PARQUET_SCHEMA, compression="zstd")
        self.writer.write_table(table)
        self.pending, self.pending_rows = [], []

    def _without_refused(self) -> pa.Table:
        """The pending rows Arrow accepts, one by one; the others go to ``refused``."""
        kept = []
        for values, row in zip(self.pending, self.pending_rows, strict=True):
            try:
                pa.Table.from_pylist([values], schema=PARQUET_SCHEMA)
            except (pa.ArrowException, TypeError, ValueError, OverflowError) as exc:
                self.refused.append(
                    SinkRejection(row, "invalid_value", f"Parquet: {type(exc).__name__}: {exc}")
                )
                continue
            kept.append(values)
        return pa.Table.from_pylist(kept, schema=PARQUET_SCHEMA)

    def close(self) -> None:
        if self.ext == "jsonl":
            self._append_lines()
        else:
            self._flush_parquet()
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        if self.tmp.exists():
            _fsync(self.tmp)

    def discard(self) -> None:
        try:
            if self.writer is not None:
                self.writer.close()
        except OSError:
            log.debug("closing %s failed", self.tmp, exc_info=True)
        self.writer = None
        self.lines, self.pending, self.pending_rows = [], [], []
        self.tmp.unlink(missing_ok=True)


@dataclass
class _PartitionBundle:
    """What one bundle wrote for one Kafka partition so far."""

    topic: str
    partition: int
    first: int = -1
    last: int = -1
    files: dict[tuple[str, str], _OpenFile] = field(default_factory=dict)  # (dt, ext) -> file
    latest: dict[str, int] = field(default_factory=dict)  # id -> highest offset seen
    received: int = 0
    repeated: bool = False  # some id came twice: drop the older rows before renaming


def keep_rows(path: Path, ext: str, keep: Callable[[int, str], bool]) -> int:
    """Rewrite ``path`` atomically with only the rows ``keep(index, id)`` accepts; delete it if none.

    Returns the number of rows kept.
    """
    if ext == "jsonl":
        with open(path, "rb") as fh:
            lines = [line for line in fh if line.strip()]
        kept = [line for i, line in enumerate(lines) if keep(i, json.loads(line)["article"]["id"])]
        if len(kept) < len(lines) and kept:
            tmp = _tmp_path(path)
            with open(tmp, "wb") as out:
                out.writelines(kept)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        total, left = len(lines), len(kept)
    else:
        table = pq.read_table(path, schema=PARQUET_SCHEMA)
        mask = pa.array([bool(keep(i, x)) for i, x in enumerate(table.column("id").to_pylist())])
        total, left = len(table), int(pc.sum(mask.cast(pa.int64())).as_py() or 0)
        if 0 < left < total:
            tmp = _tmp_path(path)
            pq.write_table(table.filter(mask), tmp, compression="zstd")
            _fsync(tmp)
            os.replace(tmp, path)
    if left == 0 and total:
        path.unlink()
    return left


def _newest(keys: list[tuple[str, int]], latest: dict[str, int]) -> Callable[[int, str], bool]:
    def keep(index: int, _id: str) -> bool:
        article_id, offset = keys[index]
        return latest.get(article_id) == offset

    return keep


def _without(ids: set[str]) -> Callable[[int, str], bool]:
    def keep(_index: int, article_id: str) -> bool:
        return article_id not in ids

    return keep


class PartitionFiles:
    """The sink files of one topic-partition that a new bundle may overlap (all ``dt`` folders)."""

    def __init__(self, directory: Path, topic: str, partition: int, from_offset: int) -> None:
        self.directory = directory
        self.topic = topic
        self.partition = partition
        self.ranges: dict[Path, tuple[int, int]] = {}
        for path in directory.glob(f"dt=*/part-{topic}-{partition}-*"):
            name = parse_part_name(path.name)
            if name and (name.topic, name.partition) == (topic, partition) and name.last >= from_offset:
                self.ranges[path] = (name.first, name.last)

    def supersede(self, first: int, last: int, written: set[Path]) -> list[Path]:
        """Rule 3: delete this partition's files whose range lies inside ``[first, last]``.

        Called after ``written`` (that range) were renamed into place; rows of files that only
        partly overlap are trimmed by the id index instead (:meth:`_WriteFilesFn._supersede_ids`).
        Returns the files deleted.
        """
        deleted = []
        for path, (a, b) in sorted(self.ranges.items()):
            if path not in written and first <= a and b <= last:
                path.unlink(missing_ok=True)
                del self.ranges[path]
                deleted.append(path)
        for path in written:
            self.ranges[path] = (first, last)
        # A run reads each partition forward: later bundles start after this one, so files that end
        # before it can no longer overlap (a retry of this bundle starts at the same first offset).
        self.ranges = {p: r for p, r in self.ranges.items() if r[1] >= first and p.exists()}
        return deleted


# -- the id index ----------------------------------------------------------------------------------
INDEX_NAME = ".index.sqlite"
_INDEX_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS rows (
    path TEXT NOT NULL, id TEXT NOT NULL, ext TEXT NOT NULL, partition INTEGER NOT NULL,
    offset INTEGER NOT NULL, PRIMARY KEY (path, id)
);
CREATE INDEX IF NOT EXISTS rows_by_id ON rows (id, ext);
"""


class IndexEntry(NamedTuple):
    """One row of a sink file: which file (relative to the sink directory) holds an id, from where."""

    path: str
    ext: str
    partition: int
    offset: int


def file_rows(path: Path) -> list[tuple[str, int, int]]:
    """(id, Kafka partition, Kafka offset) of every row of a sink file.

    JSON Lines hold only the record, so their offsets come from the Parquet file of the same bundle
    when there is one, else the file name's last offset (files of one partition whose ranges overlap
    never share an id, rule 3, so that still orders the copies of an id correctly).
    """
    name = parse_part_name(path.name)
    if name is None:
        return []
    if name.ext == "parquet":
        table = pq.read_table(path, columns=["id", "kafka_partition", "kafka_offset"])
        return list(
            zip(
                table.column("id").to_pylist(),
                table.column("kafka_partition").to_pylist(),
                table.column("kafka_offset").to_pylist(),
                strict=True,
            )
        )
    offsets: dict[str, int] = {}
    sibling = path.with_suffix(".parquet")
    if sibling.exists():
        try:
            offsets = {i: o for i, _p, o in file_rows(sibling)}
        except (OSError, pa.ArrowException):
            log.debug("no offsets from %s", sibling, exc_info=True)
    with open(path, "rb") as fh:
        ids = [json.loads(line)["article"]["id"] for line in fh if line.strip()]
    return [(i, name.partition, offsets.get(i, name.last)) for i in ids]


class FileIndex:
    """Which sink file holds which article id, from which Kafka partition and offset (SQLite).

    ``<dir>/.index.sqlite`` lets a bundle find older copies of its ids without reading every file.
    Each change of the files happens inside :meth:`change`, an immediate SQLite transaction that is
    also the writers' lock (workers of one pipeline write distinct partitions, but an id can move).
    The index may still lag the files after a kill -9 between a file operation and the commit, so
    :meth:`sync` (run when the sink starts) compares it with the files on disk: files added,
    changed (size, mtime) or removed since are read again, and an id left in two files of a format
    is trimmed from the older. A missing or unreadable index is rebuilt from the files.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.path = directory / INDEX_NAME
        directory.mkdir(parents=True, exist_ok=True)
        try:
            self.db = self._connect()
        except sqlite3.DatabaseError:
            log.warning("the file sink index %s is unreadable; rebuilding it from the files", self.path)
            for suffix in ("", "-wal", "-shm", "-journal"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
            self.db = self._connect()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.path, timeout=600, isolation_level=None, check_same_thread=False)
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")  # a lost commit is found again by sync()
            db.executescript(_INDEX_SCHEMA)
            db.execute("SELECT count(*) FROM files").fetchone()
        except sqlite3.DatabaseError:
            db.close()
            raise
        return db

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def change(self) -> Iterator[None]:
        """A transaction around file changes and their index rows; other writers wait for it."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def _rel(self, path: Path) -> str:
        return path.relative_to(self.directory).as_posix()

    def put(self, path: Path, rows: Iterable[tuple[str, int, int]]) -> None:
        """``path`` now holds exactly these (id, partition, offset) rows."""
        rel, ext = self._rel(path), path.suffix.lstrip(".")
        self.db.execute("DELETE FROM rows WHERE path = ?", (rel,))
        self.db.executemany(
            "INSERT OR REPLACE INTO rows (path, id, ext, partition, offset) VALUES (?, ?, ?, ?, ?)",
            [(rel, i, ext, p, o) for i, p, o in rows],
        )
        self._stat(path, rel)

    def removed(self, path: Path, ids: Iterable[str] | None = None) -> None:
        """``path`` was deleted (``ids`` None) or rewritten without ``ids`` (deleted if it is gone)."""
        rel = self._rel(path)
        if ids is None or not path.exists():
            self.db.execute("DELETE FROM rows WHERE path = ?", (rel,))
            self.db.execute("DELETE FROM files WHERE path = ?", (rel,))
            return
        self.db.executemany("DELETE FROM rows WHERE path = ? AND id = ?", [(rel, i) for i in ids])
        self._stat(path, rel)

    def _stat(self, path: Path, rel: str) -> None:
        st = path.stat()
        self.db.execute(
            "INSERT OR REPLACE INTO files (path, size, mtime_ns) VALUES (?, ?, ?)",
            (rel, st.st_size, st.st_mtime_ns),
        )

    def lookup(self, ids: Iterable[str]) -> dict[str, list[IndexEntry]]:
        """Every file row of each id."""
        found: dict[str, list[IndexEntry]] = {}
        wanted = list(ids)
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            marks = ",".join("?" * len(chunk))  # placeholders only: the ids are parameters
            query = f"SELECT id, path, ext, partition, offset FROM rows WHERE id IN ({marks})"  # noqa: S608
            for row_id, *entry in self.db.execute(query, chunk):
                found.setdefault(row_id, []).append(IndexEntry(*entry))
        return found

    def sync(self) -> int:
        """Bring the index up to date with the files (see the class docstring); returns files read."""
        with self.change():
            on_disk: dict[str, tuple[Path, int, int]] = {}
            for path in self.directory.glob("dt=*/part-*"):
                if parse_part_name(path.name) is not None:
                    st = path.stat()
                    on_disk[self._rel(path)] = (path, st.st_size, st.st_mtime_ns)
            known = {rel: (size, mtime) for rel, size, mtime in self.db.execute("SELECT * FROM files")}
            for rel in known.keys() - on_disk.keys():
                self.removed(self.directory / rel)
            stale = [path for rel, (path, *stat) in on_disk.items() if known.get(rel) != tuple(stat)]
            for path in stale:
                self.put(path, file_rows(path))
            self._resolve_duplicates()
        if stale:
            log.info("file sink index %s: read %s files changed since it was written", self.path, len(stale))
        return len(stale)

    def _resolve_duplicates(self) -> None:
        """An id in two files of one format (a crash before the older copy was trimmed): trim the older."""
        twice = self.db.execute(
            "SELECT rows.id, rows.path, rows.partition, rows.offset, files.mtime_ns FROM rows "
            "JOIN files USING (path) WHERE (rows.id, rows.ext) IN "
            "(SELECT id, ext FROM rows GROUP BY id, ext HAVING count(*) > 1)"
        ).fetchall()
        by_key: dict[tuple[str, str], list[tuple[int, int, int, str]]] = {}
        for row_id, rel, partition, offset, mtime in twice:
            by_key.setdefault((row_id, Path(rel).suffix), []).append((partition, offset, mtime, rel))
        losers: dict[str, set[str]] = {}
        for (row_id, _ext), copies in by_key.items():
            for *_, rel in sorted(copies)[:-1]:  # keep the highest (partition, offset), then the newest file
                losers.setdefault(rel, set()).add(row_id)
        for rel, ids in losers.items():
            path = self.directory / rel
            keep_rows(path, path.suffix.lstrip("."), _without(ids))
            self.removed(path, ids)
        if losers:
            log.info("file sink index: trimmed older copies of ids from %s files", len(losers))


class _WriteFilesFn(beam.DoFn):
    """Writes :class:`EnrichedRow` elements to JSON Lines and/or Parquet (see the module docstring)."""

    def __init__(self, directory: str, formats: tuple[str, ...]) -> None:
        unknown = set(formats) - set(FORMATS)
        if unknown or not formats:
            raise PipelineError(
                f"unknown file formats {sorted(unknown) or formats}; use jsonl and/or parquet"
            )
        self.directory = directory
        self.formats = tuple(formats)
        self._bundle: dict[tuple[str, int], _PartitionBundle] = {}
        self._known: dict[tuple[str, int], PartitionFiles] = {}
        self._index: FileIndex | None = None

    def setup(self) -> None:
        self.written = Metrics.counter("newsflow", "written.files")
        self.superseded = Metrics.counter("newsflow", "files.superseded")
        self._known = {}
        remove_stale_tmp(Path(self.directory))
        self._index = FileIndex(Path(self.directory))
        self._index.sync()

    def start_bundle(self) -> None:
        self._bundle = {}

    def process(self, row: EnrichedRow) -> None:
        key = (row.topic, row.partition)
        part = self._bundle.get(key)
        if part is None:
            part = self._bundle[key] = _PartitionBundle(row.topic, row.partition, row.offset, row.offset)
        part.first = min(part.first, row.offset)
        part.last = max(part.last, row.offset)
        part.received += 1
        if row.id in part.latest:
            part.repeated = True
        part.latest[row.id] = max(row.offset, part.latest.get(row.id, -1))
        day = partition_date(row.record)
        for ext in self.formats:
            open_file = part.files.get((day, ext))
            if open_file is None:
                folder = Path(self.directory) / f"dt={day}"
                folder.mkdir(parents=True, exist_ok=True)
                final = folder / part_name(row.topic, row.partition, 0, 0, ext)
                open_file = part.files[(day, ext)] = _OpenFile(folder, ext, _tmp_path(final))
            open_file.add(row)

    def finish_bundle(self) -> Iterator[WindowedValue]:
        refused: list[SinkRejection] = []
        for key, part in self._bundle.items():
            count = self._commit_partition(key, part, refused)
            self.written.inc(count)
        self._bundle = {}
        for rejection in refused:
            log.warning("file sink refused %s: %s", rejection.row.id, rejection.error)
            yield WindowedValue(rejection, MIN_TIMESTAMP, (GlobalWindow(),))

    def _commit_partition(
        self, key: tuple[str, int], part: _PartitionBundle, refused: list[SinkRejection]
    ) -> int:
        assert self._index is not None
        index = self._index
        for open_file in part.files.values():
            open_file.close()
        bad = {(r.row.id, r.row.offset): r for f in part.files.values() for r in f.refused}
        if bad:  # a row one format cannot hold is in none of them: it is dead-lettered instead
            refused.extend(bad.values())
            _drop_rows(part, set(bad))
        with index.change():  # the files and the index change together (and one writer at a time)
            copies = index.lookup(part.latest)
            stale = {  # id -> offset of the bundle's row, where a later version is in the files already
                i: part.latest[i]
                for i, entries in copies.items()
                if any(_beats(e, part, part.latest[i]) for e in entries)
            }
            for article_id in stale:
                del part.latest[article_id]
            if part.repeated or stale:  # keep each id's row from its highest offset, if it still wins
                for open_file in part.files.values():
                    if open_file.tmp.exists():
                        keep_rows(open_file.tmp, open_file.ext, _newest(open_file.keys, part.latest))
            written: set[Path] = set()
            for open_file in part.files.values():
                final = open_file.folder / part_name(
                    part.topic, part.partition, part.first, part.last, open_file.ext
                )
                if open_file.tmp.exists():
                    os.replace(open_file.tmp, final)
                    written.add(final)
                    rows = [(i, part.partition, o) for i, o in open_file.keys if part.latest.get(i) == o]
                    index.put(final, rows)
            known = self._known.get(key)
            if known is None:
                known = self._known[key] = PartitionFiles(
                    Path(self.directory), part.topic, part.partition, part.first
                )
            deleted = known.supersede(part.first, part.last, written)
            for path in deleted:
                index.removed(path)
            trimmed = self._supersede_ids(part, copies, stale, written | set(deleted))
        if deleted or trimmed:
            self.superseded.inc(len(deleted) + trimmed)
            log.info(
                "%s[%s] offsets %s..%s: replaced %s earlier files, removed older copies of ids from %s",
                part.topic,
                part.partition,
                part.first,
                part.last,
                len(deleted),
                trimmed,
            )
        return part.received

    def _supersede_ids(
        self,
        part: _PartitionBundle,
        copies: dict[str, list[IndexEntry]],
        stale: dict[str, int],
        done: set[Path],
    ) -> int:
        """Remove every copy of the bundle's ids but the winning one from the other files.

        The winner is the bundle's row, or for a ``stale`` id the latest copy that beat it (one per
        format). Returns the number of files rewritten or deleted.
        """
        assert self._index is not None
        directory = Path(self.directory)
        older: dict[Path, set[str]] = {}
        for article_id, entries in copies.items():
            keep: set[IndexEntry] = set()
            if article_id in stale:
                best: dict[str, IndexEntry] = {}
                for entry in entries:
                    if _beats(entry, part, stale[article_id]):
                        best[entry.ext] = max(entry, best.get(entry.ext, entry), key=_recency)
                keep = set(best.values())
            for entry in entries:
                path = directory / entry.path
                if entry not in keep and path not in done:
                    older.setdefault(path, set()).add(article_id)
        for path, ids in older.items():
            if path.exists():
                keep_rows(path, path.suffix.lstrip("."), _without(ids))
            self._index.removed(path, ids)
        return len(older)

    def teardown(self) -> None:
        for part in self._bundle.values():  # a failed bundle: drop its temporary files
            for open_file in part.files.values():
                open_file.discard()
        self._bundle = {}
        if self._index is not None:
            self._index.close()
            self._index = None


def _drop_rows(part: _PartitionBundle, drop: set[tuple[str, int]]) -> None:
    """Remove the rows ``drop`` ((id, offset)) from a partition bundle's files, before they are renamed."""
    for open_file in part.files.values():
        if open_file.ext == "jsonl" and open_file.tmp.exists():
            keys = open_file.keys
            keep_rows(open_file.tmp, "jsonl", lambda i, _id, keys=keys: keys[i] not in drop)  # type: ignore[misc]
        open_file.keys = [k for k in open_file.keys if k not in drop]
    latest: dict[str, int] = {}
    for open_file in part.files.values():
        for article_id, offset in open_file.keys:
            latest[article_id] = max(offset, latest.get(article_id, -1))
    part.latest = latest
    part.received -= len(drop)
    part.repeated = True  # recheck which copy of each id is kept


def _recency(entry: IndexEntry) -> tuple[int, int, str]:
    return entry.partition, entry.offset, entry.path


def _beats(entry: IndexEntry, part: _PartitionBundle, offset: int) -> bool:
    """Whether a row already in the files is a later version than the bundle's row at ``offset``.

    In the bundle's own partition that is a row past the bundle's range (a row inside the range is
    the bundle's to replace, rule 3, even where the bundle no longer holds that offset); across
    partitions (a changed partition count) the higher (partition, offset) wins.
    """
    if entry.partition == part.partition:
        return entry.offset > part.last
    return (entry.partition, entry.offset) > (part.partition, offset)


def remove_stale_tmp(directory: Path) -> list[Path]:
    """Delete temporary files left by processes that no longer run (a kill -9 mid-bundle)."""
    removed = []
    for path in directory.glob("dt=*/.*.tmp"):
        match = _TMP.match(path.name)
        if match is None or int(match["pid"]) == os.getpid() or pid_alive(int(match["pid"])):
            continue
        path.unlink(missing_ok=True)
        removed.append(path)
    if removed:
        log.info("removed %s temporary files of dead processes under %s", len(removed), directory)
    return removed


class WriteFiles(beam.PTransform):
    """Write :class:`EnrichedRow` elements under ``directory`` as JSON Lines and/or Parquet."""

    def __init__(self, directory: Path | str, formats: Iterable[str] = FORMATS) -> None:
        super().__init__()
        self.directory = str(directory)
        self.formats = tuple(formats)

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        """The output is the :class:`SinkRejection` of every record the files could not hold."""
        return pcoll | "WriteParts" >> beam.ParDo(_WriteFilesFn(self.directory, self.formats))
