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

**Exactly once per article id.** Within one Kafka partition (the key is the article id, so every
version of an article is in the same partition):

1. A bundle's file holds each id once (the record from the highest offset wins).
2. The same offsets produce the same file name: a bundle read again after a crash or a restart
   replaces its own file (atomic ``os.replace``) instead of adding a second one.
3. When a bundle's offset range ``[first, last]`` overlaps files written earlier for the same
   partition (an uncommitted attempt killed mid-run, a ``--from-beginning`` re-score read with
   other bundle boundaries, an ``--offset`` replay), those files are superseded right after the new
   ones are in place: a file whose range lies inside ``[first, last]`` is deleted; a file that only
   partly overlaps is rewritten (atomically) without the ids the new files hold.

So after any replay, restart or re-score, every id read from a partition is in exactly one file,
the one from the latest read of its offset. Two cases are outside that rule: an article edited by
its publisher, which the feed connector produces again under the same id at a *later* offset (its
versions then sit in the files of their offsets, like a log; keep the row with the highest
``kafka_offset`` in Parquet), and a change of the raw topic's partition count (ids move partition).
One pipeline (consumer group) writes a files directory at a time.

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
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, NamedTuple

import apache_beam as beam
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from apache_beam.metrics import Metrics

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
    return date.today().isoformat()


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


def read_parquet(directory: Path | str) -> pa.Table:
    """All Parquet files under ``directory`` as one table (empty with the schema when none)."""
    paths = part_files(directory, "parquet")
    if not paths:
        return PARQUET_SCHEMA.empty_table()
    return pa.concat_tables([pq.read_table(p, schema=PARQUET_SCHEMA) for p in paths])


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
    keys: list[tuple[str, int]] = field(default_factory=list)  # (id, offset) of every row, in order

    def add(self, row: EnrichedRow) -> None:
        if self.ext == "jsonl":
            self.lines.append(row.payload + b"\n")
            self.buffered += len(row.payload) + 1
            if self.buffered >= JSONL_CHUNK_BYTES:
                self._append_lines()
        else:
            self.pending.append(parquet_row(row))
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
        if self.writer is None:
            self.writer = pq.ParquetWriter(self.tmp, PARQUET_SCHEMA, compression="zstd")
        self.writer.write_table(pa.Table.from_pylist(self.pending, schema=PARQUET_SCHEMA))
        self.pending = []

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
        self.lines, self.pending = [], []
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
        return latest[article_id] == offset

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

    def supersede(self, first: int, last: int, written: set[Path], ids: set[str]) -> tuple[int, int]:
        """Apply rule 3 of the module docstring after ``written`` (range first..last) were renamed.

        Returns (files deleted, files trimmed).
        """
        deleted = trimmed = 0
        for path, (a, b) in sorted(self.ranges.items()):
            if path in written or b < first or a > last:
                continue
            ext = path.suffix.lstrip(".")
            if first <= a and b <= last:
                path.unlink(missing_ok=True)
                del self.ranges[path]
                deleted += 1
            elif path.exists():
                if keep_rows(path, ext, lambda _i, x: x not in ids) == 0:
                    del self.ranges[path]
                trimmed += 1
            else:
                del self.ranges[path]
        for path in written:
            self.ranges[path] = (first, last)
        # A run reads each partition forward: later bundles start after this one, so files that end
        # before it can no longer overlap (a retry of this bundle starts at the same first offset).
        self.ranges = {p: r for p, r in self.ranges.items() if r[1] >= first}
        return deleted, trimmed


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

    def setup(self) -> None:
        self.written = Metrics.counter("newsflow", "written.files")
        self.superseded = Metrics.counter("newsflow", "files.superseded")
        self._known = {}
        remove_stale_tmp(Path(self.directory))

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

    def finish_bundle(self) -> None:
        for key, part in self._bundle.items():
            count = self._commit_partition(key, part)
            self.written.inc(count)
        self._bundle = {}

    def _commit_partition(self, key: tuple[str, int], part: _PartitionBundle) -> int:
        for open_file in part.files.values():
            open_file.close()
        if part.repeated:  # an id came twice in this bundle: keep the row from its highest offset
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
        known = self._known.get(key)
        if known is None:
            known = self._known[key] = PartitionFiles(
                Path(self.directory), part.topic, part.partition, part.first
            )
        deleted, trimmed = known.supersede(part.first, part.last, written, set(part.latest))
        if deleted or trimmed:
            self.superseded.inc(deleted + trimmed)
            log.info(
                "%s[%s] offsets %s..%s: replaced %s earlier files, trimmed %s",
                part.topic,
                part.partition,
                part.first,
                part.last,
                deleted,
                trimmed,
            )
        return part.received

    def teardown(self) -> None:
        for part in self._bundle.values():  # a failed bundle: drop its temporary files
            for open_file in part.files.values():
                open_file.discard()
        self._bundle = {}


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
        return pcoll | "WriteParts" >> beam.ParDo(_WriteFilesFn(self.directory, self.formats))
