"""FNC-1 (Fake News Challenge, stage 1) files: read stances and bodies, split by body, write predictions.

File formats (the official ones):

- stances: ``Headline,Body ID[,Stance]`` (the stance column is absent in unlabelled test files)
- bodies:  ``Body ID,articleBody``
- predictions (what :func:`write_predictions` writes): ``Headline,Body ID,Stance``

Files are read with the :mod:`csv` module as UTF-8; a byte-order mark is tolerated. Splits for development
must be made by body (:func:`body_disjoint_split`): every body carries many headlines, and a random split by
row would leak the body text into both parts.
"""

from __future__ import annotations

import csv
import logging
import random
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from newsflow.errors import ConfigError
from newsflow.records import STANCE_LABELS, StanceLabel

log = logging.getLogger(__name__)

_FIELD_LIMIT_SET = False


@dataclass(frozen=True)
class FncPair:
    """One headline/body pair, with its gold stance when the file has one.

    Attributes:
        headline: The headline (the claim whose stance is judged).
        body_id: The FNC-1 ``Body ID`` (kept as the string found in the file).
        body: The article body text.
        stance: The gold label, or ``None`` for unlabelled input.
    """

    headline: str
    body_id: str
    body: str
    stance: StanceLabel | None = None


def _raise_field_limit() -> None:
    global _FIELD_LIMIT_SET
    if not _FIELD_LIMIT_SET:  # article bodies can exceed the csv module's default 128 KiB field limit
        csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
        _FIELD_LIMIT_SET = True


def _read_rows(path: str | Path, required: Sequence[str]) -> list[dict[str, str]]:
    _raise_field_limit()
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"FNC-1 file {path} does not exist")
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh)
        fields = [f.strip() for f in (reader.fieldnames or [])]
        missing = [name for name in required if name not in fields]
        if missing:
            raise ConfigError(
                f"{path}: missing column(s) {', '.join(missing)}; "
                f"expected a header with {', '.join(required)}"
            )
        rows = []
        for row in reader:
            rows.append({(k or "").strip(): (v if v is not None else "") for k, v in row.items()})
        return rows


def read_bodies(path: str | Path) -> dict[str, str]:
    """Read ``Body ID,articleBody`` into a mapping of body id to text."""
    rows = _read_rows(path, ("Body ID", "articleBody"))
    return {row["Body ID"].strip(): row["articleBody"] for row in rows}


def read_stances(path: str | Path) -> list[tuple[str, str, StanceLabel | None]]:
    """Read ``Headline,Body ID[,Stance]`` rows as ``(headline, body_id, stance or None)``.

    Raises:
        ConfigError: On a missing column or an unknown stance label.
    """
    rows = _read_rows(path, ("Headline", "Body ID"))
    out: list[tuple[str, str, StanceLabel | None]] = []
    for line, row in enumerate(rows, start=2):
        raw = (row.get("Stance") or "").strip().lower()
        stance: StanceLabel | None = None
        if raw:
            if raw not in STANCE_LABELS:
                raise ConfigError(f"{path}:{line}: unknown stance {raw!r}; expected one of {STANCE_LABELS}")
            stance = raw
        out.append((row["Headline"], row["Body ID"].strip(), stance))
    return out


def load_pairs(stances_csv: str | Path, bodies_csv: str | Path) -> list[FncPair]:
    """Join a stances file with its bodies file, in the stances file's row order.

    Raises:
        ConfigError: When a stance row names a body id that the bodies file lacks.
    """
    bodies = read_bodies(bodies_csv)
    pairs = []
    for headline, body_id, stance in read_stances(stances_csv):
        if body_id not in bodies:
            raise ConfigError(f"{stances_csv}: Body ID {body_id!r} is not in {bodies_csv}")
        pairs.append(FncPair(headline=headline, body_id=body_id, body=bodies[body_id], stance=stance))
    log.info("loaded %d FNC-1 pairs over %d bodies", len(pairs), len({p.body_id for p in pairs}))
    return pairs


def body_disjoint_split(
    pairs: Sequence[FncPair], dev_fraction: float = 0.2, seed: int = 13
) -> tuple[list[FncPair], list[FncPair]]:
    """Split pairs into (train, dev) so that no body id occurs in both parts.

    The sorted body ids are shuffled with ``random.Random(seed)`` and the first
    ``round(dev_fraction * n_bodies)`` of them go to dev; pair order is preserved within each part.
    """
    if not 0.0 <= dev_fraction < 1.0:
        raise ValueError(f"dev_fraction must be in [0, 1), got {dev_fraction}")
    body_ids = sorted({p.body_id for p in pairs})
    random.Random(seed).shuffle(body_ids)
    n_dev = round(dev_fraction * len(body_ids))
    dev_ids = set(body_ids[:n_dev])
    train = [p for p in pairs if p.body_id not in dev_ids]
    dev = [p for p in pairs if p.body_id in dev_ids]
    return train, dev


def write_predictions(
    path: str | Path,
    rows: Iterable[tuple[str, str, str]] | Iterable[FncPair],
    labels: Sequence[str] | None = None,
) -> int:
    """Write ``Headline,Body ID,Stance`` rows (UTF-8, no BOM); return how many were written.

    Args:
        path: Output CSV path (parent directories are created).
        rows: ``(headline, body_id, stance)`` tuples, or :class:`FncPair` items whose headline/body id
            are written with the label from ``labels`` at the same position.
        labels: Predicted labels, one per pair, when ``rows`` are :class:`FncPair` items.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with open(path, "w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["Headline", "Body ID", "Stance"])
        items: list[tuple[str, str, str] | FncPair] = list(rows)
        if labels is not None and len(labels) != len(items):
            raise ValueError(f"{len(labels)} labels for {len(items)} rows")
        for i, item in enumerate(items):
            if isinstance(item, FncPair):
                if labels is None:
                    raise ValueError("labels are required when writing FncPair rows")
                writer.writerow([item.headline, item.body_id, labels[i]])
            else:
                writer.writerow(list(item))
            n += 1
    return n
