"""File sinks: enriched records as JSON Lines, written atomically per bundle.

Each bundle writes ``<dir>/dt=<YYYY-MM-DD>/part-<run_id>-<n>.jsonl`` through a hidden temporary
file that is renamed into place in ``finish_bundle``, so readers never see half a file and a bundle
that fails leaves nothing behind. Offsets are committed only after this rename (bundle finalizer).
"""

from __future__ import annotations

import os
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import apache_beam as beam
from apache_beam.metrics import Metrics

from newsflow.records import Enriched, encode


class _WriteJsonlFn(beam.DoFn):
    def __init__(self, directory: str, run_id: str) -> None:
        self.directory = directory
        self.run_id = run_id
        self._tmp: Path | None = None
        self._final: Path | None = None
        self._fh: IO[bytes] | None = None
        self._count = 0

    def setup(self) -> None:
        self.written = Metrics.counter("newsflow", "written.files")

    def start_bundle(self) -> None:
        self._fh = None
        self._count = 0

    def process(self, element: Enriched) -> None:
        if self._fh is None:
            day = datetime.now(UTC).strftime("%Y-%m-%d")
            folder = Path(self.directory) / f"dt={day}"
            folder.mkdir(parents=True, exist_ok=True)
            name = f"part-{self.run_id}-{uuid.uuid4().hex[:8]}.jsonl"
            self._final = folder / name
            self._tmp = folder / f".{name}.tmp"
            self._fh = open(self._tmp, "wb")  # noqa: SIM115 - closed in finish_bundle
        self._fh.write(encode(element) + b"\n")
        self._count += 1

    def finish_bundle(self) -> None:
        if self._fh is None:
            return
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        self._fh = None
        assert self._tmp is not None and self._final is not None
        os.replace(self._tmp, self._final)
        self.written.inc(self._count)

    def teardown(self) -> None:
        if self._fh is not None:  # a failed bundle: drop its partial file
            self._fh.close()
            if self._tmp is not None:
                self._tmp.unlink(missing_ok=True)


class WriteJsonl(beam.PTransform):
    def __init__(self, directory: Path, run_id: str) -> None:
        super().__init__()
        self.directory = str(directory)
        self.run_id = run_id

    def expand(self, pcoll: beam.PCollection) -> beam.PCollection:
        return pcoll | "WriteJsonlParts" >> beam.ParDo(_WriteJsonlFn(self.directory, self.run_id))
