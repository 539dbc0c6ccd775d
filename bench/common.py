"""Shared benchmark plumbing: a real broker for the run, and printing results."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from newsflow.broker import broker_answers, throwaway_broker


@contextlib.contextmanager
def bench_broker() -> Iterator[str]:
    """The broker named by NEWSFLOW_KAFKA_BOOTSTRAP if it answers, else a throwaway local one."""
    configured = os.environ.get("NEWSFLOW_KAFKA_BOOTSTRAP")
    if configured and broker_answers(configured):
        yield configured
        return
    with (
        tempfile.TemporaryDirectory(prefix="newsflow-bench-") as tmp,
        throwaway_broker(Path(tmp), "1g") as bootstrap,
    ):
        yield bootstrap


def table(rows: Sequence[Sequence[object]], header: Sequence[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows, strict=True)]
    line = "  ".join(f"{{:<{w}}}" for w in widths)
    out = [line.format(*header), line.format(*("-" * w for w in widths))]
    out.extend(line.format(*map(str, row)) for row in rows)
    return "\n".join(out)
