"""Write (or ``--check``) ``schemas/<name>.json`` from the pydantic record models.

Run ``.venv/bin/python -m schemas.generate`` after changing :mod:`newsflow.records`;
``--check`` exits 1 and names the stale files instead of writing them.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from newsflow.records import (
    ARTICLE_SCHEMA,
    DEADLETTER_SCHEMA,
    ENRICHED_SCHEMA,
    FEED_HEALTH_SCHEMA,
    Article,
    DeadLetter,
    Enriched,
    FeedHealth,
)

SCHEMA_DIR = Path(__file__).resolve().parent
DIALECT = "https://json-schema.org/draft/2020-12/schema"
BASE_ID = "https://newsflow.invalid/schemas/"

MODELS: dict[str, type[BaseModel]] = {
    ARTICLE_SCHEMA: Article,
    ENRICHED_SCHEMA: Enriched,
    DEADLETTER_SCHEMA: DeadLetter,
    FEED_HEALTH_SCHEMA: FeedHealth,
}


def document(name: str) -> dict[str, Any]:
    """The JSON Schema of one record type, as written to ``schemas/<name>.json``."""
    body = MODELS[name].model_json_schema(by_alias=True, mode="validation")
    return {"$schema": DIALECT, "$id": f"{BASE_ID}{name}.json", **body, "title": name}


def render(name: str) -> str:
    return json.dumps(document(name), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def path_for(name: str) -> Path:
    return SCHEMA_DIR / f"{name}.json"


def load(name: str) -> dict[str, Any]:
    """The committed schema file for ``name`` (e.g. ``newsflow.enriched.v2``)."""
    data: dict[str, Any] = json.loads(path_for(name).read_text(encoding="utf-8"))
    return data


def stale() -> list[Path]:
    """Schema files that differ from what the models generate now."""
    return [
        path_for(n)
        for n in MODELS
        if not path_for(n).exists() or path_for(n).read_text(encoding="utf-8") != render(n)
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--check", action="store_true", help="fail if a file is out of date")
    args = parser.parse_args(argv)
    if args.check:
        out_of_date = stale()
        for path in out_of_date:
            print(f"{path} is out of date; run: python -m schemas.generate", file=sys.stderr)
        return 1 if out_of_date else 0
    for name in MODELS:
        path_for(name).write_text(render(name), encoding="utf-8")
        print(f"wrote {path_for(name)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
